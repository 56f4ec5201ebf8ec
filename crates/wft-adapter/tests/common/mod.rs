//! Shared by the integration tests: the PEFT reference cases and the
//! comparison they all use.
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
    "waveft_layers_to_transform",
];

/// max |a − b| / max |b|.
pub fn rel_err<'a>(a: impl IntoIterator<Item = &'a f32>, b: impl IntoIterator<Item = &'a f32> + Clone) -> f32 {
    let scale = b
        .clone()
        .into_iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    a.into_iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}
