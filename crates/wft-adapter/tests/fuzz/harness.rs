//! The fuzz harnesses: one function per `cargo fuzz` target (fuzz/), shared
//! with `tests/fuzz_regressions.rs`, which replays the committed corpus and
//! every crash reproducer on each `cargo test`. Each must return normally
//! for every input: a panic or an abort is a bug.
//!
//! Inputs are split into parts by little-endian `u32` length prefixes (see
//! [`split`]), so that one byte string can carry a config, a weights file
//! and a base checkpoint.
#![allow(dead_code)]

use std::path::PathBuf;

use wft_adapter::{AdapterModel, Summary, TensorFile};

/// Split `data` into `N` parts: `N - 1` length-prefixed parts, then the
/// rest. Lengths past the end are clamped.
pub fn split<const N: usize>(mut data: &[u8]) -> [&[u8]; N] {
    let mut parts = [&[][..]; N];
    for part in parts.iter_mut().take(N - 1) {
        let len = data
            .get(..4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
        data = data.get(4..).unwrap_or_default();
        let len = len.min(data.len());
        *part = &data[..len];
        data = &data[len..];
    }
    parts[N - 1] = data;
    parts
}

/// Join parts the way [`split`] reads them (for writing seeds).
pub fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

/// Exercise a loaded adapter without allocating more than a small dense ΔW.
fn exercise(model: &AdapterModel) {
    let _ = model.num_params();
    for (name, module) in model.modules() {
        let (out, inp) = module.as_adapter().shape();
        if out.saturating_mul(inp) <= 1 << 20 {
            let _ = model.delta(name);
        }
    }
}

/// An adapter folder with its base: `config | weights | base`. PEFT
/// (WAVEFT, FOURIERFT, LORA) and native configs alike.
pub fn adapter_folder(data: &[u8]) {
    let [config, weights, base] = split::<3>(data);
    let base = TensorFile::from_bytes(PathBuf::from("base.safetensors"), base.to_vec()).ok();
    if let Ok(model) = AdapterModel::from_bytes(config, weights.to_vec(), base.as_ref()) {
        exercise(&model);
    }
}

/// What `wft inspect` reads of a folder, with or without its base:
/// `config | weights | base` (the adapter_folder seeds fit).
pub fn inspect(data: &[u8]) {
    let [config, weights, base] = split::<3>(data);
    let base = TensorFile::from_bytes(PathBuf::from("base.safetensors"), base.to_vec()).ok();
    if let Ok(s) = Summary::from_bytes(config, weights.to_vec(), base.as_ref()) {
        let _ = (s.total_params(), s.equivalent_lora_rank());
    }
    let _ = Summary::from_bytes(config, weights.to_vec(), None);
}

/// A native WAVELETFT folder, loaded without a base (its config carries
/// shapes and its weights carry locations): `config | weights`.
pub fn native_folder(data: &[u8]) {
    let [config, weights] = split::<2>(data);
    if let Ok(model) = AdapterModel::from_bytes(config, weights.to_vec(), None) {
        exercise(&model);
    }
}

/// What `wft merge` reads of a base: a checkpoint's bytes (header and
/// offsets) or a sharded checkpoint's index and shard, then a merge of a
/// fixed adapter into it when it loads: `mode | index | shard`, where
/// `mode` is one byte (even: the shard alone as a file; odd: index + shard
/// named `model-00001-of-00001.safetensors` in a folder).
pub fn merge_header(data: &[u8]) {
    let [mode, index, shard] = split::<3>(data);
    let Ok(dir) = tempfile::tempdir() else { return };
    let base = if mode.first().is_some_and(|m| m % 2 == 1) {
        let shard_path = dir.path().join("model-00001-of-00001.safetensors");
        if std::fs::write(&shard_path, shard).is_err()
            || std::fs::write(dir.path().join(wft_adapter::INDEX_FILE), index).is_err()
        {
            return;
        }
        TensorFile::open(dir.path())
    } else {
        TensorFile::from_bytes(PathBuf::from("base.safetensors"), shard.to_vec())
    };
    let Ok(base) = base else { return };
    let _ = (base.names(), base.size(), base.largest_tensor_bytes(), base.metadata());
    for name in base.names() {
        let _ = base.f32(&name, "");
        let _ = base.i64(&name, "");
    }
    // A LoRA adapter for any 2-D weight called `w` (LoRA needs no base to
    // load, so it reaches the merge whatever the header says).
    let Some((_, &[out, inp])) = base.info("w.weight") else {
        return;
    };
    if out.saturating_mul(inp) > 1 << 20 {
        return;
    }
    let config = br#"{"peft_type":"LORA","r":1,"lora_alpha":1,"target_modules":["w"]}"#;
    let header = format!(
        r#"{{"base_model.model.w.lora_A.weight":{{"dtype":"F32","shape":[1,{inp}],"data_offsets":[0,{a}]}},"base_model.model.w.lora_B.weight":{{"dtype":"F32","shape":[{out},1],"data_offsets":[{a},{b}]}}}}"#,
        a = 4 * inp,
        b = 4 * (inp + out)
    );
    let mut weights = (header.len() as u64).to_le_bytes().to_vec();
    weights.extend_from_slice(header.as_bytes());
    weights.extend(std::iter::repeat_n(0x3c, 4 * (inp + out)));
    if let Ok(model) = AdapterModel::from_bytes(config, weights, Some(&base)) {
        let _ = model.merge(&base, &dir.path().join("merged"), &mut |_, _| {});
    }
}
