//! Shared by the integration tests: the PEFT reference cases, and the
//! comparison they all use (wft-test-support's).
#![allow(dead_code)]

/// Cases with base and merged weights.
pub const CASES: &[&str] = &[
    "waveft_db1_square",
    "waveft_db2_nonsquare",
    "waveft_sym3_odd",
    "waveft_coif1_odd",
    "waveft_db3_odd",
    "waveft_conv1d",
    "waveft_no_idwt",
    "waveft_proportional",
    "waveft_pattern_regex",
    "fourierft",
    "lora",
    "rslora",
    "lora_layers_patterns",
    "lora_conv2d",
    "waveft_layers_to_transform",
];

pub use wft_test_support::rel_err;
