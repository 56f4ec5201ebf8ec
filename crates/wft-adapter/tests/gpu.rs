//! The `gpu` feature: merges, ΔW and gradients on the device agree with the
//! CPU path (and so with PEFT) within 1e-5, on whichever adapter the
//! environment selects. Without an adapter the tests fail when `CI=true`
//! and say loudly that they were skipped otherwise.
#![cfg(feature = "gpu")]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

use common::{CASES, rel_err};
use ndarray::Array2;
use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::dwt_gpu::Context;
use wft_adapter::{
    Adapter, AdapterModel, FourierFt, FourierFtConfig, GpuAdapter, Init, Layout, Lora, LoraConfig, Orientation,
    TensorFile, WaveletFt, WaveletFtConfig,
};

fn device(test: &str) -> Option<&'static Context> {
    static CTX: OnceLock<Result<Context, String>> = OnceLock::new();
    match CTX.get_or_init(|| Context::new().map_err(|e| e.to_string())) {
        Ok(c) => Some(c),
        Err(e) => {
            wft_test_support::skip_or_fail(test, format!("no GPU adapter ({e})"));
            None
        }
    }
}

const TOL: f32 = 1e-5;

#[test]
fn gpu_merge_files_equal_cpu_and_peft() {
    let Some(ctx) = device("gpu_merge_files_equal_cpu_and_peft") else {
        return;
    };
    let refs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs");
    let mut worst = (0f32, 0f32);
    for case in CASES {
        let dir = refs.join(case);
        let base = TensorFile::open(dir.join("base.safetensors")).unwrap();
        let model = AdapterModel::load(dir.join("adapter"), Some(&base)).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let (cpu_path, gpu_path) = (tmp.path().join("cpu.safetensors"), tmp.path().join("gpu.safetensors"));
        model.merge(&base, &cpu_path, &mut |_, _| {}).unwrap();
        let report = model.merge_gpu(&base, &gpu_path, ctx, &mut |_, _| {}).unwrap();
        assert_eq!(report.merged.len(), model.modules().len(), "{case}");
        let (cpu, gpu) = (
            TensorFile::open(&cpu_path).unwrap(),
            TensorFile::open(&gpu_path).unwrap(),
        );
        let peft = TensorFile::open(dir.join("merged.safetensors")).unwrap();
        assert_eq!(cpu.names(), gpu.names());
        for name in cpu.names() {
            let (c, g, p) = (
                cpu.f32(&name, "").unwrap(),
                gpu.f32(&name, "").unwrap(),
                peft.f32(&name, "").unwrap(),
            );
            assert_eq!(c.shape(), g.shape());
            // Compare the update, not the weight it sits on.
            let dg: Vec<f32> = g
                .iter()
                .zip(base.f32(&name, "").unwrap().iter())
                .map(|(a, b)| a - b)
                .collect();
            let dc: Vec<f32> = c
                .iter()
                .zip(base.f32(&name, "").unwrap().iter())
                .map(|(a, b)| a - b)
                .collect();
            let e = if dc.iter().any(|&v| v != 0.0) {
                rel_err(&dg, &dc)
            } else {
                rel_err(g.iter(), c.iter())
            };
            assert!(e <= TOL, "{case} {name}: GPU vs CPU update rel err {e:e}");
            let ep = rel_err(g.iter(), p.iter());
            assert!(ep <= TOL, "{case} {name}: GPU vs PEFT rel err {ep:e}");
            worst = (worst.0.max(e), worst.1.max(ep));
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "GPU merge, worst rel err: vs CPU update {:e}, vs PEFT weights {:e}",
        worst.0,
        worst.1
    );
}

fn random(seed: u64, shape: (usize, usize)) -> Array2<f32> {
    let mut g = wft_test_support::XorShift::new(seed | 1);
    Array2::from_shape_simple_fn(shape, || g.next_signed())
}

/// ΔW, in-place merge and ∂L/∂params of one adapter, GPU against CPU.
fn check_adapter<A: Adapter<f32> + wft_adapter::Separable>(ctx: &Context, a: &A, what: &str) {
    let (out, inp) = a.shape();
    let gpu = GpuAdapter::new(ctx, a).unwrap();
    let cpu_d = a.delta_weight();
    let e = rel_err(gpu.delta_weight().unwrap().iter(), cpu_d.iter());
    assert!(e <= TOL, "{what}: ΔW rel err {e:e}");
    for orient in [Orientation::Normal, Orientation::Transposed] {
        let w0 = random(7, orient.stored_shape((out, inp)));
        let (mut wc, mut wg) = (w0.clone(), w0.clone());
        a.merge_into(wc.view_mut(), 1.0, orient).unwrap();
        gpu.merge_into(wg.view_mut(), 1.0, orient).unwrap();
        let (dc, dg) = (&wc - &w0, &wg - &w0);
        let e = rel_err(dg.iter(), dc.iter());
        assert!(e <= 2.0 * TOL, "{what} ({orient:?}): merge rel err {e:e}");
    }
    if a.method() != wft_adapter::Method::Lora {
        let (x, g) = (random(8, (13, inp)), random(9, (13, out)));
        let cpu = a.backward(x.view(), g.view(), None).unwrap();
        let got = gpu.grad_params(x.view(), g.view()).unwrap();
        let e = rel_err(got.iter(), cpu.iter());
        assert!(e <= TOL, "{what}: ∂L/∂params rel err {e:e}");
    }
}

#[test]
fn gpu_adapters_match_cpu_adapters() {
    let Some(ctx) = device("gpu_adapters_match_cpu_adapters") else {
        return;
    };
    // (what, wavelet, level, mode, layout, n, shape)
    let configs = [
        ("PEFT db2", "db2", 1, Mode::Zero, Layout::Peft, 300, (70, 50)),
        ("PEFT sym3 odd", "sym3", 1, Mode::Zero, Layout::Peft, 200, (37, 61)),
        (
            "wavedec sym4 L2 periodization",
            "sym4",
            2,
            Mode::Periodization,
            Layout::Wavedec,
            150,
            (64, 96),
        ),
        (
            "wavedec db3 L3 symmetric",
            "db3",
            3,
            Mode::Symmetric,
            Layout::Wavedec,
            100,
            (90, 81),
        ),
        ("identity", "db1", 1, Mode::Zero, Layout::Identity, 80, (20, 30)),
    ]
    .map(|(what, wavelet, level, mode, layout, n_frequency, shape)| {
        let config = WaveletFtConfig {
            wavelet: Wavelet::new(wavelet).unwrap(),
            level,
            mode,
            layout,
            n_frequency,
            ..Default::default()
        };
        (what, config, shape)
    });
    for (what, config, shape) in configs {
        let mut a = WaveletFt::<f32>::new(&config, shape).unwrap();
        let v = random(1, (1, a.num_params()));
        a.params_mut().copy_from_slice(v.as_slice().unwrap());
        check_adapter(ctx, &a, what);
        // New parameters reach the device.
        let mut gpu = GpuAdapter::new(ctx, &a).unwrap();
        a.params_mut().iter_mut().for_each(|c| *c *= -2.0);
        gpu.set_params(a.params()).unwrap();
        let e = rel_err(gpu.delta_weight().unwrap().iter(), a.delta_weight().iter());
        assert!(e <= TOL, "{what}: ΔW after set_params rel err {e:e}");
    }
    let fcfg = FourierFtConfig {
        n_frequency: 120,
        scaling: 150.0,
        init: Init::Normal { std: 1.0 },
        ..Default::default()
    };
    let f = FourierFt::<f32>::new(&fcfg, (48, 40)).unwrap();
    check_adapter(ctx, &f, "FourierFT");
    let lcfg = LoraConfig {
        r: 4,
        lora_alpha: 8.0,
        ..Default::default()
    };
    let l = Lora::<f32>::from_factors(&lcfg, random(4, (4, 33)), random(5, (29, 4))).unwrap();
    check_adapter(ctx, &l, "LoRA");
}
