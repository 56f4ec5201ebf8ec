//! Adapter arithmetic on real folders: the linear combination's ΔW is the
//! weighted sum of the inputs' ΔWs (read back from the saved folder), over
//! shared locations (PEFT's format kept) and over the union of supports
//! (the native format); TIES and DARE keep each module's support; and the
//! adapters that cannot be combined are typed errors.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wft_adapter::ndarray::Array2;
use wft_adapter::{
    AdapterConfig, AdapterModel, CONFIG_FILE, CombineMethod, Error, FourierFtConfig, LoraConfig, MethodConfig,
    ModuleAdapter, ModuleSpec, Mt19937, TensorFile, WaveletFtConfig, Weighted,
};

mod common;

fn base() -> TensorFile {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/waveft_pattern_regex/base.safetensors");
    TensorFile::open(p).unwrap()
}

/// An adapter of `method` on q and v, its parameters seeded normal values.
fn adapter(base: &TensorFile, method: MethodConfig, values_seed: u64) -> AdapterModel {
    let config = AdapterConfig::new(method, ModuleSpec::Names(vec!["q".into(), "v".into()]));
    let mut model = AdapterModel::new_for_base(config, base, values_seed).unwrap();
    let mut g = Mt19937::new(values_seed);
    for m in model.modules_mut().values_mut() {
        for p in m.as_adapter_mut().params_mut() {
            *p = (0.1 * g.next_normal()) as f32;
        }
    }
    model
}

fn wave(seed: u64, scaling: f64) -> MethodConfig {
    MethodConfig::WaveletFt(WaveletFtConfig {
        wavelet: wft_adapter::dwt_core::Wavelet::new("db2").unwrap(),
        n_frequency: 60,
        scaling,
        seed,
        ..Default::default()
    })
}

/// Save, load back with the base (what `wft delta` does), and check every
/// module's ΔW against `Σ w_i·ΔW_i`. Returns the folder's `peft_type`.
fn check_linear(base: &TensorFile, inputs: &[(&AdapterModel, f64)]) -> String {
    let weighted: Vec<Weighted<'_>> = inputs
        .iter()
        .map(|&(model, weight)| Weighted { model, weight })
        .collect();
    let combined = AdapterModel::combine(&weighted, CombineMethod::Linear).unwrap();
    let dir = tempfile::tempdir().unwrap();
    combined.save(dir.path()).unwrap();
    let loaded = AdapterModel::load(dir.path(), Some(base)).unwrap();
    for m in inputs[0].0.modules().keys() {
        let mut want = Array2::<f32>::zeros(loaded.delta(m).unwrap().dim());
        for (model, w) in inputs {
            want.scaled_add(*w as f32, &model.delta(m).unwrap());
        }
        let got = loaded.delta(m).unwrap();
        let err = common::rel_err(got.iter(), want.iter());
        assert!(err < 1e-6, "{m}: relative error {err}");
    }
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
    cfg["peft_type"].as_str().unwrap().to_string()
}

#[test]
fn linear_waveletft_over_shared_locations_stays_a_peft_folder() {
    let base = base();
    let a = adapter(&base, wave(7, 25.0), 1);
    let b = adapter(&base, wave(7, 25.0), 2);
    assert_eq!(check_linear(&base, &[(&a, 0.7), (&b, -0.3)]), "WAVEFT");
}

#[test]
fn linear_waveletft_of_other_seeds_and_scalings_is_the_union_in_a_native_folder() {
    let base = base();
    let a = adapter(&base, wave(7, 25.0), 1);
    let b = adapter(&base, wave(8, 4.0), 2);
    let c = adapter(&base, wave(9, 60.0), 3);
    assert_eq!(check_linear(&base, &[(&a, 0.5), (&b, 1.5), (&c, -1.0)]), "WAVELETFT");
    // The union holds every input's locations once.
    let combined = AdapterModel::combine(
        &[Weighted { model: &a, weight: 1.0 }, Weighted { model: &b, weight: 1.0 }],
        CombineMethod::Linear,
    )
    .unwrap();
    for (m, x) in combined.modules() {
        let (ModuleAdapter::WaveletFt(x), ModuleAdapter::WaveletFt(ya), ModuleAdapter::WaveletFt(yb)) =
            (x, &a.modules()[m], &b.modules()[m])
        else {
            panic!("not WaveletFT");
        };
        let mut want: Vec<_> = ya.locations().iter().chain(yb.locations()).copied().collect();
        want.sort();
        want.dedup();
        let mut got = x.locations().to_vec();
        got.sort();
        assert_eq!(got, want, "{m}");
    }
}

#[test]
fn linear_fourierft_and_lora() {
    let base = base();
    let f = |seed| {
        MethodConfig::FourierFt(FourierFtConfig {
            n_frequency: 50,
            seed,
            ..Default::default()
        })
    };
    let (a, b) = (adapter(&base, f(3), 1), adapter(&base, f(3), 2));
    assert_eq!(check_linear(&base, &[(&a, 2.0), (&b, 0.25)]), "FOURIERFT");
    // LoRA of different ranks and α: the factors concatenate.
    let lora = |r, alpha| {
        MethodConfig::Lora(LoraConfig {
            r,
            lora_alpha: alpha,
            ..Default::default()
        })
    };
    let (a, b) = (adapter(&base, lora(2, 16.0), 1), adapter(&base, lora(3, 3.0), 2));
    assert_eq!(check_linear(&base, &[(&a, 1.0), (&b, -0.5)]), "LORA");
    // Per-module ranks (rank_pattern) round-trip through the patterns.
    let mut config = AdapterConfig::new(lora(2, 4.0), ModuleSpec::Names(vec!["q".into(), "v".into()]));
    config.rank_pattern.insert("v".into(), 5);
    let mut c = AdapterModel::new_for_base(config, &base, 4).unwrap();
    let mut g = Mt19937::new(4);
    for m in c.modules_mut().values_mut() {
        for p in m.as_adapter_mut().params_mut() {
            *p = (0.1 * g.next_normal()) as f32;
        }
    }
    assert_eq!(check_linear(&base, &[(&a, 1.0), (&c, 1.0)]), "LORA");
}

/// TIES and DARE leave a module's support inside the inputs' union, and at
/// density 1 DARE is the linear sum and TIES changes only positions whose
/// signs disagree.
#[test]
fn ties_and_dare_on_folders() {
    let base = base();
    let a = adapter(&base, wave(7, 25.0), 1);
    let b = adapter(&base, wave(7, 25.0), 2);
    let inputs = [Weighted { model: &a, weight: 1.0 }, Weighted { model: &b, weight: 1.0 }];
    let linear = AdapterModel::combine(&inputs, CombineMethod::Linear).unwrap();
    let dare1 = AdapterModel::combine(&inputs, CombineMethod::Dare { density: 1.0, seed: 3 }).unwrap();
    let ties1 = AdapterModel::combine(&inputs, CombineMethod::Ties { density: 1.0 }).unwrap();
    let ties = AdapterModel::combine(&inputs, CombineMethod::Ties { density: 0.2 }).unwrap();
    let dare = AdapterModel::combine(&inputs, CombineMethod::DareTies { density: 0.5, seed: 3 }).unwrap();
    for (m, l) in linear.modules() {
        let p = |x: &AdapterModel| x.modules()[m].as_adapter().params().to_vec();
        assert_eq!(p(&dare1), p(&linear), "{m}");
        let (pa, pb) = (p(&a), p(&b));
        for (k, (t, l)) in p(&ties1).iter().zip(l.as_adapter().params()).enumerate() {
            if pa[k].signum() == pb[k].signum() {
                // Both agree: the disjoint mean of the two.
                assert!((t - l / 2.0).abs() < 1e-6, "{m}[{k}]");
            } else {
                // One value is dropped by sign election: the larger magnitude wins.
                let winner = if pa[k].abs() >= pb[k].abs() { pa[k] } else { pb[k] };
                assert!((t - winner).abs() < 1e-6, "{m}[{k}]: {t} vs {winner}");
            }
        }
        // ⌊0.2·60⌋ = 12 kept per input: at most 24 non-zero.
        assert!(p(&ties).iter().filter(|v| **v != 0.0).count() <= 24, "{m}");
        assert!(p(&dare).iter().filter(|v| **v != 0.0).count() < 60, "{m}");
    }
}

#[test]
fn adapters_that_disagree_are_typed_errors() {
    let base = base();
    let a = adapter(&base, wave(7, 25.0), 1);
    let one = |m: &AdapterModel, method| {
        AdapterModel::combine(
            &[Weighted { model: &a, weight: 1.0 }, Weighted { model: m, weight: 1.0 }],
            method,
        )
    };
    // Another method.
    let f = adapter(&base, MethodConfig::FourierFt(FourierFtConfig::default()), 1);
    assert!(matches!(
        one(&f, CombineMethod::Linear),
        Err(Error::Incompatible { adapter: 1, .. })
    ));
    // Other modules.
    let config = AdapterConfig::new(wave(7, 25.0), ModuleSpec::Names(vec!["q".into()]));
    let q_only = AdapterModel::new_for_base(config, &base, 1).unwrap();
    let e = one(&q_only, CombineMethod::Linear).unwrap_err();
    assert!(
        matches!(&e, Error::Incompatible { module: Some(m), .. } if m.ends_with('v')),
        "{e}"
    );
    // Another wavelet.
    let other = adapter(
        &base,
        MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 60,
            ..Default::default()
        }),
        2,
    );
    let e = one(&other, CombineMethod::Linear).unwrap_err();
    assert!(e.to_string().contains("db1") && e.to_string().contains("db2"), "{e}");
    // FourierFT of other seeds cannot be unioned.
    let f2 = adapter(
        &base,
        MethodConfig::FourierFt(FourierFtConfig {
            seed: 1,
            ..Default::default()
        }),
        1,
    );
    let e = AdapterModel::combine(
        &[
            Weighted { model: &f, weight: 1.0 },
            Weighted {
                model: &f2,
                weight: 1.0,
            },
        ],
        CombineMethod::Linear,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e}");
    // TIES on LoRA, bad weights and densities, nothing to combine.
    let l = adapter(&base, MethodConfig::Lora(LoraConfig::default()), 1);
    let e = AdapterModel::combine(
        &[Weighted { model: &l, weight: 1.0 }],
        CombineMethod::Ties { density: 0.5 },
    );
    assert!(matches!(e, Err(Error::Unsupported { .. })));
    assert!(matches!(
        one(&a, CombineMethod::Ties { density: 0.0 }),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(
        one(
            &a,
            CombineMethod::Dare {
                density: f64::NAN,
                seed: 0
            }
        ),
        Err(Error::Invalid { .. })
    ));
    let e = AdapterModel::combine(
        &[Weighted {
            model: &a,
            weight: f64::INFINITY,
        }],
        CombineMethod::Linear,
    );
    assert!(matches!(e, Err(Error::Invalid { .. })));
    assert!(matches!(
        AdapterModel::combine(&[], CombineMethod::Linear),
        Err(Error::Invalid { .. })
    ));
}

/// TIES and the weighted sum against PEFT's own `merge_utils.ties` and a
/// torch sum (`scripts/make_combine_references.py`, PEFT 0.21.2): three
/// WaveletFT adapters of different α on shared locations, weights that do
/// and do not flip the elected signs, one negative, densities 0.3 to 1. The
/// combined task vector `α₀·c` matches within f32 rounding.
#[test]
fn ties_and_linear_equal_peft_merge_utils() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/combine/ties.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    let floats =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let base = base();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let alphas = floats(&case["alphas"]);
        let weights = floats(&case["weights"]);
        let models: Vec<AdapterModel> = case["coefficients"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&alphas)
            .map(|(c, &alpha)| {
                let mut m = adapter(&base, wave(7, alpha), 1);
                let values = floats(c);
                let q = m.modules_mut().values_mut().next().unwrap().as_adapter_mut();
                assert_eq!(q.params().len(), values.len());
                q.params_mut().iter_mut().zip(&values).for_each(|(p, v)| *p = *v as f32);
                m
            })
            .collect();
        let inputs: Vec<Weighted<'_>> = models
            .iter()
            .zip(&weights)
            .map(|(model, &weight)| Weighted { model, weight })
            .collect();
        let density = case["density"].as_f64().unwrap();
        for (method, key) in [
            (CombineMethod::Ties { density }, "ties"),
            (CombineMethod::Linear, "linear"),
        ] {
            let combined = AdapterModel::combine(&inputs, method).unwrap();
            let got: Vec<f64> = combined
                .modules()
                .values()
                .next()
                .unwrap()
                .as_adapter()
                .params()
                .iter()
                .map(|&c| alphas[0] * f64::from(c))
                .collect();
            let want = floats(&case[key]);
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0, f64::max);
            assert!(worst <= 1e-6 * scale, "{name} {key}: off by {worst} (scale {scale})");
            if key == "ties" && density <= 0.3 {
                assert!(want.contains(&0.0), "{name}: nothing trimmed");
            }
        }
    }
}
