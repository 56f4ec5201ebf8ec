//! Export to LoRA by truncated SVD: the singular values of a matrix built
//! with known ones (orthonormal DCT-II bases), the Eckart–Young error at
//! every rank, the energy rule, and a real adapter's folder that loads back
//! as PEFT LoRA with the truncated ΔW.
#![cfg(feature = "to-lora")]
#![allow(clippy::unwrap_used)]

use std::path::Path;

use wft_adapter::ndarray::Array2;
use wft_adapter::{
    AdapterConfig, AdapterModel, CONFIG_FILE, Error, LoraRank, MethodConfig, ModuleSpec, Mt19937, TensorFile,
    WaveletFtConfig, lora_factors,
};

/// Row `k` of the orthonormal DCT-II basis of length `n`.
fn dct(n: usize, k: usize, i: usize) -> f64 {
    let c = if k == 0 {
        (1.0 / n as f64).sqrt()
    } else {
        (2.0 / n as f64).sqrt()
    };
    c * (std::f64::consts::PI * (i as f64 + 0.5) * k as f64 / n as f64).cos()
}

/// `Σ_k s_k u_k v_kᵀ` with DCT rows of different lengths as the singular
/// vectors: singular values `s`, by construction.
fn known(out: usize, inp: usize, s: &[f64]) -> Array2<f32> {
    Array2::from_shape_fn((out, inp), |(i, j)| {
        s.iter()
            .enumerate()
            .map(|(k, sk)| sk * dct(out, k, i) * dct(inp, k, j))
            .sum::<f64>() as f32
    })
}

#[test]
fn truncation_meets_eckart_young() {
    let s = [5.0, 3.0, 2.0, 1.0, 0.5, 0.25];
    let d = known(40, 24, &s);
    let norm = s.iter().map(|v| v * v).sum::<f64>().sqrt();
    for r in 1..=7 {
        let (b, a, t) = lora_factors(d.view(), LoraRank::Rank(r)).unwrap();
        let kept = r.min(24);
        assert_eq!((t.rank, b.dim(), a.dim()), (kept, (40, kept), (kept, 24)));
        let tail = s.iter().skip(r).map(|v| v * v).sum::<f64>().sqrt() / norm;
        assert!((t.optimal - tail).abs() < 1e-6, "rank {r}: {} vs {tail}", t.optimal);
        assert!((t.error - tail).abs() < 1e-6, "rank {r}: {} vs {tail}", t.error);
        assert!((t.norm - norm).abs() < 1e-5);
    }
    // 25 + 9 = 34 of 39.3125 is 86.5%: 0.8 needs rank 2, 0.9 rank 3.
    assert_eq!(lora_factors(d.view(), LoraRank::Energy(0.8)).unwrap().2.rank, 2);
    assert_eq!(lora_factors(d.view(), LoraRank::Energy(0.9)).unwrap().2.rank, 3);
    assert_eq!(lora_factors(d.view(), LoraRank::Energy(1.0)).unwrap().2.rank, 6);
    for bad in [
        LoraRank::Rank(0),
        LoraRank::Energy(0.0),
        LoraRank::Energy(1.5),
        LoraRank::Energy(f64::NAN),
    ] {
        assert!(
            matches!(lora_factors(d.view(), bad), Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
    let mut nan = d.clone();
    nan[[3, 4]] = f32::NAN;
    assert!(matches!(
        lora_factors(nan.view(), LoraRank::Rank(2)),
        Err(Error::NonFinite { .. })
    ));
}

#[test]
fn a_waveletft_adapter_exports_to_a_lora_folder() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/waveft_pattern_regex/base.safetensors");
    let base = TensorFile::open(p).unwrap();
    let method = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 50,
        ..Default::default()
    });
    let config = AdapterConfig::new(method, ModuleSpec::Names(vec!["q".into(), "v".into(), "o".into()]));
    let mut model = AdapterModel::new_for_base(config, &base, 1).unwrap();
    let mut g = Mt19937::new(2);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.01 * g.next_normal()) as f32);
    }
    for (choice, full) in [
        (LoraRank::Rank(4), false),
        (LoraRank::Energy(0.9), false),
        (LoraRank::Rank(64), true),
    ] {
        let export = model.to_lora(choice).unwrap();
        assert_eq!(export.modules.len(), 6);
        let dir = tempfile::tempdir().unwrap();
        export.adapter.save(dir.path()).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["peft_type"], "LORA");
        let loaded = AdapterModel::load(dir.path(), Some(&base)).unwrap();
        for (m, t) in &export.modules {
            assert!(
                (t.error - t.optimal).abs() < 1e-5,
                "{choice:?} {m}: {} vs {}",
                t.error,
                t.optimal
            );
            let (want, got) = (model.delta(m).unwrap(), loaded.delta(m).unwrap());
            let residual = (&want - &got).mapv(|v| f64::from(v).powi(2)).sum().sqrt() / t.norm;
            assert!(
                (residual - t.error).abs() < 1e-5,
                "{choice:?} {m}: {residual} vs {}",
                t.error
            );
            if full {
                assert!(t.error < 1e-5, "{m}: full rank leaves {}", t.error);
            }
            if let LoraRank::Energy(f) = choice {
                assert!(1.0 - t.optimal.powi(2) >= f - 1e-9, "{m}");
            }
        }
    }
}
