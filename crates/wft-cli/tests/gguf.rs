//! `wft merge` and `wft inspect` on a GGUF decoder: a tiny random Llama
//! written as llama.cpp lays one out, and a WaveletFT adapter on it.

use std::path::Path;
use std::process::Command;

use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, WaveletFtConfig};
use wft_candle::candle_core;
use wft_candle::candle_core::quantized::GgmlDType;
use wft_candle::gguf::Gguf;
use wft_candle::models::llama::{self, Config, RowOrder};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn wft(args: &[&str]) -> R<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_wft")).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

#[test]
fn merge_and_inspect_a_gguf_decoder() -> R {
    let dir = tempfile::tempdir()?;
    let config = Config::tiny(300);
    let weights = config.random_weights(3)?;
    let base = dir.path().join("tiny.gguf");
    llama::write_gguf(&base, &config, &weights, GgmlDType::Q8_0, llama::tiny_vocab(300)?)?;
    let method = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 30,
        scaling: 5.0,
        ..Default::default()
    });
    let targets = ModuleSpec::Names(vec!["q_proj".into(), "mlp.up_proj".into()]);
    let mut model = AdapterModel::new_for_shapes(
        AdapterConfig::new(method, targets),
        &llama::base_shapes(&base, &config),
        0,
    )?;
    let mut g = wft_adapter::Mt19937::new(9);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.1 * g.next_normal()) as f32);
    }
    let adapter = dir.path().join("adapter");
    model.save(&adapter)?;

    let (ok, out, err) = wft(&["inspect", s(&adapter), "--base", s(&base)])?;
    assert!(ok, "{err}");
    assert!(
        out.contains("model.layers.1.self_attn.q_proj") && out.contains("32×32"),
        "{out}"
    );
    assert!(
        out.contains("model.layers.0.mlp.up_proj") && out.contains("64×32"),
        "{out}"
    );

    let src = Gguf::open(&base)?;
    for (dtype, want) in [
        ("f32", GgmlDType::F32),
        ("f16", GgmlDType::F16),
        ("q8_0", GgmlDType::Q8_0),
        ("source", GgmlDType::Q8_0),
    ] {
        let out = dir.path().join(format!("merged-{dtype}.gguf"));
        let (ok, stdout, err) = wft(&[
            "merge",
            "--base",
            s(&base),
            "--adapter",
            s(&adapter),
            "--out",
            s(&out),
            "--dtype",
            dtype,
        ])?;
        assert!(ok, "{err}");
        assert!(stdout.contains("merged 4 tensors"), "{stdout}");
        let merged = Gguf::open(&out)?;
        for module in model.modules().keys() {
            let (name, order) = config.gguf_tensor(module).ok_or("no tensor")?;
            assert_eq!(merged.entry(&name).map(|e| e.dtype), Some(want), "{dtype}: {name}");
            // Base + ΔW in transformers' rows, against the merged tensor un-permuted.
            let delta = model.delta(module)?;
            let (o, i) = delta.dim();
            let delta =
                candle_core::Tensor::from_vec(delta.into_raw_vec_and_offset().0, (o, i), &candle_core::Device::Cpu)?;
            let want_t = (order.to_hf(&src.dequantize(&name)?)? + delta)?;
            let got = order.to_hf(&merged.dequantize(&name)?)?;
            let diff = (got - &want_t)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let scale = want_t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let tol = match dtype {
                "f32" => 1e-6 * scale,
                "f16" => 1e-3 * scale,
                _ => scale / 127.0,
            };
            assert!(diff <= tol, "{dtype} {module}: off by {diff} (tolerance {tol})");
            assert!(matches!(order, RowOrder::Rope(_)) == module.contains("q_proj"));
        }
    }
    // Never over the base, never over an existing file without --force.
    let (ok, _, err) = wft(&[
        "merge",
        "--base",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        s(&base),
        "--force",
    ])?;
    assert!(!ok && err.contains("base model itself"), "{err}");
    let existing = dir.path().join("merged-f32.gguf");
    let (ok, _, err) = wft(&[
        "merge",
        "--base",
        s(&base),
        "--adapter",
        s(&adapter),
        "--out",
        s(&existing),
    ])?;
    assert!(!ok && err.contains("exists"), "{err}");
    Ok(())
}
