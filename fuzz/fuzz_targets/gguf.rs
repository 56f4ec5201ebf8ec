//! `cargo +nightly fuzz run gguf`: see crates/wft-candle/tests/fuzz/harness.rs.
#![no_main]

#[path = "../../crates/wft-candle/tests/fuzz/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gguf(data));
