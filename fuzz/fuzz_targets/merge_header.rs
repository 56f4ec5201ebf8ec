//! `cargo +nightly fuzz run merge_header`: see crates/wft-adapter/tests/fuzz/harness.rs.
#![no_main]

#[path = "../../crates/wft-adapter/tests/fuzz/harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::merge_header(data));
