//! The adapted layers against an independent reference: `wft-adapter`'s
//! dense ΔW (itself checked against PEFT) in f64 ndarray arithmetic.
//!
//! For every method the loss `L = Σ r ⊙ y` is linear in each single
//! parameter (WaveletFT and FourierFT are linear in `c`; LoRA is bilinear,
//! so linear in any one coordinate), so `L(p + e_k) − L(p)` is exactly
//! `∂L/∂p_k`: the reference gradient has no finite-difference error.

use candle_core::{Device, Module, Tensor, Var};
use candle_nn::{Optimizer, SGD};
use proptest::prelude::*;
use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::ndarray::{Array2, Axis};
use wft_adapter::{
    FourierFt, FourierFtConfig, Init, Layout, Lora, LoraConfig, ModuleAdapter, Mt19937, Strategy, WaveletFt,
    WaveletFtConfig,
};
use wft_candle::{AdaptedLinear, Error};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn values(g: &mut Mt19937, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (scale * g.next_normal()) as f32).collect()
}

/// Method 0: PEFT WaveFT db1; 1: db2 level 2 wavedec low-frequency; 2:
/// FourierFT; 3: LoRA r=2. Parameters random (non-zero).
fn adapter(kind: usize, out: usize, inp: usize, g: &mut Mt19937) -> R<ModuleAdapter> {
    let n = (out * inp / 3).max(1);
    let mut a: ModuleAdapter = match kind {
        0 | 1 => {
            let peft = WaveletFtConfig {
                n_frequency: n,
                scaling: 3.0,
                ..Default::default()
            };
            let wavedec = WaveletFtConfig {
                wavelet: Wavelet::new("db2")?,
                // dwt-core refuses levels too deep for the size (db2 needs 6 samples
                // per level-1 axis, 12 for level 2).
                level: if out.min(inp) >= 12 { 2 } else { 1 },
                mode: Mode::Symmetric,
                layout: Layout::Wavedec,
                strategy: Strategy::LowFrequencyFirst,
                n_frequency: n,
                scaling: 2.0,
                ..Default::default()
            };
            WaveletFt::new(if kind == 0 { &peft } else { &wavedec }, (out, inp))?.into()
        }
        2 => {
            let c = FourierFtConfig {
                n_frequency: n,
                scaling: 1.5,
                seed: 3,
                init: Init::Zeros,
            };
            FourierFt::new(&c, (out, inp))?.into()
        }
        _ => {
            let c = LoraConfig {
                r: 2,
                lora_alpha: 4.0,
                use_rslora: false,
                seed: 5,
            };
            Lora::new(&c, (out, inp))?.into()
        }
    };
    let k = a.as_adapter().num_params();
    a.as_adapter_mut().params_mut().copy_from_slice(&values(g, k, 0.3));
    Ok(a)
}

fn to_f64(v: &[f32], r: usize, c: usize) -> R<Array2<f64>> {
    Ok(Array2::from_shape_vec(
        (r, c),
        v.iter().map(|&x| f64::from(x)).collect(),
    )?)
}

/// `y = x·(W + ΔW)ᵀ + b` in f64 from the dense ΔW.
fn reference(a: &ModuleAdapter, w: &Array2<f64>, b: &[f64], x: &Array2<f64>) -> Array2<f64> {
    let d = a.as_adapter().delta_weight().mapv(f64::from);
    let mut y = x.dot(&(w + &d).t());
    for mut row in y.axis_iter_mut(Axis(0)) {
        row.iter_mut().zip(b).for_each(|(v, bb)| *v += bb);
    }
    y
}

fn max_rel(got: &[f32], want: impl IntoIterator<Item = f64>) -> f64 {
    let want: Vec<f64> = want.into_iter().collect();
    let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
    got.iter()
        .zip(&want)
        .fold(0.0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()))
        / scale
}

/// Forward, ∂L/∂x and ∂L/∂params of one adapted layer against the reference.
fn check_layer(kind: usize, out: usize, inp: usize, batch: (usize, usize), seed: u64) -> R {
    let mut g = Mt19937::new(seed);
    let a = adapter(kind, out, inp, &mut g)?;
    let (wv, bv) = (values(&mut g, out * inp, 0.5), values(&mut g, out, 0.1));
    let rows = batch.0 * batch.1;
    let (xv, rv) = (values(&mut g, rows * inp, 1.0), values(&mut g, rows * out, 1.0));
    let dev = Device::Cpu;
    let layer = AdaptedLinear::adapted(
        Tensor::from_vec(wv.clone(), (out, inp), &dev)?,
        Some(Tensor::from_vec(bv.clone(), out, &dev)?),
        a.clone(),
    )?;
    let x = Var::from_vec(xv.clone(), (batch.0, batch.1, inp), &dev)?;
    let r = Tensor::from_vec(rv.clone(), (batch.0, batch.1, out), &dev)?;
    let y = layer.forward(x.as_tensor())?;
    assert_eq!(y.dims(), &[batch.0, batch.1, out]);
    let grads = (&y * &r)?.sum_all()?.backward()?;

    let (w, xr, rr) = (to_f64(&wv, out, inp)?, to_f64(&xv, rows, inp)?, to_f64(&rv, rows, out)?);
    let b: Vec<f64> = bv.iter().map(|&v| f64::from(v)).collect();
    let yref = reference(&a, &w, &b, &xr);
    let tol = 2e-5;
    let e = max_rel(&y.flatten_all()?.to_vec1::<f32>()?, yref.iter().copied());
    assert!(e < tol, "kind {kind}: forward error {e}");

    // ∂L/∂x = r·(W + ΔW).
    let d = a.as_adapter().delta_weight().mapv(f64::from);
    let gx = rr.dot(&(&w + &d));
    let got = grads
        .get(x.as_tensor())
        .ok_or("no gradient for x")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let e = max_rel(&got, gx.iter().copied());
    assert!(e < tol, "kind {kind}: dx error {e}");

    // ∂L/∂p_k = L(p + e_k) − L(p), exactly (L is linear in each p_k).
    let loss = |a: &ModuleAdapter| (reference(a, &w, &b, &xr) * &rr).sum();
    let l0 = loss(&a);
    let want: Vec<f64> = (0..a.as_adapter().num_params())
        .map(|k| {
            let mut a1 = a.clone();
            a1.as_adapter_mut().params_mut()[k] += 1.0;
            loss(&a1) - l0
        })
        .collect();
    let vars = layer.vars();
    let got = grads
        .get(vars[0].as_tensor())
        .ok_or("no gradient for the parameters")?
        .to_vec1::<f32>()?;
    let e = max_rel(&got, want);
    assert!(e < 1e-4, "kind {kind}: parameter gradient error {e}");
    Ok(())
}

#[test]
fn every_method_matches_the_dense_reference() -> R {
    for kind in 0..4 {
        check_layer(kind, 12, 10, (2, 3), 1)?;
        check_layer(kind, 7, 16, (1, 5), 2)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn random_shapes_match_the_dense_reference(kind in 0usize..4, out in 6usize..24, inp in 6usize..24, b0 in 1usize..4, b1 in 1usize..5, seed in 0u64..1000) {
        check_layer(kind, out, inp, (b0, b1), seed).map_err(|e| TestCaseError::fail(e.to_string()))?;
    }
}

/// After an optimizer step the layer computes with the new parameters
/// (the merged weight is rebuilt), and `adapter()` reports them.
#[test]
fn optimizer_steps_reach_the_merged_weight() -> R {
    let mut g = Mt19937::new(9);
    let (out, inp) = (10, 8);
    let a = adapter(0, out, inp, &mut g)?;
    let wv = values(&mut g, out * inp, 0.5);
    let layer = AdaptedLinear::adapted(Tensor::from_vec(wv.clone(), (out, inp), &Device::Cpu)?, None, a)?;
    let x = Tensor::from_vec(values(&mut g, 4 * inp, 1.0), (4, inp), &Device::Cpu)?;
    let mut sgd = SGD::new(layer.vars(), 0.1)?;
    for _ in 0..3 {
        sgd.backward_step(&layer.forward(&x)?.sqr()?.sum_all()?)?;
    }
    let now = layer.adapter()?.ok_or("adapted")?;
    let p = layer.vars()[0].as_tensor().to_vec1::<f32>()?;
    assert_eq!(now.as_adapter().params(), p.as_slice());
    let w = to_f64(&wv, out, inp)?;
    let xr = to_f64(&x.flatten_all()?.to_vec1::<f32>()?, 4, inp)?;
    let e = max_rel(
        &layer.forward(&x)?.flatten_all()?.to_vec1::<f32>()?,
        reference(&now, &w, &[0.0; 10], &xr).iter().copied(),
    );
    assert!(e < 2e-5, "{e}");
    Ok(())
}

/// A frozen layer passes the input gradient and computes nothing for its
/// weight; without a tracked input it adds no graph node at all.
#[test]
fn frozen_layers_give_input_gradients_only() -> R {
    let mut g = Mt19937::new(4);
    let (out, inp) = (6, 5);
    let wv = values(&mut g, out * inp, 1.0);
    let w = Tensor::from_vec(wv.clone(), (out, inp), &Device::Cpu)?;
    let layer = AdaptedLinear::frozen(w.clone(), None)?;
    let x = Var::from_vec(values(&mut g, 3 * inp, 1.0), (3, inp), &Device::Cpu)?;
    let grads = layer.forward(x.as_tensor())?.sum_all()?.backward()?;
    let gx = grads.get(x.as_tensor()).ok_or("no input gradient")?.to_vec2::<f32>()?;
    for row in gx {
        for (j, v) in row.iter().enumerate() {
            let want: f32 = (0..out).map(|i| wv[i * inp + j]).sum();
            assert!((v - want).abs() < 1e-5);
        }
    }
    assert!(grads.get(&w).is_none());
    let plain = Tensor::from_vec(values(&mut g, 3 * inp, 1.0), (3, inp), &Device::Cpu)?;
    assert!(!layer.forward(&plain)?.track_op());
    Ok(())
}

#[test]
fn mismatched_shapes_are_typed_errors() -> R {
    let mut g = Mt19937::new(1);
    let a = adapter(0, 8, 8, &mut g)?;
    let w = Tensor::zeros((8, 6), candle_core::DType::F32, &Device::Cpu)?;
    assert!(matches!(
        AdaptedLinear::adapted(w.clone(), None, a),
        Err(Error::Shape { .. })
    ));
    let b = Tensor::zeros(5, candle_core::DType::F32, &Device::Cpu)?;
    assert!(matches!(
        AdaptedLinear::frozen(w.clone(), Some(b)),
        Err(Error::Shape { .. })
    ));
    let layer = AdaptedLinear::frozen(w, None)?;
    let x = Tensor::zeros((2, 7), candle_core::DType::F32, &Device::Cpu)?;
    assert!(layer.forward(&x).is_err());
    Ok(())
}
