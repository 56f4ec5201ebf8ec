//! Adapters on 2-D convolutions: [`AdaptedConv2d`] against a direct
//! convolution of `W + ΔW` (nested loops, no patch matrix) and against
//! central differences, for every method, over random kernels, strides,
//! paddings and channel counts (proptest); then the model level: plans,
//! folders (native and PEFT's LoRA layout), merges and the errors for
//! adapters that do not fit. PEFT's own LoRA-on-`Conv2d` files are checked
//! in `peft_reference.rs` (case `lora_conv2d`).
#![allow(clippy::unwrap_used)]

use ndarray::{Array1, Array4, Ix4};
use proptest::prelude::*;
use wft_adapter::dwt_core::Wavelet;
use wft_adapter::{
    AdaptedConv2d, Adapter, AdapterConfig, AdapterModel, Conv2dGeometry, Error, FourierFt, FourierFtConfig, Init,
    InputGrad, Lora, LoraConfig, MethodConfig, ModuleSpec, Mt19937, PeftType, RawTensor, TensorFile, WaveletFt,
    WaveletFtConfig, WeightLayout, write_atomic,
};

fn randn4(g: &mut Mt19937, shape: (usize, usize, usize, usize)) -> Array4<f64> {
    Array4::from_shape_simple_fn(shape, || g.next_normal())
}

fn max_abs(a: &Array4<f64>) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The textbook convolution (cross-correlation, as torch's `conv2d`), one
/// output value at a time.
fn direct_conv(x: &Array4<f64>, w: &Array4<f64>, b: &Array1<f64>, g: Conv2dGeometry) -> Array4<f64> {
    let ((n, c, h, wd), (o, _, kh, kw)) = (x.dim(), w.dim());
    let ([sh, sw], [ph, pw]) = (g.stride, g.padding);
    let (oh, ow) = ((h + 2 * ph - kh) / sh + 1, (wd + 2 * pw - kw) / sw + 1);
    Array4::from_shape_fn((n, o, oh, ow), |(bi, oc, y, xo)| {
        let mut s = b[oc];
        for ic in 0..c {
            for u in 0..kh {
                for v in 0..kw {
                    let (iy, ix) = (
                        (y * sh + u) as isize - ph as isize,
                        (xo * sw + v) as isize - pw as isize,
                    );
                    if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < wd {
                        s += w[[oc, ic, u, v]] * x[[bi, ic, iy as usize, ix as usize]];
                    }
                }
            }
        }
        s
    })
}

/// ΔW as the weight's `[out, in, kh, kw]`.
fn delta4<A: Adapter<f64>>(a: &A, shape: (usize, usize, usize, usize)) -> Array4<f64> {
    a.delta_weight().into_shape_with_order(shape).unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    out: usize,
    inp: usize,
    kernel: [usize; 2],
    geometry: Conv2dGeometry,
    image: (usize, usize),
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..5,
        1usize..4,
        1usize..4,
        1usize..4,
        1usize..3,
        1usize..3,
        0usize..2,
        0usize..2,
        0usize..3,
        0usize..3,
    )
        .prop_map(|(out, inp, kh, kw, sh, sw, ph, pw, eh, ew)| Case {
            out,
            inp,
            kernel: [kh, kw],
            geometry: Conv2dGeometry {
                stride: [sh, sw],
                padding: [ph, pw],
            },
            image: (kh + eh + 1, kw + ew + 2),
        })
}

/// `L = Σ R ⊙ y`: ∂L/∂params and ∂L/∂x against central differences (exact
/// up to rounding: L is linear in both), the forward against
/// [`direct_conv`] of `W + ΔW`, and merge/unmerge.
fn check<A: Adapter<f64> + Clone>(case: &Case, adapter: A, seed: u64) -> Result<(), TestCaseError> {
    let mut g = Mt19937::new(seed);
    let mut adapter = adapter;
    for p in adapter.params_mut() {
        *p = g.next_normal();
    }
    let [kh, kw] = case.kernel;
    let wshape = (case.out, case.inp, kh, kw);
    let w = randn4(&mut g, wshape);
    let b = Array1::from_shape_simple_fn(case.out, || g.next_normal());
    let x = randn4(&mut g, (2, case.inp, case.image.0, case.image.1));
    let layer = AdaptedConv2d::new(w.clone(), Some(b.clone()), adapter.clone(), case.geometry).unwrap();
    let y = layer.forward(x.view()).unwrap();
    let want = direct_conv(&x, &(&w + &delta4(&adapter, wshape)), &b, case.geometry);
    prop_assert_eq!(y.shape(), want.shape());
    prop_assert!(max_abs(&(&y - &want)) <= 1e-10 * max_abs(&want).max(1.0));

    let r = randn4(&mut g, y.dim());
    let loss = |a: &A, x: &Array4<f64>| {
        let l = AdaptedConv2d::new(w.clone(), Some(b.clone()), a.clone(), case.geometry).unwrap();
        (&l.forward(x.view()).unwrap() * &r).sum()
    };
    let grads = layer.backward(x.view(), r.view(), InputGrad::Compute).unwrap();
    let h = 1e-3;
    let scale = grads.params.iter().fold(1.0f64, |m, v| m.max(v.abs()));
    prop_assert_eq!(grads.params.len(), adapter.num_params());
    for (k, &grad) in grads.params.iter().enumerate() {
        let (mut plus, mut minus) = (adapter.clone(), adapter.clone());
        plus.params_mut()[k] += h;
        minus.params_mut()[k] -= h;
        let fd = (loss(&plus, &x) - loss(&minus, &x)) / (2.0 * h);
        prop_assert!((fd - grad).abs() <= 1e-7 * scale, "param {}: fd {} vs {}", k, fd, grad);
    }
    let dx = grads.input.unwrap();
    prop_assert_eq!(dx.shape(), x.shape());
    let scale = max_abs(&dx).max(1.0);
    for (i, &grad) in dx.indexed_iter() {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus[i] += h;
        minus[i] -= h;
        let fd = (loss(&adapter, &plus) - loss(&adapter, &minus)) / (2.0 * h);
        prop_assert!((fd - grad).abs() <= 1e-7 * scale, "x{:?}: fd {} vs {}", i, fd, grad);
    }

    let mut layer = layer;
    layer.merge_safe().unwrap();
    prop_assert!(max_abs(&(&layer.forward(x.view()).unwrap() - &y)) <= 1e-10 * max_abs(&y).max(1.0));
    layer.unmerge().unwrap();
    prop_assert!(max_abs(&(&layer.weight() - &w)) <= 1e-12 * max_abs(&w).max(1.0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn waveletft_convolutions(case in cases(), wavelet in prop::sample::select(vec!["db1", "db2", "sym3"]), seed in 0u64..1000) {
        let [kh, kw] = case.kernel;
        let shape = (case.out, case.inp * kh * kw);
        // PEFT's layout: any shape, however small (a `wavedec` level
        // needs each side at least the filter's length).
        let config = WaveletFtConfig {
            wavelet: Wavelet::new(wavelet).unwrap(),
            n_frequency: (shape.0 * shape.1).min(7),
            scaling: 2.0,
            seed,
            ..WaveletFtConfig::default()
        };
        check(&case, WaveletFt::<f64>::new(&config, shape).unwrap(), seed)?;
    }

    #[test]
    fn fourierft_convolutions(case in cases(), seed in 0u64..1000) {
        let [kh, kw] = case.kernel;
        let shape = (case.out, case.inp * kh * kw);
        let config = FourierFtConfig { n_frequency: (shape.0 * shape.1).min(6), scaling: 3.0, seed, init: Init::Zeros };
        check(&case, FourierFt::<f64>::new(&config, shape).unwrap(), seed)?;
    }

    #[test]
    fn lora_convolutions(case in cases(), r in 1usize..4, seed in 0u64..1000) {
        let [kh, kw] = case.kernel;
        let config = LoraConfig { r, lora_alpha: 2.0, use_rslora: false, seed };
        check(&case, Lora::<f64>::new(&config, (case.out, case.inp * kh * kw)).unwrap(), seed)?;
    }
}

#[test]
fn convolution_inputs_that_do_not_fit_are_refused() {
    let adapter = Lora::<f64>::new(&LoraConfig::default(), (4, 27)).unwrap();
    let w = Array4::zeros((4, 3, 3, 3));
    let layer = AdaptedConv2d::new(w.clone(), None, adapter.clone(), Conv2dGeometry::default()).unwrap();
    // Two channels for a three-channel kernel; an image smaller than the kernel.
    assert!(matches!(
        layer.forward(Array4::zeros((1, 2, 5, 5)).view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        layer.forward(Array4::zeros((1, 3, 2, 5)).view()),
        Err(Error::Shape { .. })
    ));
    let zero_stride = Conv2dGeometry {
        stride: [0, 1],
        padding: [0, 0],
    };
    assert!(matches!(
        AdaptedConv2d::new(w.clone(), None, adapter, zero_stride),
        Err(Error::Invalid { .. })
    ));
    let other = Lora::<f64>::new(&LoraConfig::default(), (4, 12)).unwrap();
    assert!(matches!(
        AdaptedConv2d::new(w, None, other, Conv2dGeometry::default()),
        Err(Error::Shape { .. })
    ));
}

/// A base with a 3×3 convolution, a 1×3 one and a linear layer.
fn base(dir: &std::path::Path) -> TensorFile {
    let mut g = Mt19937::new(5);
    let shapes: [(&str, Vec<usize>); 3] = [
        ("enc.conv.weight", vec![6, 3, 3, 3]),
        ("enc.pw.weight", vec![4, 6, 1, 3]),
        ("enc.q.weight", vec![8, 12]),
    ];
    let tensors: Vec<(String, RawTensor<'static>)> = shapes
        .iter()
        .map(|(k, s)| {
            let v: Vec<f32> = (0..s.iter().product()).map(|_| g.next_normal() as f32).collect();
            (k.to_string(), RawTensor::from_f32(s, &v))
        })
        .collect();
    let path = dir.join("base.safetensors");
    write_atomic(&path, tensors.iter().map(|(k, t)| (k.clone(), t)), None).unwrap();
    TensorFile::open(path).unwrap()
}

fn methods() -> Vec<MethodConfig> {
    let init = Init::Normal { std: 0.1 };
    vec![
        // PEFT-compatible WaveFT settings: saved natively all the same,
        // since PEFT's WaveFT has no convolutions.
        MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 20,
            init,
            ..WaveletFtConfig::default()
        }),
        MethodConfig::FourierFt(FourierFtConfig {
            n_frequency: 20,
            scaling: 10.0,
            seed: 3,
            init,
        }),
        MethodConfig::Lora(LoraConfig {
            r: 2,
            ..LoraConfig::default()
        }),
    ]
}

fn targets() -> ModuleSpec {
    ModuleSpec::Names(vec!["conv".into(), "pw".into(), "q".into()])
}

#[test]
fn folders_and_merges_keep_convolutions() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    for method in methods() {
        let mut model = AdapterModel::new_for_base(AdapterConfig::new(method, targets()), &base, 1).unwrap();
        let mut g = Mt19937::new(9);
        for m in model.modules_mut().values_mut() {
            for p in m.as_adapter_mut().params_mut() {
                *p = 0.1 * g.next_normal() as f32;
            }
        }
        let name = model.config().method.method().to_string();
        assert_eq!(
            model.layout("enc.conv"),
            WeightLayout::Conv2d { kernel: [3, 3] },
            "{name}"
        );
        assert_eq!(
            model.layout("enc.pw"),
            WeightLayout::Conv2d { kernel: [1, 3] },
            "{name}"
        );
        assert_eq!(model.layout("enc.q"), WeightLayout::Linear, "{name}");
        assert_eq!(model.modules()["enc.conv"].as_adapter().shape(), (6, 27), "{name}");

        let folder = dir.path().join(&name);
        model.save(&folder).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(folder.join(wft_adapter::CONFIG_FILE)).unwrap()).unwrap();
        let weights = TensorFile::open(folder.join(wft_adapter::WEIGHTS_FILE)).unwrap();
        match model.config().method {
            MethodConfig::Lora(_) => {
                // PEFT's layout: no extra config keys, 4-D factors.
                assert!(json.get("kernels").is_none());
                let a = weights
                    .info("base_model.model.enc.conv.lora_A.weight")
                    .unwrap()
                    .1
                    .to_vec();
                let b = weights
                    .info("base_model.model.enc.pw.lora_B.weight")
                    .unwrap()
                    .1
                    .to_vec();
                assert_eq!((a, b), (vec![2, 3, 3, 3], vec![4, 2, 1, 1]));
            }
            _ => {
                assert_eq!(json["kernels"]["enc.conv"], serde_json::json!([3, 3]), "{name}");
                assert_eq!(json["kernels"]["enc.pw"], serde_json::json!([1, 3]), "{name}");
                assert!(json["kernels"].get("enc.q").is_none());
            }
        }
        if let MethodConfig::WaveletFt(_) = model.config().method {
            assert_eq!(
                json["peft_type"],
                PeftType::WaveletFt.name(),
                "native, locations stored"
            );
        }
        // Reloaded (with the base, and without it where the format allows).
        let again = AdapterModel::load(&folder, Some(&base)).unwrap();
        let without = AdapterModel::load(&folder, None);
        for m in ["enc.conv", "enc.pw", "enc.q"] {
            assert_eq!(again.layout(m), model.layout(m), "{name} {m}");
            assert_eq!(
                again.modules()[m].as_adapter().params(),
                model.modules()[m].as_adapter().params()
            );
            if let Ok(without) = &without {
                assert_eq!(without.layout(m), model.layout(m), "{name} {m} without a base");
            }
        }
        assert_eq!(
            without.is_ok(),
            !matches!(model.config().method, MethodConfig::FourierFt(_))
        );

        // The merged checkpoint: W + ΔW in the weight's own 4-D shape.
        let out = dir.path().join(format!("{name}-merged.safetensors"));
        model.merge(&base, &out, &mut |_, _| {}).unwrap();
        let merged = TensorFile::open(&out).unwrap();
        for (m, key) in [("enc.conv", "enc.conv.weight"), ("enc.pw", "enc.pw.weight")] {
            let w = base.f32(key, "").unwrap().into_dimensionality::<Ix4>().unwrap();
            let got = merged.f32(key, "").unwrap().into_dimensionality::<Ix4>().unwrap();
            let d = model.delta(m).unwrap().into_shape_with_order(w.dim()).unwrap();
            let e = (&got - &(&w + &d)).iter().fold(0f32, |a, v| a.max(v.abs()));
            assert!(e <= 1e-6, "{name} {m}: {e}");
        }
    }
}

#[test]
fn adapters_that_do_not_fit_a_convolution_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    // Another base whose `enc.conv` is a linear layer of the same matrix
    // shape (6 × 27): a convolution's adapter must not land on it.
    let flat = dir.path().join("flat.safetensors");
    let v = vec![0f32; 6 * 27];
    write_atomic(
        &flat,
        [("enc.conv.weight".to_string(), &RawTensor::from_f32(&[6, 27], &v))],
        None,
    )
    .unwrap();
    let flat = TensorFile::open(flat).unwrap();
    let only_conv = ModuleSpec::Names(vec!["conv".into()]);
    for method in methods() {
        let model = AdapterModel::new_for_base(AdapterConfig::new(method, only_conv.clone()), &base, 1).unwrap();
        let folder = dir.path().join(model.config().method.method().to_string());
        model.save(&folder).unwrap();
        let e = AdapterModel::load(&folder, Some(&flat)).unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        let e = model
            .merge(&flat, &dir.path().join("never.safetensors"), &mut |_, _| {})
            .unwrap_err();
        assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
        assert!(!dir.path().join("never.safetensors").exists());
    }
}

#[test]
fn inconsistent_convolution_folders_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = base(dir.path());
    let only_conv = ModuleSpec::Names(vec!["conv".into()]);
    let lora = MethodConfig::Lora(LoraConfig::default());
    let model = AdapterModel::new_for_base(AdapterConfig::new(lora, only_conv.clone()), &base, 1).unwrap();
    let folder = dir.path().join("lora");
    model.save(&folder).unwrap();
    // A convolution's LoRA A beside a linear B.
    let weights = folder.join(wft_adapter::WEIGHTS_FILE);
    let file = TensorFile::open(&weights).unwrap();
    let a = file.f32("base_model.model.enc.conv.lora_A.weight", "").unwrap();
    let a: Vec<f32> = a.iter().copied().collect();
    write_atomic(
        &weights,
        [
            (
                "base_model.model.enc.conv.lora_A.weight".to_string(),
                &RawTensor::from_f32(&[8, 3, 3, 3], &a),
            ),
            (
                "base_model.model.enc.conv.lora_B.weight".to_string(),
                &RawTensor::from_f32(&[6, 8], &[0.0; 48]),
            ),
        ],
        None,
    )
    .unwrap();
    let e = AdapterModel::load(&folder, None).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");

    // A native folder whose kernel does not divide the recorded shape.
    let wavelet = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 5,
        ..WaveletFtConfig::default()
    });
    let model = AdapterModel::new_for_base(AdapterConfig::new(wavelet, only_conv), &base, 1).unwrap();
    let folder = dir.path().join("native");
    model.save(&folder).unwrap();
    let cfg = folder.join(wft_adapter::CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["kernels"]["enc.conv"] = serde_json::json!([5, 5]);
    std::fs::write(&cfg, json.to_string()).unwrap();
    let e = AdapterModel::load(&folder, None).unwrap_err();
    assert!(matches!(e, Error::Json { .. }), "{e}");
}
