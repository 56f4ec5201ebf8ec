//! Against real Hugging Face PEFT 0.21.2: folders written by
//! `scripts/make_peft_references.py` (PEFT's own `save_pretrained`,
//! `merge_and_unload` and module outputs). Merged weights and outputs must
//! agree within 1e-5 relative; locations must be identical.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayD, Ix1, Ix2, Ix4};
use wft_adapter::{
    AdaptedConv2d, Adapter, AdapterModel, CONFIG_FILE, Conv2dGeometry, ModuleAdapter, RawTensor, TensorFile,
    randperm_prefix, write_atomic,
};

mod common;

use common::{CASES, rel_err};

const TOL: f32 = 1e-5;

fn refs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs")
}

fn f32_2d(f: &TensorFile, k: &str) -> Array2<f32> {
    f.f32(k, "test").unwrap().into_dimensionality::<Ix2>().unwrap()
}

/// Tensors whose names start with a module path and end in `suffix`.
fn io_modules(io: &TensorFile, suffix: &str) -> Vec<String> {
    io.names()
        .iter()
        .filter_map(|k| k.strip_suffix(suffix).map(str::to_string))
        .collect()
}

#[test]
fn merged_weights_equal_peft_merge_and_unload() {
    let mut worst = 0f32;
    for case in CASES {
        let dir = refs().join(case);
        let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("merged.safetensors");
        let mut calls = 0;
        let report = model.merge(&base, &path, &mut |_, _| calls += 1).unwrap();
        assert_eq!(calls, base.names().len());
        assert_eq!(report.merged.len(), model.modules().len(), "{case}");
        let ours = TensorFile::open(&path).unwrap();
        let peft = TensorFile::open(dir.join("merged.safetensors")).unwrap();
        assert_eq!(ours.names(), peft.names(), "{case}");
        let merged: Vec<&String> = report.merged.iter().map(|(k, _)| k).collect();
        for name in peft.names() {
            let (a, b) = (ours.f32(&name, "").unwrap(), peft.f32(&name, "").unwrap());
            assert_eq!(a.shape(), b.shape());
            if merged.contains(&&name) {
                let e = rel_err(&a, &b);
                worst = worst.max(e);
                assert!(e <= TOL, "{case} {name}: relative error {e}");
            } else {
                // Untouched tensors are copied bit for bit.
                assert_eq!(
                    ours.raw(&name, "").unwrap().data,
                    base.raw(&name, "").unwrap().data,
                    "{case} {name}"
                );
            }
        }
        assert_eq!(ours.metadata(), base.metadata());
    }
    eprintln!(
        "merged weights: worst relative error {worst:.2e} over {} cases",
        CASES.len()
    );
}

#[test]
fn unmerged_outputs_equal_peft_forward() {
    let mut worst = 0f32;
    for case in CASES {
        let dir = refs().join(case);
        let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
        let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
        let orient = model.config().orientation;
        let paths = io_modules(&io, ".y");
        assert_eq!(paths.len(), model.modules().len(), "{case}");
        for m in paths {
            if base.info(&format!("{m}.weight")).unwrap().1.len() == 4 {
                let e = conv_output_error(&base, &io, &m, model.modules()[&m].clone());
                worst = worst.max(e);
                assert!(e <= TOL, "{case} {m}: relative error {e}");
                continue;
            }
            let x = f32_2d(&io, &format!("{m}.x"));
            let want = f32_2d(&io, &format!("{m}.y"));
            let w = f32_2d(&base, &format!("{m}.weight"));
            let w = orient.orient(w);
            let b: Array1<f32> = base
                .f32(&format!("{m}.bias"), "")
                .unwrap()
                .into_dimensionality::<Ix1>()
                .unwrap();
            let mut y = x.dot(&w.t()) + &b;
            model.modules()[&m]
                .as_adapter()
                .forward_delta(x.view(), y.view_mut())
                .unwrap();
            let e = rel_err(&y, &want);
            worst = worst.max(e);
            assert!(e <= TOL, "{case} {m}: relative error {e}");
        }
    }
    eprintln!("outputs: worst relative error {worst:.2e} over {} cases", CASES.len());
}

/// The relative error of our adapted convolution's output against PEFT's
/// module output (the script's convolutions have stride 2, padding 1).
fn conv_output_error(base: &TensorFile, io: &TensorFile, m: &str, mut adapter: ModuleAdapter) -> f32 {
    let w = base
        .f32(&format!("{m}.weight"), "")
        .unwrap()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let b = base
        .f32(&format!("{m}.bias"), "")
        .unwrap()
        .into_dimensionality::<Ix1>()
        .unwrap();
    let x = io
        .f32(&format!("{m}.x"), "")
        .unwrap()
        .into_dimensionality::<Ix4>()
        .unwrap();
    let want = io.f32(&format!("{m}.y"), "").unwrap();
    let geometry = Conv2dGeometry {
        stride: [2, 2],
        padding: [1, 1],
    };
    let conv = AdaptedConv2d::new(w, Some(b), adapter.as_adapter_mut(), geometry).unwrap();
    let y = conv.forward(x.view()).unwrap();
    assert_eq!(y.shape(), want.shape());
    rel_err(&y, &want)
}

/// PEFT's locations (saved by the script from the live PEFT layers) equal
/// our MT19937 `randperm` prefix.
#[test]
fn locations_equal_torch_randperm() {
    let mut checked = 0;
    for case in CASES.iter().chain(&["waveft_1024x768_n5000"]) {
        let dir = refs().join(case);
        let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("adapter").join(CONFIG_FILE)).unwrap()).unwrap();
        let seed = cfg["random_loc_seed"].as_u64().unwrap_or(777);
        for m in io_modules(&io, ".locations") {
            let want: ArrayD<i64> = io.i64(&format!("{m}.locations"), "").unwrap();
            let x = io.f32(&format!("{m}.x"), "").unwrap();
            let y = io.f32(&format!("{m}.y"), "").unwrap();
            let total = (x.shape()[1] * y.shape()[1]) as u64;
            let got = randperm_prefix(total, want.len(), seed);
            let want: Vec<u64> = want.iter().map(|&v| v as u64).collect();
            assert_eq!(got, want, "{case} {m}");
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} location sets checked");
}

/// The 1024×768, n = 5000 layer: ΔW at every nonzero position PEFT produced
/// and 2048 random ones.
#[test]
fn large_layer_delta_matches_peft() {
    let dir = refs().join("waveft_1024x768_n5000");
    let io = TensorFile::open(dir.join("io.safetensors")).unwrap();
    // A base with the right shape (the values do not matter for ΔW).
    let tmp = tempfile::tempdir().unwrap();
    let base_path = tmp.path().join("base.safetensors");
    let w = RawTensor::from_f32(&[1024, 768], &vec![0.0; 1024 * 768]);
    write_atomic(&base_path, [("layers.0.q.weight".to_string(), &w)], None).unwrap();
    let base = TensorFile::open(&base_path).unwrap();
    let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
    let d = model.delta("layers.0.q").unwrap();
    let rows = io.i64("layers.0.q.delta_rows", "").unwrap();
    let cols = io.i64("layers.0.q.delta_cols", "").unwrap();
    let vals = io.f32("layers.0.q.delta_vals", "").unwrap();
    assert!(vals.len() > 10_000);
    let ours: Vec<f32> = rows
        .iter()
        .zip(&cols)
        .map(|(&r, &c)| d[[r as usize, c as usize]])
        .collect();
    let e = rel_err(&ours, vals.iter());
    eprintln!("1024×768 n=5000: relative error {e:.2e} at {} positions", vals.len());
    assert!(e <= TOL, "relative error {e}");
    // Nothing outside PEFT's nonzeros: our ΔW has no more nonzeros than PEFT's.
    let nonzero_peft = vals.iter().filter(|v| **v != 0.0).count();
    let nonzero_ours = d.iter().filter(|v| **v != 0.0).count();
    assert!(nonzero_ours <= nonzero_peft + 16, "{nonzero_ours} vs {nonzero_peft}");
}

/// Atoms and the dense dwt-core transform agree on every reference layer.
#[test]
fn atom_delta_equals_transform_delta() {
    for case in CASES.iter().filter(|c| c.starts_with("waveft")) {
        let dir = refs().join(case);
        let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
        for (m, a) in model.modules() {
            let ModuleAdapter::WaveletFt(w) = a else {
                panic!("{case}: not WaveletFT")
            };
            let (x, y) = (w.delta_weight(), w.delta_weight_by_transform().unwrap());
            let e = rel_err(&x, &y);
            assert!(e <= 1e-6, "{case} {m}: {e}");
        }
    }
}

/// What we write, we read back identically, and the config file keeps every
/// field PEFT wrote with the same value.
#[test]
fn save_round_trips_peft_folders() {
    for case in CASES {
        let dir = refs().join(case);
        let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
        let out = tempfile::tempdir().unwrap();
        model.save(out.path()).unwrap();
        let again = AdapterModel::load(out.path(), Some(&base)).unwrap();
        for (m, a) in model.modules() {
            assert_eq!(
                a.as_adapter().params(),
                again.modules()[m].as_adapter().params(),
                "{case} {m}"
            );
        }
        let read = |p: &Path| -> BTreeMap<String, serde_json::Value> {
            serde_json::from_str(&std::fs::read_to_string(p.join(CONFIG_FILE)).unwrap()).unwrap()
        };
        let (orig, ours) = (read(&dir.join("adapter")), read(out.path()));
        for (k, v) in &orig {
            assert_eq!(ours.get(k), Some(v), "{case}: field {k}");
        }
        let st = TensorFile::open(out.path().join(wft_adapter::WEIGHTS_FILE)).unwrap();
        let peft = TensorFile::open(dir.join("adapter").join(wft_adapter::WEIGHTS_FILE)).unwrap();
        assert_eq!(st.names(), peft.names());
        for k in peft.names() {
            assert_eq!(st.info(&k).unwrap().1, peft.info(&k).unwrap().1, "{case} {k}: shape");
        }
        assert_eq!(st.metadata(), peft.metadata());
    }
}

/// F16, BF16 and F64 checkpoints: merged in f32 (f64 for F64), stored back
/// in their own dtype, within that dtype's rounding of PEFT's f32 merge.
#[test]
fn half_precision_checkpoints_keep_their_dtype() {
    use wft_adapter::Dtype;
    let dir = refs().join("waveft_db2_nonsquare");
    let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
    let peft = TensorFile::open(dir.join("merged.safetensors")).unwrap();
    // Two roundings to the narrow type: the cast base and the merged result.
    for (dtype, tol) in [
        (Dtype::F16, 2.0 * 4.9e-4),
        (Dtype::BF16, 2.0 * 3.9e-3),
        (Dtype::F64, 1e-6),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let cast = tmp.path().join("base.safetensors");
        let tensors: Vec<(String, RawTensor<'static>)> = base
            .names()
            .into_iter()
            .map(|n| {
                let v = base.f32(&n, "").unwrap();
                let t = RawTensor::from_f32_as(dtype, v.shape(), v.as_slice().unwrap()).unwrap();
                (n, t)
            })
            .collect();
        write_atomic(&cast, tensors.iter().map(|(k, t)| (k.clone(), t)), None).unwrap();
        let cast = TensorFile::open(&cast).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&cast)).unwrap();
        let out = tmp.path().join("merged.safetensors");
        model.merge(&cast, &out, &mut |_, _| {}).unwrap();
        let ours = TensorFile::open(&out).unwrap();
        for name in ours.names() {
            assert_eq!(ours.info(&name).unwrap().0, dtype, "{name} keeps its dtype");
            let e = rel_err(&ours.f32(&name, "").unwrap(), &peft.f32(&name, "").unwrap());
            assert!(e <= tol, "{dtype:?} {name}: {e}");
        }
    }
}
