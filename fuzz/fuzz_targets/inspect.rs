//! `cargo +nightly fuzz run inspect`: see crates/wft-adapter/tests/fuzz/harness.rs.
#![no_main]

#[path = "../../crates/wft-adapter/tests/fuzz/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::inspect(data));
