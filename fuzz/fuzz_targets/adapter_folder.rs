//! `cargo +nightly fuzz run adapter_folder`: see crates/wft-adapter/tests/fuzz/harness.rs.
#![no_main]

#[path = "../../crates/wft-adapter/tests/fuzz/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::adapter_folder(data));
