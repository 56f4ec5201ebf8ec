//! Bad input gets a typed error that names the file, the tensor and what was
//! expected, never a panic, and never a half-written output.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use wft_adapter::{AdapterModel, CONFIG_FILE, Error, TensorFile, WEIGHTS_FILE};

fn refs(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs").join(case)
}

/// A writable copy of a reference adapter folder.
fn copy_adapter(case: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for f in [CONFIG_FILE, WEIGHTS_FILE] {
        std::fs::copy(refs(case).join("adapter").join(f), tmp.path().join(f)).unwrap();
    }
    tmp
}

fn base(case: &str) -> TensorFile {
    TensorFile::open(refs(case).join("base.safetensors")).unwrap()
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join(CONFIG_FILE);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

#[test]
fn unknown_peft_type() {
    let dir = copy_adapter("waveft_db1_square");
    edit_config(dir.path(), |v| v["peft_type"] = "VERA".into());
    let e = AdapterModel::load(dir.path(), Some(&base("waveft_db1_square"))).unwrap_err();
    assert!(
        matches!(&e, Error::UnknownPeftType { found, .. } if found == "VERA"),
        "{e}"
    );
    assert!(e.to_string().contains(CONFIG_FILE));
}

#[test]
fn unknown_wavelet() {
    let dir = copy_adapter("waveft_db1_square");
    edit_config(dir.path(), |v| v["wavelet_family"] = "db99".into());
    let e = AdapterModel::load(dir.path(), Some(&base("waveft_db1_square"))).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("wavelet_family") && msg.contains("db99") && msg.contains(CONFIG_FILE),
        "{msg}"
    );
}

#[test]
fn unsupported_options_are_refused() {
    for (field, value) in [
        ("use_dora", serde_json::json!(true)),
        ("bias", "all".into()),
        ("modules_to_save", serde_json::json!(["classifier"])),
    ] {
        let dir = copy_adapter("lora");
        edit_config(dir.path(), |v| v[field] = value.clone());
        let e = AdapterModel::load(dir.path(), Some(&base("lora"))).unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported { option, .. } if option == field),
            "{field}: {e}"
        );
    }
}

#[test]
fn malformed_json_names_the_file() {
    let dir = copy_adapter("lora");
    std::fs::write(dir.path().join(CONFIG_FILE), "{\"peft_type\": \"LORA\", ").unwrap();
    let e = AdapterModel::load(dir.path(), None).unwrap_err();
    assert!(
        matches!(e, Error::Json { .. }) && e.to_string().contains(CONFIG_FILE),
        "{e}"
    );
    let dir = copy_adapter("lora");
    edit_config(dir.path(), |v| v["r"] = "four".into());
    let e = AdapterModel::load(dir.path(), None).unwrap_err();
    assert!(e.to_string().contains("\"r\""), "{e}");
}

/// Rewrite the adapter's tensors through `f` (name → keep?).
fn rewrite_weights(
    dir: &Path,
    f: impl Fn(&str, &wft_adapter::RawTensor<'_>) -> Option<wft_adapter::RawTensor<'static>>,
) {
    let p = dir.join(WEIGHTS_FILE);
    let file = TensorFile::open(&p).unwrap();
    let mut kept = Vec::new();
    for name in file.names() {
        let raw = file.raw(&name, "").unwrap();
        if let Some(t) = f(&name, &raw) {
            kept.push((name, t));
        }
    }
    wft_adapter::write_atomic(&p, kept.iter().map(|(k, t)| (k.clone(), t)), None).unwrap();
}

#[test]
fn missing_tensor() {
    let dir = copy_adapter("lora");
    rewrite_weights(dir.path(), |name, raw| {
        (!name.ends_with("layers.0.q.lora_B.weight")).then(|| wft_adapter::RawTensor {
            dtype: raw.dtype,
            shape: raw.shape.clone(),
            data: raw.data.to_vec().into(),
        })
    });
    let e = AdapterModel::load(dir.path(), None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::MissingTensor { .. }), "{msg}");
    assert!(
        msg.contains("base_model.model.layers.0.q.lora_B.weight") && msg.contains(WEIGHTS_FILE),
        "{msg}"
    );
}

#[test]
fn wrong_shape_and_dtype() {
    let dir = copy_adapter("lora");
    rewrite_weights(dir.path(), |name, raw| {
        Some(if name.ends_with("layers.0.q.lora_A.weight") {
            // r = 3 rows instead of 4.
            wft_adapter::RawTensor::from_f32(&[3, raw.shape[1]], &vec![0.0; 3 * raw.shape[1]])
        } else {
            wft_adapter::RawTensor {
                dtype: raw.dtype,
                shape: raw.shape.clone(),
                data: raw.data.to_vec().into(),
            }
        })
    });
    let e = AdapterModel::load(dir.path(), None).unwrap_err();
    assert!(
        matches!(&e, Error::ShapeMismatch { tensor, .. } if tensor.ends_with("lora_A.weight")),
        "{e}"
    );

    let dir = copy_adapter("waveft_db1_square");
    rewrite_weights(dir.path(), |_, raw| {
        let n = raw.shape[0];
        Some(wft_adapter::RawTensor::from_i64(&[n], &vec![1; n]))
    });
    let e = AdapterModel::load(dir.path(), Some(&base("waveft_db1_square"))).unwrap_err();
    assert!(matches!(e, Error::DtypeMismatch { .. }), "{e}");
}

#[test]
fn adapter_for_another_model() {
    // A WaveFT adapter for q/v layers against LoRA's base (other shapes are
    // accepted by PEFT's format, other module names are not).
    let dir = refs("waveft_conv1d").join("adapter");
    let e = AdapterModel::load(&dir, Some(&base("lora"))).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::ModuleNotInBase { .. }), "{msg}");
    assert!(
        msg.contains("c_attn") && msg.contains("base.safetensors") && msg.contains("another model"),
        "{msg}"
    );
    // A LoRA adapter with the right names but other shapes.
    let model = AdapterModel::load(refs("lora").join("adapter"), None).unwrap();
    let wrong = base("waveft_db1_square");
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged.safetensors");
    let e = model.merge(&wrong, &target, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    assert!(!target.exists(), "a failed merge must not write anything");
    // Without a base, WaveFT cannot know its locations.
    let e = AdapterModel::load(refs("waveft_db1_square").join("adapter"), None).unwrap_err();
    assert!(e.to_string().contains("base model"), "{e}");
}

#[test]
fn nan_adapter_is_not_merged() {
    let dir = copy_adapter("waveft_db2_nonsquare");
    rewrite_weights(dir.path(), |_, raw| {
        let mut v = wft_adapter::RawTensor {
            dtype: raw.dtype,
            shape: raw.shape.clone(),
            data: raw.data.to_vec().into(),
        };
        v.data.to_mut()[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
        Some(v)
    });
    let b = base("waveft_db2_nonsquare");
    let model = AdapterModel::load(dir.path(), Some(&b)).unwrap();
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("merged.safetensors");
    std::fs::write(&target, b"previous contents").unwrap();
    let e = model.merge(&b, &target, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), b"previous contents");
}

#[test]
fn truncated_and_corrupt_safetensors() {
    let bytes = std::fs::read(refs("lora").join("adapter").join(WEIGHTS_FILE)).unwrap();
    for (what, data) in [
        ("truncated", bytes[..bytes.len() - 7].to_vec()),
        ("header only", bytes[..20].to_vec()),
        ("empty", Vec::new()),
        ("huge header length", {
            let mut b = bytes.clone();
            b[..8].copy_from_slice(&u64::MAX.to_le_bytes());
            b
        }),
        ("not json", {
            let mut b = bytes.clone();
            b[8] = b'#';
            b
        }),
    ] {
        let dir = copy_adapter("lora");
        std::fs::write(dir.path().join(WEIGHTS_FILE), &data).unwrap();
        let e = AdapterModel::load(dir.path(), None).unwrap_err();
        assert!(matches!(e, Error::Safetensors { .. }), "{what}: {e}");
        assert!(e.to_string().contains(WEIGHTS_FILE), "{what}: {e}");
    }
    let e = TensorFile::open("/nonexistent/model.safetensors").unwrap_err();
    assert!(matches!(e, Error::Io { .. }) && e.to_string().contains("/nonexistent/model.safetensors"));
}

#[test]
fn levels_too_deep_and_bad_sizes_are_errors() {
    use wft_adapter::dwt_core::Mode;
    use wft_adapter::{Layout, WaveletFt, WaveletFtConfig};
    let c = WaveletFtConfig {
        layout: Layout::Wavedec,
        level: 9,
        mode: Mode::Symmetric,
        n_frequency: 4,
        ..Default::default()
    };
    let e = WaveletFt::<f32>::new(&c, (16, 16)).unwrap_err();
    assert!(e.to_string().contains("level"), "{e}");
    let with_n = |n| WaveletFtConfig {
        n_frequency: n,
        ..Default::default()
    };
    assert!(WaveletFt::<f32>::new(&with_n(5), (2, 2)).is_err());
    assert!(WaveletFt::<f32>::new(&with_n(1), (0, 2)).is_err());
    assert!(WaveletFt::<f32>::new(&with_n(1), (usize::MAX / 2, 3)).is_err());
    // An unknown wavelet cannot reach a config any more: the typed field
    // refuses it where it is read.
    let e = serde_json::from_str::<WaveletFtConfig>(r#"{"wavelet": "nope"}"#).unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let c = WaveletFtConfig {
        strategy: wft_adapter::Strategy::EnergyGuided,
        ..Default::default()
    };
    assert!(
        WaveletFt::<f32>::new(
            &WaveletFtConfig {
                n_frequency: 1,
                ..c.clone()
            },
            (8, 8)
        )
        .is_err(),
        "PEFT layout is uniform only"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Random corruption of a real adapter file: flipped bytes, truncation.
    /// Loading either works or fails with an error; it never panics.
    #[test]
    fn corrupted_files_never_panic(pos in 0usize..4096, byte: u8, cut in 0usize..4096, truncate: bool) {
        let mut bytes = std::fs::read(refs("lora").join("adapter").join(WEIGHTS_FILE)).unwrap();
        let n = bytes.len();
        if truncate {
            bytes.truncate(cut % n);
        } else {
            bytes[pos % n] = byte;
        }
        let dir = copy_adapter("lora");
        std::fs::write(dir.path().join(WEIGHTS_FILE), &bytes).unwrap();
        let _ = AdapterModel::load(dir.path(), Some(&base("lora")));
    }
}

#[test]
fn spectrum_length_must_match_the_config() {
    // n_frequency edited: every spectrum now has the wrong length.
    let dir = copy_adapter("waveft_db1_square");
    edit_config(dir.path(), |v| v["n_frequency"] = 50.into());
    let e = AdapterModel::load(dir.path(), Some(&base("waveft_db1_square"))).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("waveft_spectrum") && msg.contains("[50]"), "{msg}");
    // Proportional allocation depends on every target layer of the base: the
    // same folder on a base with other layer sizes is refused.
    let dir = copy_adapter("waveft_proportional");
    edit_config(dir.path(), |v| v["target_modules"] = serde_json::json!(["q", "v"]));
    let e = AdapterModel::load(dir.path(), Some(&base("waveft_proportional"))).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
}
