//! Fuzz target for the pres-rules document behind the management plane's XCAP PUT: what is accepted writes back, reads back and compiles the same (`presence_fuzz_checks::pres_rules`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| presence_fuzz_checks::pres_rules(data));
