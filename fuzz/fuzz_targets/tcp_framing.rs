//! Fuzz target for SIP over TCP framing: a stream framed in chunks gives the same frames as framed whole, each within the limit (`presence_fuzz_checks::tcp_framing`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_fuzz_checks::tcp_framing(data));
