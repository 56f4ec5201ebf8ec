//! Files from the internet: every hostile input the scale-and-robustness
//! issue lists gets a typed error, never a panic, and a merge that fails
//! writes nothing at its output path.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use wft_adapter::{AdapterModel, CONFIG_FILE, Error, INDEX_FILE, MAX_JSON_BYTES, Summary, TensorFile, WEIGHTS_FILE};

/// `unwrap_err` without printing the (large) `Ok` value.
trait ErrorOnly {
    fn error(self) -> Error;
}
impl<T> ErrorOnly for Result<T, Error> {
    fn error(self) -> Error {
        match self {
            Ok(_) => panic!("expected an error, got Ok"),
            Err(e) => e,
        }
    }
}

fn refs(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs").join(case)
}

/// Safetensors bytes from a literal header and a data length.
fn st(header: &str, data: usize) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.resize(v.len() + data, 0);
    v
}

fn open_bytes(bytes: Vec<u8>) -> Result<TensorFile, Error> {
    TensorFile::from_bytes(PathBuf::from("hostile.safetensors"), bytes)
}

fn is_safetensors_error(e: &Error) -> bool {
    matches!(e, Error::Safetensors { .. })
}

#[test]
fn header_size_overflow() {
    for n in [u64::MAX, u64::MAX - 7, 1 << 40, 100_000_001, 9] {
        let mut v = n.to_le_bytes().to_vec();
        v.extend_from_slice(b"{}");
        let e = open_bytes(v).error();
        assert!(is_safetensors_error(&e), "{n}: {e}");
    }
    // Shorter than the length field itself.
    for len in 0..8 {
        let e = open_bytes(vec![0xff; len]).error();
        assert!(is_safetensors_error(&e), "{len} bytes: {e}");
    }
}

#[test]
fn overlapping_and_out_of_bounds_offsets() {
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let gap = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let past_end = r#"{"a":{"dtype":"F32","shape":[256],"data_offsets":[0,1024]}}"#;
    let reversed = r#"{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#;
    let huge = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}}"#;
    for (what, header, data) in [
        ("overlap", overlap, 12),
        ("gap", gap, 12),
        ("past the end", past_end, 16),
        ("reversed", reversed, 8),
        ("beyond u64", huge, 4),
    ] {
        let e = open_bytes(st(header, data)).error();
        assert!(is_safetensors_error(&e), "{what}: {e}");
    }
}

#[test]
fn dtype_shape_and_length_disagree() {
    for header in [
        r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"BF16","shape":[4],"data_offsets":[0,4]}}"#,
        r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F99","shape":[2],"data_offsets":[0,8]}}"#,
        r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
    ] {
        let e = open_bytes(st(header, 8)).error();
        assert!(is_safetensors_error(&e), "{header}: {e}");
    }
}

#[test]
fn duplicate_keys() {
    // Both entries tile the data: only a duplicate check can see this.
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let e = open_bytes(st(header, 4)).error();
    assert!(
        matches!(&e, Error::DuplicateKey { key, .. } if key.contains('a')),
        "{e}"
    );
    // In the adapter config.
    let config = br#"{"peft_type":"WAVEFT","n_frequency":10,"n_frequency":20}"#;
    let e = AdapterModel::from_bytes(config, st("{}", 0), None).error();
    assert!(
        matches!(&e, Error::DuplicateKey { key, .. } if key.contains("n_frequency")),
        "{e}"
    );
    // Nested.
    let config = br#"{"peft_type":"LORA","n_frequency_pattern":{"q":1,"q":2}}"#;
    let e = AdapterModel::from_bytes(config, st("{}", 0), None).error();
    assert!(matches!(e, Error::DuplicateKey { .. }), "{e}");
}

/// `wft inspect`'s reader refuses what loading refuses: a WaveFT folder
/// whose config says `peft_type` twice (it once reported "method LoRA" for
/// WaveFT spectra), from a folder and from memory, and any other hostile
/// config through the same guarded reader.
#[test]
fn inspect_refuses_duplicate_keys() {
    let dir = tempfile::tempdir().unwrap();
    let src = refs("waveft_db1_square");
    std::fs::copy(src.join("adapter").join(WEIGHTS_FILE), dir.path().join(WEIGHTS_FILE)).unwrap();
    let config = br#"{"peft_type": "WAVEFT", "n_frequency": 4, "peft_type": "LORA"}"#;
    std::fs::write(dir.path().join(CONFIG_FILE), config).unwrap();
    let e = Summary::read(dir.path(), None).error();
    assert!(
        matches!(&e, Error::DuplicateKey { key, .. } if key.contains("peft_type")),
        "{e}"
    );
    let weights = std::fs::read(dir.path().join(WEIGHTS_FILE)).unwrap();
    let e = Summary::from_bytes(config, weights.clone(), None).error();
    assert!(
        matches!(&e, Error::DuplicateKey { key, .. } if key.contains("peft_type")),
        "{e}"
    );
    let huge = vec![b' '; MAX_JSON_BYTES as usize + 1];
    assert!(matches!(
        Summary::from_bytes(&huge, weights.clone(), None).error(),
        Error::TooLarge { .. }
    ));
    assert!(matches!(
        Summary::from_bytes(b"{\xff}", weights, None).error(),
        Error::Json { .. }
    ));
}

#[test]
fn non_utf8_names() {
    let mut bytes = st(r#"{"a?":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 4);
    let at = bytes.iter().position(|&b| b == b'?').unwrap();
    bytes[at] = 0xff;
    let e = open_bytes(bytes).error();
    assert!(is_safetensors_error(&e), "{e}");
    // A lone surrogate escape is valid ASCII but not a valid name.
    let e = open_bytes(st(r#"{"\udc80":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 4)).error();
    assert!(is_safetensors_error(&e), "{e}");
    // In the config: bytes that are not UTF-8 at all.
    let e = AdapterModel::from_bytes(b"{\"peft_type\":\"WAVEFT\xff\"}", st("{}", 0), None).error();
    assert!(matches!(e, Error::Json { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), b"{\"peft_type\":\"\xfe\"}").unwrap();
    std::fs::write(dir.path().join(WEIGHTS_FILE), st("{}", 0)).unwrap();
    let e = AdapterModel::load(dir.path(), None).error();
    assert!(matches!(e, Error::Json { .. }), "{e}");
}

#[test]
fn json_bombs_in_the_config() {
    // Nesting far past serde_json's recursion limit: an error, not a stack overflow.
    let deep = format!(
        "{{\"peft_type\":\"WAVEFT\",\"x\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let e = AdapterModel::from_bytes(deep.as_bytes(), st("{}", 0), None).error();
    assert!(matches!(e, Error::Json { .. }), "{e}");
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(50_000), "}".repeat(50_000));
    let e = AdapterModel::from_bytes(deep_objects.as_bytes(), st("{}", 0), None).error();
    assert!(matches!(e, Error::Json { .. }), "{e}");
    // Larger than any real config: refused before parsing, from memory and from disk.
    let big = format!(
        "{{\"peft_type\":\"WAVEFT\",\"x\":\"{}\"}}",
        "a".repeat(MAX_JSON_BYTES as usize)
    );
    let e = AdapterModel::from_bytes(big.as_bytes(), st("{}", 0), None).error();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CONFIG_FILE), &big).unwrap();
    std::fs::write(dir.path().join(WEIGHTS_FILE), st("{}", 0)).unwrap();
    let e = AdapterModel::load(dir.path(), None).error();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    // Many targets inside the limit parse, and then match nothing.
    let wide = format!(
        "{{\"peft_type\":\"LORA\",\"target_modules\":[{}]}}",
        vec!["\"q\""; 200_000].join(",")
    );
    let e = AdapterModel::from_bytes(wide.as_bytes(), st("{}", 0), None).error();
    assert!(matches!(e, Error::MissingTensor { .. }), "{e}");
}

/// A copy of a reference adapter, its spectrum replaced.
fn waveft_with_spectrum(values: &[f32]) -> (Vec<u8>, Vec<u8>) {
    let dir = refs("waveft_db1_square").join("adapter");
    let config = std::fs::read(dir.join(CONFIG_FILE)).unwrap();
    let file = TensorFile::open(dir.join(WEIGHTS_FILE)).unwrap();
    let names = file.names();
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for name in &names {
        let start = data.len();
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": [values.len()], "data_offsets": [start, data.len()]}),
        );
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&data);
    (config, bytes)
}

#[test]
fn nan_and_inf_coefficients_are_not_merged() {
    let base = TensorFile::open(refs("waveft_db1_square").join("base.safetensors")).unwrap();
    let n = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(refs("waveft_db1_square").join("adapter").join(CONFIG_FILE)).unwrap(),
    )
    .unwrap()["n_frequency"]
        .as_u64()
        .unwrap() as usize;
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut values = vec![0.01; n];
        values[n / 2] = bad;
        let (config, weights) = waveft_with_spectrum(&values);
        let model = AdapterModel::from_bytes(&config, weights, Some(&base)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("merged.safetensors");
        let e = model.merge(&base, &out, &mut |_, _| {}).error();
        assert!(
            matches!(&e, Error::NonFinite { index, .. } if *index == n / 2),
            "{bad}: {e}"
        );
        assert!(!out.exists());
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a temporary file was left"
        );
    }
}

#[test]
fn n_larger_than_the_layer() {
    let base = TensorFile::open(refs("waveft_db1_square").join("base.safetensors")).unwrap();
    let total = base
        .names()
        .iter()
        .filter_map(|k| base.info(k).map(|(_, s)| s.iter().product::<usize>()))
        .max()
        .unwrap();
    // A spectrum longer than out·in, with a config that asks for it.
    let (config, weights) = waveft_with_spectrum(&vec![0.0; total + 1]);
    let mut config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    config["n_frequency"] = (total + 1).into();
    let e = AdapterModel::from_bytes(config.to_string().as_bytes(), weights, Some(&base)).error();
    assert!(matches!(e, Error::Invalid { .. } | Error::ShapeMismatch { .. }), "{e}");
    // An absurd n in the config alone.
    let (config, weights) = waveft_with_spectrum(&[0.0; 4]);
    let mut config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    config["n_frequency"] = u64::MAX.into();
    let e = AdapterModel::from_bytes(config.to_string().as_bytes(), weights, Some(&base)).error();
    assert!(matches!(e, Error::Invalid { .. } | Error::ShapeMismatch { .. }), "{e}");
}

/// A native WAVELETFT folder with one 16×16 module, its `waveletft` config
/// edited.
fn native(edit: impl FnOnce(&mut serde_json::Value), shape: serde_json::Value) -> Result<AdapterModel, Error> {
    let mut config = serde_json::json!({
        "peft_type": "WAVELETFT",
        "waveletft": {"wavelet": "db2", "level": 2, "mode": "periodization", "layout": "wavedec", "n_frequency": 2},
        "shapes": {"m": shape},
    });
    edit(&mut config["waveletft"]);
    let header = r#"{"base_model.model.m.waveletft_coefficients":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"base_model.model.m.waveletft_locations":{"dtype":"I64","shape":[2,3],"data_offsets":[8,56]}}"#;
    let mut bytes = st(header, 0);
    bytes.extend_from_slice(&[0u8; 8]);
    for v in [0i64, 0, 0, 0, 1, 1] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    AdapterModel::from_bytes(config.to_string().as_bytes(), bytes, None)
}

#[test]
fn negative_or_absurd_levels() {
    native(|_| {}, serde_json::json!([16, 16])).unwrap();
    for level in [
        serde_json::json!(-1),
        serde_json::json!(1000),
        serde_json::json!(u64::MAX),
        serde_json::json!(1.5),
        serde_json::json!("2"),
    ] {
        let e = native(|c| c["level"] = level.clone(), serde_json::json!([16, 16])).error();
        assert!(
            matches!(e, Error::Json { .. } | Error::Invalid { .. } | Error::Dwt(_)),
            "level {level}: {e}"
        );
    }
    // Absurd shapes in the same folder: refused, not allocated.
    for shape in [
        serde_json::json!([u64::MAX, u64::MAX]),
        serde_json::json!([1u64 << 40, 1u64 << 40]),
        serde_json::json!([0, 16]),
        serde_json::json!([-16, 16]),
    ] {
        let e = native(|_| {}, shape.clone()).error();
        assert!(
            matches!(e, Error::Json { .. } | Error::Invalid { .. } | Error::Dwt(_)),
            "shape {shape}: {e}"
        );
    }
}

/// A two-shard checkpoint whose index is written by `index`.
fn sharded(index: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let a = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let b = r#"{"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    std::fs::write(dir.path().join("model-00001-of-00002.safetensors"), st(a, 4)).unwrap();
    std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), st(b, 4)).unwrap();
    std::fs::write(dir.path().join(INDEX_FILE), index).unwrap();
    dir
}

#[test]
fn path_traversal_in_shard_names() {
    let ok =
        sharded(r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#);
    let f = TensorFile::open(ok.path()).unwrap();
    assert_eq!(f.names(), ["a", "b"]);
    for name in [
        "../model-00001-of-00002.safetensors",
        "/etc/passwd",
        "sub/model.safetensors",
        "..",
        ".",
        "",
        "a\\\\b.safetensors",
        "nul\\u0000.safetensors",
    ] {
        let index = format!(r#"{{"weight_map":{{"a":"{name}","b":"model-00002-of-00002.safetensors"}}}}"#);
        let dir = sharded(&index);
        let e = TensorFile::open(dir.path().join(INDEX_FILE)).error();
        assert!(matches!(&e, Error::UnsafeName { .. }), "{name:?}: {e}");
    }
}

#[test]
fn inconsistent_indexes() {
    for (what, index) in [
        ("no weight_map", r#"{"metadata":{}}"#),
        ("not a name", r#"{"weight_map":{"a":1}}"#),
        (
            "tensor in the wrong shard",
            r#"{"weight_map":{"a":"model-00002-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
        ),
        (
            "tensor no shard holds",
            r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}}"#,
        ),
        ("not JSON", "{"),
    ] {
        let dir = sharded(index);
        let e = TensorFile::open(dir.path()).error();
        assert!(matches!(e, Error::Json { .. }), "{what}: {e}");
    }
    // A shard the index names that does not exist.
    let dir = sharded(r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"missing.safetensors"}}"#);
    let e = TensorFile::open(dir.path()).error();
    assert!(matches!(e, Error::Io { .. }), "{e}");
    // The same tensor in two shards.
    let dir =
        sharded(r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#);
    let a = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    std::fs::write(dir.path().join("model-00002-of-00002.safetensors"), st(a, 4)).unwrap();
    let e = TensorFile::open(dir.path()).error();
    assert!(matches!(e, Error::DuplicateKey { .. } | Error::Json { .. }), "{e}");
    // Duplicate keys in the index itself.
    let dir = sharded(
        r#"{"weight_map":{"a":"model-00001-of-00002.safetensors","a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}"#,
    );
    let e = TensorFile::open(dir.path()).error();
    assert!(matches!(e, Error::DuplicateKey { .. }), "{e}");
}
