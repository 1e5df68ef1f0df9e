//! Fuzz target for the PIDF reader and the composer: whatever the reader accepts composes into a document it accepts again (`presence_fuzz_checks::pidf_compose`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_fuzz_checks::pidf_compose(data));
