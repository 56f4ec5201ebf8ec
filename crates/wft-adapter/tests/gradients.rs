//! Forward and backward of every method against finite differences and
//! against the dense reference paths, on random shapes, wavelets, layouts
//! and modes (proptest).
#![allow(clippy::unwrap_used)]

use ndarray::Array2;
use proptest::prelude::*;
use wft_adapter::dwt_core::{Mode, Wavelet, dwt_max_level};
use wft_adapter::{
    AdaptedLinear, Adapter, FourierFt, FourierFtConfig, Init, InputGrad, Layout, Lora, LoraConfig, Mt19937,
    Orientation, Strategy, WaveletFt, WaveletFtConfig,
};

fn randn(g: &mut Mt19937, shape: (usize, usize)) -> Array2<f64> {
    Array2::from_shape_simple_fn(shape, || g.next_normal())
}

fn max_abs(a: &Array2<f64>) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// `L = Σ R ⊙ y`, so `∂L/∂y = R`. Checks ∂L/∂params (central differences,
/// exact up to rounding because L is linear in the parameters) and ∂L/∂x,
/// and that merged and unmerged forwards agree.
fn check_adapter<A: Adapter<f64> + Clone>(adapter: A, seed: u64) -> Result<(), TestCaseError> {
    let (out, inp) = adapter.shape();
    let mut g = Mt19937::new(seed);
    let mut adapter = adapter;
    for p in adapter.params_mut() {
        *p = g.next_normal();
    }
    let w = randn(&mut g, (out, inp));
    let x = randn(&mut g, (5, inp));
    let r = randn(&mut g, (5, out));
    let loss = |a: &A| {
        let mut y = x.dot(&w.t());
        a.forward_delta(x.view(), y.view_mut()).unwrap();
        (&y * &r).sum()
    };
    let layer = AdaptedLinear::new(w.clone(), None, adapter.clone()).unwrap();
    let wft_adapter::Gradients {
        params: grads,
        input: dx,
    } = layer.backward(x.view(), r.view(), InputGrad::Compute).unwrap();
    let h = 1e-3;
    let scale = grads.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    prop_assert_eq!(grads.len(), adapter.num_params());
    for (k, &grad) in grads.iter().enumerate() {
        let (mut plus, mut minus) = (adapter.clone(), adapter.clone());
        plus.params_mut()[k] += h;
        minus.params_mut()[k] -= h;
        let fd = (loss(&plus) - loss(&minus)) / (2.0 * h);
        prop_assert!((fd - grad).abs() <= 1e-7 * scale, "param {k}: fd {fd} vs {grad}");
    }
    // ∂L/∂x = R·(W + ΔW).
    let want_dx = r.dot(&(&w + &adapter.delta_weight()));
    let dx = dx.unwrap();
    prop_assert!(max_abs(&(&dx - &want_dx)) <= 1e-9 * max_abs(&want_dx).max(1.0));
    // Merged forward = unmerged forward; unmerge restores W bit for bit.
    let mut layer = layer;
    let y0 = layer.forward(x.view()).unwrap();
    layer.merge_safe().unwrap();
    let y1 = layer.forward(x.view()).unwrap();
    prop_assert!(max_abs(&(&y1 - &y0)) <= 1e-9 * max_abs(&y0).max(1.0));
    layer.unmerge().unwrap();
    prop_assert!(layer.weight().iter().zip(&w).all(|(a, b)| a.to_bits() == b.to_bits()));
    Ok(())
}

fn wavelet_names() -> Vec<String> {
    // Short and long filters of every family, plus a biorthogonal one.
    [
        "haar", "db1", "db2", "db4", "sym3", "sym8", "coif1", "coif3", "bior2.2", "rbio3.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn waveletft_peft_layout(wavelet in prop::sample::select(wavelet_names()), out in 1usize..40, inp in 1usize..40,
                             frac in 0.05f64..1.0, seed: u64, identity: bool) {
        let n = ((out * inp) as f64 * frac).ceil() as usize;
        let config = WaveletFtConfig {
            wavelet: Wavelet::new(&wavelet).unwrap(), n_frequency: n, seed,
            layout: if identity { Layout::Identity } else { Layout::Peft },
            ..Default::default()
        };
        let a = WaveletFt::<f64>::new(&config, (out, inp)).unwrap();
        check_adapter(a, seed)?;
    }

    #[test]
    fn waveletft_wavedec_layout(wavelet in prop::sample::select(wavelet_names()),
                                mode in prop::sample::select(Mode::ALL.to_vec()),
                                out in 2usize..48, inp in 2usize..48, level in 1usize..4, frac in 0.05f64..0.5,
                                seed: u64, strategy in prop::sample::select(vec![Strategy::Uniform, Strategy::LowFrequencyFirst, Strategy::EnergyGuided])) {
        let w = Wavelet::new(&wavelet).unwrap();
        let max = dwt_max_level(out.min(inp), w.filter_len());
        prop_assume!(max >= 1);
        let level = level.min(max);
        let config = WaveletFtConfig {
            wavelet: w, level, mode, layout: Layout::Wavedec, seed, strategy,
            n_frequency: 1, init: Init::Zeros, scaling: 3.0,
        };
        let mut g = Mt19937::new(seed);
        let frozen = randn(&mut g, (out, inp));
        let probe = WaveletFt::<f64>::from_frozen(&config, frozen.view()).unwrap();
        let n = ((probe.geometry().num_positions() as f64 * frac).ceil() as usize).max(1);
        let a = WaveletFt::<f64>::from_frozen(&WaveletFtConfig { n_frequency: n, ..config.clone() }, frozen.view()).unwrap();
        // The atoms agree with the dense inverse transform, and the atom
        // gradient with the adjoint transform.
        let mut b = a.clone();
        for p in b.params_mut() { *p = g.next_normal(); }
        let (d1, d2) = (b.delta_weight(), b.delta_weight_by_transform().unwrap());
        prop_assert!(max_abs(&(&d1 - &d2)) <= 1e-10 * max_abs(&d2).max(1.0));
        let x = randn(&mut g, (3, inp));
        let r = randn(&mut g, (3, out));
        let atoms = b.backward(x.view(), r.view(), None).unwrap();
        let dense = b.grad_from_dense(r.t().dot(&x).view()).unwrap();
        for (p, q) in atoms.iter().zip(&dense) {
            prop_assert!((p - q).abs() <= 1e-9 * q.abs().max(1.0));
        }
        check_adapter(a, seed)?;
    }

    #[test]
    fn fourierft(out in 1usize..24, inp in 1usize..24, frac in 0.05f64..1.0, seed: u64) {
        let n = ((out * inp) as f64 * frac).ceil() as usize;
        let config = FourierFtConfig { n_frequency: n, scaling: 150.0, seed, init: Init::Zeros };
        let a = FourierFt::<f64>::new(&config, (out, inp)).unwrap();
        // ΔW against the closed form α/(out·in) Σ c cos(2π(j u/out + k v/in)).
        let mut b = a.clone();
        let mut g = Mt19937::new(seed);
        for p in b.params_mut() { *p = g.next_normal(); }
        let d = b.delta_weight();
        let want = Array2::from_shape_fn((out, inp), |(u, v)| {
            b.frequencies().iter().zip(b.params()).map(|(&(j, k), c)| {
                c * (2.0 * std::f64::consts::PI * (j as f64 * u as f64 / out as f64 + k as f64 * v as f64 / inp as f64)).cos()
            }).sum::<f64>() * 150.0 / (out * inp) as f64
        });
        prop_assert!(max_abs(&(&d - &want)) <= 1e-10 * max_abs(&want).max(1.0));
        check_adapter(a, seed)?;
    }

    #[test]
    fn lora(out in 1usize..30, inp in 1usize..30, r in 1usize..5, rs: bool, seed: u64) {
        let config = LoraConfig { r, lora_alpha: 7.0, use_rslora: rs, seed };
        let a = Lora::<f64>::new(&config, (out, inp)).unwrap();
        check_adapter(a, seed)?;
    }
}

#[test]
fn merge_safe_refuses_nan_and_leaves_the_weight() {
    let config = WaveletFtConfig {
        n_frequency: 10,
        ..Default::default()
    };
    let mut a = WaveletFt::<f32>::new(&config, (8, 8)).unwrap();
    a.params_mut()[3] = f32::NAN;
    let w = Array2::from_elem((8, 8), 1.0f32);
    let mut layer = AdaptedLinear::new(w.clone(), None, a).unwrap();
    let err = layer.merge_safe().unwrap_err();
    assert!(err.to_string().contains("NaN"), "{err}");
    assert_eq!(layer.weight(), &w);
    assert!(!layer.is_merged());
    // An unsafe merge propagates NaN only over the atom's support (db1: 2×2 at most).
    layer.merge().unwrap();
    let nans = layer.weight().iter().filter(|v| v.is_nan()).count();
    assert!((1..=4).contains(&nans), "{nans} NaNs");
}

#[test]
fn fan_in_fan_out_merge_is_the_transpose() {
    let config = WaveletFtConfig {
        wavelet: Wavelet::new("db3").unwrap(),
        n_frequency: 30,
        ..Default::default()
    };
    let mut a = WaveletFt::<f64>::new(&config, (13, 21)).unwrap();
    let mut g = Mt19937::new(1);
    for p in a.params_mut() {
        *p = g.next_normal();
    }
    let mut wt = Array2::<f64>::zeros((21, 13));
    a.merge_into(wt.view_mut(), 1.0, Orientation::Transposed).unwrap();
    assert!(max_abs(&(&wt.t() - &a.delta_weight())) < 1e-12);
    // The wrong orientation is a typed error, not a panic.
    assert!(
        a.merge_into(Array2::<f64>::zeros((13, 13)).view_mut(), 1.0, Orientation::Transposed)
            .is_err()
    );
}

/// Batches spanning several row blocks (and a ragged last block), through
/// the thread pool, with row-major and column-major outputs, against the
/// dense ΔW and the adjoint transform.
#[test]
fn large_batches_match_the_dense_path() {
    for (layout, level, mode) in [
        (Layout::Peft, 1, Mode::Zero),
        (Layout::Wavedec, 2, Mode::Periodization),
        (Layout::Wavedec, 2, Mode::Symmetric),
    ] {
        let config = WaveletFtConfig {
            wavelet: Wavelet::new("db3").unwrap(),
            level,
            mode,
            layout,
            n_frequency: 200,
            scaling: 2.0,
            ..Default::default()
        };
        let mut a = WaveletFt::<f64>::new(&config, (300, 200)).unwrap();
        let mut g = Mt19937::new(mode.name().len() as u64);
        for p in a.params_mut() {
            *p = g.next_normal();
        }
        let x = randn(&mut g, (203, 200));
        let r = randn(&mut g, (203, 300));
        let d = a.delta_weight();
        let want_y = x.dot(&d.t());
        let mut y = Array2::zeros((203, 300));
        a.forward_delta(x.view(), y.view_mut()).unwrap();
        assert!(max_abs(&(&y - &want_y)) < 1e-10, "{layout:?}");
        // Column-major output and a transposed (non-contiguous) input.
        let xt = x.t().to_owned();
        let mut yf = Array2::<f64>::zeros((300, 203));
        a.forward_delta(xt.t(), yf.view_mut().reversed_axes()).unwrap();
        assert!(max_abs(&(&yf.t() - &want_y)) < 1e-10, "{layout:?}");
        let mut dx = Array2::zeros((203, 200));
        let grads = a.backward(x.view(), r.view(), Some(dx.view_mut())).unwrap();
        let dense = a.grad_from_dense(r.t().dot(&x).view()).unwrap();
        for (p, q) in grads.iter().zip(&dense) {
            assert!((p - q).abs() < 1e-9 * q.abs().max(1.0), "{layout:?}: {p} vs {q}");
        }
        assert!(max_abs(&(&dx - &r.dot(&d))) < 1e-10);
    }
}
