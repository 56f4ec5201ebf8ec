//! Write fresh adapters for PEFT to load: for every reference case, new
//! adapters built from that case's config on its base model (target
//! matching, `n_frequency_pattern` and proportional allocation are ours),
//! seeded random parameters, saved as a PEFT folder, plus our own outputs.
//! `scripts/check_peft_loads_ours.py` then loads each folder with real PEFT
//! and compares PEFT's outputs with ours.
//!
//! `cargo run --release -p xtask-harness --features adapter --bin peft_roundtrip -- OUT_DIR`
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use ndarray::{Array1, Array2, Array4, Ix1, Ix2};
use wft_adapter::{
    AdaptedConv2d, AdapterConfig, AdapterModel, CONFIG_FILE, Conv2dGeometry, ModuleAdapter, Mt19937, RawTensor,
    TensorFile, write_atomic,
};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let out: PathBuf = std::env::args().nth(1).ok_or("usage: peft_roundtrip OUT_DIR")?.into();
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crates/wft-adapter/tests/peft_refs");
    let mut cases: Vec<_> = std::fs::read_dir(&refs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    cases.sort();
    for case in cases {
        if !case.join("base.safetensors").exists() {
            continue;
        }
        let name = case
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let base = TensorFile::open(case.join("base.safetensors"))?;
        let cfg_path = case.join("adapter").join(CONFIG_FILE);
        let (config, _) = AdapterConfig::from_json(&std::fs::read_to_string(&cfg_path)?, &cfg_path)?;
        let orient = config.orientation;
        let mut model = AdapterModel::new_for_base(config, &base, 11)?;
        let mut g = Mt19937::new(99);
        for m in model.modules_mut().values_mut() {
            for p in m.as_adapter_mut().params_mut() {
                *p = (0.2 * g.next_normal()) as f32;
            }
        }
        let dir = out.join(&name);
        model.save(dir.join("adapter"))?;
        // Our outputs for the same inputs PEFT's reference used.
        let io = TensorFile::open(case.join("io.safetensors"))?;
        let mut tensors = Vec::new();
        for (m, a) in model.modules() {
            if base.info(&format!("{m}.weight")).is_some_and(|(_, s)| s.len() == 4) {
                tensors.extend(conv_io(&base, &io, m, a.clone())?);
                continue;
            }
            let x: Array2<f32> = io.f32(&format!("{m}.x"), "input")?.into_dimensionality::<Ix2>()?;
            let w: Array2<f32> = base
                .f32(&format!("{m}.weight"), "weight")?
                .into_dimensionality::<Ix2>()?;
            let w = orient.orient(w);
            let b: Array1<f32> = base.f32(&format!("{m}.bias"), "bias")?.into_dimensionality::<Ix1>()?;
            let mut y = x.dot(&w.t()) + &b;
            a.as_adapter().forward_delta(x.view(), y.view_mut())?;
            let (rows, cols) = y.dim();
            tensors.push((
                format!("{m}.x"),
                RawTensor::from_f32(&[x.nrows(), x.ncols()], &x.iter().copied().collect::<Vec<_>>()),
            ));
            tensors.push((
                format!("{m}.y"),
                RawTensor::from_f32(&[rows, cols], &y.iter().copied().collect::<Vec<_>>()),
            ));
        }
        write_atomic(
            &dir.join("ours_io.safetensors"),
            tensors.iter().map(|(k, t)| (k.clone(), t)),
            None,
        )?;
        std::fs::copy(case.join("base.safetensors"), dir.join("base.safetensors"))?;
        println!(
            "{name}: {} modules, {} parameters",
            model.modules().len(),
            model.num_params()
        );
    }
    Ok(())
}

/// `<m>.x` and our `<m>.y` for a convolution (the reference scripts'
/// convolutions have stride 2, padding 1).
fn conv_io(
    base: &TensorFile,
    io: &TensorFile,
    m: &str,
    mut adapter: ModuleAdapter,
) -> Result<Vec<(String, RawTensor<'static>)>, Box<dyn std::error::Error>> {
    let w: Array4<f32> = base.f32(&format!("{m}.weight"), "weight")?.into_dimensionality()?;
    let b: Array1<f32> = base.f32(&format!("{m}.bias"), "bias")?.into_dimensionality()?;
    let x: Array4<f32> = io.f32(&format!("{m}.x"), "input")?.into_dimensionality()?;
    let geometry = Conv2dGeometry {
        stride: [2, 2],
        padding: [1, 1],
    };
    let y = AdaptedConv2d::new(w, Some(b), adapter.as_adapter_mut(), geometry)?.forward(x.view())?;
    let flat = |a: &[usize], v: Vec<f32>| RawTensor::from_f32(a, &v);
    Ok(vec![
        (format!("{m}.x"), flat(x.shape(), x.iter().copied().collect())),
        (format!("{m}.y"), flat(y.shape(), y.iter().copied().collect())),
    ])
}

fn main() -> ExitCode {
    wft_test_support::exit(run())
}
