//! Fuzz target for the SIP parser: `Message::parse`, `parse_for_reply` and its sanitized fallback, every typed accessor, URIs and AOR hashes (`presence_fuzz_checks::sip_parser`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_fuzz_checks::sip_parser(data));
