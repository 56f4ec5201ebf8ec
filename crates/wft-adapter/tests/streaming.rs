//! The streaming merge: sharded checkpoints in and out, every dtype, and
//! the same bytes as the single-file merge; plus determinism, pinned by
//! file hashes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use wft_adapter::dwt_core::{Mode, Wavelet};
use wft_adapter::{
    AdapterConfig, AdapterModel, Dtype, Error, FourierFtConfig, INDEX_FILE, Init, Layout, LoraConfig, MethodConfig,
    ModuleSpec, Mt19937, RawTensor, Strategy, TensorFile, WEIGHTS_FILE, WaveletFtConfig, write_atomic,
};

/// A tensor of seeded normal values (standard deviation 0.02) in `dtype`.
fn random_tensor(g: &mut Mt19937, shape: &[usize], dtype: Dtype) -> RawTensor<'static> {
    let v: Vec<f32> = (0..shape.iter().product())
        .map(|_| g.next_normal() as f32 * 0.02)
        .collect();
    RawTensor::from_f32_as(dtype, shape, &v).unwrap()
}

/// A small model with every dtype: adapted weights in f32, bf16, f16 and
/// f64 (one of them past the 16 MiB conversion chunk), untouched tensors
/// including an integer one.
fn tensors() -> Vec<(String, RawTensor<'static>)> {
    let mut g = Mt19937::new(11);
    let mut f = |shape: &[usize], dtype: Dtype| random_tensor(&mut g, shape, dtype);
    vec![
        ("embed.weight".into(), f(&[50, 64], Dtype::BF16)),
        ("layers.0.q.weight".into(), f(&[64, 64], Dtype::F32)),
        ("layers.0.v.weight".into(), f(&[48, 64], Dtype::BF16)),
        ("layers.0.norm.weight".into(), f(&[64], Dtype::F32)),
        ("layers.1.q.weight".into(), f(&[64, 64], Dtype::F16)),
        ("layers.1.v.weight".into(), f(&[48, 64], Dtype::F64)),
        ("layers.2.q.weight".into(), f(&[2048, 2080], Dtype::F32)),
        ("layers.2.v.weight".into(), f(&[40, 64], Dtype::BF16)),
        (
            "position_ids".into(),
            RawTensor::from_i64(&[1, 7], &[0, 1, 2, 3, 4, 5, 6]),
        ),
    ]
}

/// The same tensors as one file and as three shards with an index.
fn write_base(dir: &Path) -> (TensorFile, TensorFile) {
    let all = tensors();
    let single = dir.join("single.safetensors");
    write_atomic(&single, all.iter().map(|(k, t)| (k.clone(), t)), None).unwrap();
    let sharded = dir.join("sharded");
    std::fs::create_dir_all(&sharded).unwrap();
    let mut weight_map = serde_json::Map::new();
    for (i, part) in all.chunks(3).enumerate() {
        let name = format!("model-{:05}-of-00003.safetensors", i + 1);
        write_atomic(&sharded.join(&name), part.iter().map(|(k, t)| (k.clone(), t)), None).unwrap();
        for (k, _) in part {
            weight_map.insert(k.clone(), name.clone().into());
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(sharded.join(INDEX_FILE), index.to_string()).unwrap();
    // An unusual mode, which the merged files must carry over.
    #[cfg(unix)]
    for entry in std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().path())
        .chain([single.clone()])
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(entry, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    (TensorFile::open(&single).unwrap(), TensorFile::open(&sharded).unwrap())
}

fn configs() -> Vec<(&'static str, AdapterConfig)> {
    let targets = || ModuleSpec::Names(vec!["q".into(), "v".into()]);
    vec![
        (
            "waveft",
            AdapterConfig::new(
                MethodConfig::WaveletFt(WaveletFtConfig {
                    wavelet: Wavelet::new("db2").unwrap(),
                    n_frequency: 100,
                    ..Default::default()
                }),
                targets(),
            ),
        ),
        (
            "waveletft-energy",
            AdapterConfig::new(
                MethodConfig::WaveletFt(WaveletFtConfig {
                    wavelet: Wavelet::new("sym3").unwrap(),
                    level: 2,
                    mode: Mode::Periodization,
                    layout: Layout::Wavedec,
                    n_frequency: 60,
                    scaling: 3.0,
                    seed: 5,
                    strategy: Strategy::EnergyGuided,
                    init: Init::Zeros,
                }),
                targets(),
            ),
        ),
        (
            "fourierft",
            AdapterConfig::new(
                MethodConfig::FourierFt(FourierFtConfig {
                    n_frequency: 80,
                    scaling: 150.0,
                    seed: 3,
                    init: Init::Zeros,
                }),
                targets(),
            ),
        ),
        (
            "lora",
            AdapterConfig::new(
                MethodConfig::Lora(LoraConfig {
                    r: 4,
                    lora_alpha: 8.0,
                    use_rslora: false,
                    seed: 0,
                }),
                targets(),
            ),
        ),
    ]
}

/// Adapters with seeded, non-zero parameters.
fn model(config: AdapterConfig, base: &TensorFile) -> AdapterModel {
    let mut model = AdapterModel::new_for_base(config, base, 9).unwrap();
    let mut g = Mt19937::new(21);
    for m in model.modules_mut().values_mut() {
        for p in m.as_adapter_mut().params_mut() {
            *p = g.next_normal() as f32 * 0.01;
        }
    }
    model
}

fn tensor_bytes(f: &TensorFile, name: &str) -> Vec<u8> {
    f.raw(name, "").unwrap().data.into_owned()
}

#[test]
fn sharded_merge_equals_the_single_file_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = write_base(dir.path());
    assert!(sharded.is_sharded() && !single.is_sharded());
    assert_eq!(sharded.files().len(), 3);
    assert_eq!(single.names(), sharded.names());
    for (label, config) in configs() {
        let model = model(config, &single);
        let out_single = dir.path().join(format!("{label}.safetensors"));
        let out_sharded = dir.path().join(format!("{label}-sharded"));
        let mut calls = Vec::new();
        let report = model
            .merge(&sharded, &out_sharded, &mut |done, total| calls.push((done, total)))
            .unwrap();
        assert_eq!(calls.last(), Some(&(9, 9)), "{label}");
        assert_eq!(report.merged.len(), 6, "{label}");
        assert_eq!(report.copied, 3, "{label}");
        model.merge(&single, &out_single, &mut |_, _| {}).unwrap();
        // Patching a copy in place writes the bytes the streaming merge writes.
        let out_stream = dir.path().join(format!("{label}-stream.safetensors"));
        model.merge_streaming(&single, &out_stream, &mut |_, _| {}).unwrap();
        assert!(
            std::fs::read(&out_stream).unwrap() == std::fs::read(&out_single).unwrap(),
            "{label}"
        );
        let out_stream_sharded = dir.path().join(format!("{label}-stream-sharded"));
        model
            .merge_streaming(&sharded, &out_stream_sharded, &mut |_, _| {})
            .unwrap();
        for f in sharded.files() {
            let name = f.file_name().unwrap();
            let same =
                std::fs::read(out_stream_sharded.join(name)).unwrap() == std::fs::read(out_sharded.join(name)).unwrap();
            assert!(same, "{label} {name:?}");
        }
        // The inputs' permissions, not the temporary files' private ones.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&out_single), mode(single.path()), "{label}");
            for f in sharded.files() {
                assert_eq!(mode(&out_sharded.join(f.file_name().unwrap())), mode(f), "{label}");
            }
        }
        // Same shard names, the index byte for byte.
        let mut names: Vec<String> = std::fs::read_dir(&out_sharded)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let mut want: Vec<String> = std::fs::read_dir(dir.path().join("sharded"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        want.sort();
        assert_eq!(names, want, "{label}");
        assert_eq!(
            std::fs::read(out_sharded.join(INDEX_FILE)).unwrap(),
            std::fs::read(dir.path().join("sharded").join(INDEX_FILE)).unwrap()
        );
        let (a, b) = (
            TensorFile::open(&out_single).unwrap(),
            TensorFile::open(&out_sharded).unwrap(),
        );
        for name in single.names() {
            assert_eq!(tensor_bytes(&a, &name), tensor_bytes(&b, &name), "{label} {name}");
            let merged = report.merged.iter().any(|(k, _)| *k == name);
            let same_as_base = tensor_bytes(&a, &name) == tensor_bytes(&single, &name);
            assert_eq!(merged, !same_as_base, "{label} {name}: merged {merged}");
            assert_eq!(
                a.info(&name),
                single.info(&name),
                "{label} {name}: dtype and shape kept"
            );
        }
        // Merged = base + ΔW, in each weight's dtype.
        for (tensor, module) in &report.merged {
            let d = model.delta(module).unwrap();
            let w = single.f32(tensor, "").unwrap();
            let m = a.f32(tensor, "").unwrap();
            let (dtype, _) = single.info(tensor).unwrap();
            // Half an ulp of the stored dtype (f32 has its own rounding).
            let tol = match dtype {
                Dtype::BF16 => 1.0 / 256.0,
                Dtype::F16 => 1.0 / 2048.0,
                _ => 1e-6,
            };
            let scale = w.iter().fold(1e-3f32, |s, v| s.max(v.abs())) * 1e-3;
            for ((wv, mv), dv) in w.iter().zip(&m).zip(d.iter()) {
                let want = wv + dv;
                assert!(
                    (want - mv).abs() <= tol * want.abs() + scale,
                    "{label} {tensor}: {wv} + {dv} vs {mv}"
                );
            }
        }
    }
}

/// An f32 weight at an offset that is not a multiple of 4 (after a 3-element
/// bf16 tensor) is patched through the decoding path, with the same bytes.
#[test]
fn misaligned_f32_weights_merge_to_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = Mt19937::new(4);
    let mut f = |shape: &[usize], dtype: Dtype| random_tensor(&mut g, shape, dtype);
    let tensors = [
        ("a.bias", f(&[3], Dtype::BF16)),
        ("a.q.weight", f(&[40, 48], Dtype::F32)),
    ];
    let path = dir.path().join("base.safetensors");
    write_atomic(&path, tensors.iter().map(|(k, t)| (k.to_string(), t)), None).unwrap();
    let base = TensorFile::open(&path).unwrap();
    for (label, config) in configs() {
        let model = model(config, &base);
        let (patched, streamed) = (dir.path().join("p.safetensors"), dir.path().join("s.safetensors"));
        let report = model.merge(&base, &patched, &mut |_, _| {}).unwrap();
        assert_eq!(report.merged.len(), 1, "{label}");
        model.merge_streaming(&base, &streamed, &mut |_, _| {}).unwrap();
        assert!(
            std::fs::read(&patched).unwrap() == std::fs::read(&streamed).unwrap(),
            "{label}"
        );
        assert!(tensor_bytes(&TensorFile::open(&patched).unwrap(), "a.q.weight") != tensor_bytes(&base, "a.q.weight"));
    }
}

/// Every file an adapter folder gets is written the same way (temporary,
/// sync, rename) and so gets the same permissions, whatever the umask.
#[cfg(unix)]
#[test]
fn saved_files_have_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (single, _) = write_base(dir.path());
    let model = model(configs().remove(0).1, &single);
    let folder = dir.path().join("adapter");
    model.save(&folder).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let weights = mode(&folder.join(WEIGHTS_FILE));
    assert_eq!(weights, mode(&folder.join(wft_adapter::CONFIG_FILE)));
    // What a plain file created here gets.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"").unwrap();
    assert_eq!(weights, mode(&plain), "not the private mode of a temporary file");
}

/// One opened checkpoint, four merges at once (thousands of adapters share
/// a base): every output is the same bytes as a merge alone.
#[test]
fn concurrent_merges_from_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = write_base(dir.path());
    let model = model(configs().remove(0).1, &single);
    let alone = dir.path().join("alone.safetensors");
    model
        .merge(&sharded, &dir.path().join("alone"), &mut |_, _| {})
        .unwrap();
    model.merge(&single, &alone, &mut |_, _| {}).unwrap();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (model, single, sharded, dir) = (&model, &single, &sharded, dir.path());
            s.spawn(move || {
                model
                    .merge(single, &dir.join(format!("t{i}.safetensors")), &mut |_, _| {})
                    .unwrap();
                model
                    .merge(sharded, &dir.join(format!("t{i}")), &mut |_, _| {})
                    .unwrap();
            });
        }
    });
    let want = std::fs::read(&alone).unwrap();
    for i in 0..4 {
        assert!(
            std::fs::read(dir.path().join(format!("t{i}.safetensors"))).unwrap() == want,
            "thread {i}"
        );
        for shard in sharded.files() {
            let name = shard.file_name().unwrap();
            assert!(
                std::fs::read(dir.path().join(format!("t{i}")).join(name)).unwrap()
                    == std::fs::read(dir.path().join("alone").join(name)).unwrap(),
                "thread {i}, {name:?}"
            );
        }
    }
}

#[test]
fn sharded_output_never_replaces_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (single, sharded) = write_base(dir.path());
    let model = model(configs().remove(0).1, &single);
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let e = model.merge(&sharded, &out, &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("keep.txt")).unwrap(), "mine");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
    // An empty folder is taken.
    std::fs::remove_file(out.join("keep.txt")).unwrap();
    model.merge(&sharded, &out, &mut |_, _| {}).unwrap();
    assert!(out.join(INDEX_FILE).is_file());
    // No temporary left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".wft-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Everything one config produces, hashed: the locations (native folders
/// store them), ΔW's bytes, the saved adapter file and the merged file.
fn hashes(label: &str, config: AdapterConfig, dir: &Path, base: &TensorFile) -> BTreeMap<String, String> {
    let model = model(config, base);
    let mut out = BTreeMap::new();
    let mut deltas = Vec::new();
    for m in model.modules().keys() {
        for v in model.delta(m).unwrap().iter() {
            deltas.extend_from_slice(&v.to_le_bytes());
        }
    }
    out.insert(format!("{label} delta"), sha(&deltas));
    let folder = dir.join(label);
    model.save(&folder).unwrap();
    out.insert(
        format!("{label} adapter"),
        sha(&std::fs::read(folder.join(WEIGHTS_FILE)).unwrap()),
    );
    let merged = dir.join(format!("{label}.safetensors"));
    model.merge(base, &merged, &mut |_, _| {}).unwrap();
    out.insert(format!("{label} merged"), sha(&std::fs::read(&merged).unwrap()));
    out
}

/// The same config and seed give bit-identical ΔW, adapter files and merged
/// files: twice in a row, and on one thread and on four, for every method.
///
/// WaveletFT's files are also pinned by hash across machines: its kernels
/// are this workspace's own, without FMA, and bit-identical on every
/// instruction set by construction (dwt-core's `isa` module). LoRA and
/// FourierFT are not pinned across machines: their products and FFTs come
/// from matrixmultiply and rustfft, which pick FMA kernels and per-ISA
/// algorithms by CPU, so another processor may round differently (on one
/// machine they are deterministic, as asserted here).
///
/// The hashes are not correctness (tests/peft_reference.rs compares with
/// PEFT); they pin reproducibility across machines, thread counts and
/// releases. A deliberate numerical change must update them and say why.
#[test]
fn same_config_and_seed_give_identical_files() {
    let dir = tempfile::tempdir().unwrap();
    let (single, _) = write_base(dir.path());
    let pool = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
    let mut all = BTreeMap::new();
    for (label, config) in configs() {
        let a = pool(1).install(|| hashes(label, config.clone(), &dir.path().join("a"), &single));
        let b = pool(4).install(|| hashes(label, config.clone(), &dir.path().join("b"), &single));
        assert_eq!(a, b, "{label}: one thread vs four");
        let c = hashes(label, config.clone(), &dir.path().join("c"), &single);
        assert_eq!(a, c, "{label}: a second run");
        if label.starts_with("wave") {
            // The portable kernels, as on a CPU without AVX2.
            wft_adapter::dwt_core::__set_portable_kernels_only(true);
            let d = hashes(label, config, &dir.path().join("d"), &single);
            wft_adapter::dwt_core::__set_portable_kernels_only(false);
            assert_eq!(a, d, "{label}: portable kernels vs AVX2");
        }
        all.extend(a);
    }
    all.retain(|k, _| k.starts_with("wave"));
    let pinned: BTreeMap<String, String> = PINNED.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if std::env::var_os("WFT_PRINT_HASHES").is_some() {
        for (k, v) in &all {
            eprintln!("    (\"{k}\", \"{v}\"),");
        }
    }
    assert_eq!(all, pinned, "hashes changed (WFT_PRINT_HASHES=1 prints the new ones)");
}

const PINNED: &[(&str, &str)] = &[
    (
        "waveft adapter",
        "a990d14d298a4dc728188388a674db1339124a61bdc8760c0573e408be6f9978",
    ),
    (
        "waveft delta",
        "e47b4292ec1500e4e9a562ae67cea1fcdfdc8fbb37a9847eeab4780c0175a28b",
    ),
    (
        "waveft merged",
        "4def9e59be130c08c92246bf231e630969616331e0d40d026f051a34653e18fb",
    ),
    (
        "waveletft-energy adapter",
        "8b7e77c3301eb4845a210c6d106a5c6c41e3ea44febdbc8d6917ef8dfcc4373c",
    ),
    (
        "waveletft-energy delta",
        "87fcfdf73bffe7d262fc68889978cad470214998d35d35d84199e6d0304e7835",
    ),
    (
        "waveletft-energy merged",
        "ee7433e09d3df8b5cd45d52768f57fe8d2888d9cdb993c4a3b66c936645c1b7d",
    ),
];

/// `copy_and_patch`: the copy has the input's bytes but for the patch and
/// the input's permissions; a failing patch leaves the output as it was
/// (and no temporary file); the input as output is refused.
#[test]
fn copy_and_patch_is_atomic_and_refuses_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&src, &bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let out = dir.path().join("out.bin");
    wft_adapter::copy_and_patch::<Error>(&src, &out, |b| {
        b[70_000..70_004].copy_from_slice(&[1, 2, 3, 4]);
        Ok(())
    })
    .unwrap();
    let mut want = bytes.clone();
    want[70_000..70_004].copy_from_slice(&[1, 2, 3, 4]);
    assert!(std::fs::read(&out).unwrap() == want);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&out).unwrap().permissions().mode() & 0o777, 0o640);
    }
    let failed = wft_adapter::copy_and_patch::<Error>(&src, &out, |b| {
        b.fill(0);
        Err(Error::Invalid {
            what: "patch".into(),
            reason: "refused".into(),
        })
    });
    assert!(matches!(failed, Err(Error::Invalid { .. })));
    assert!(
        std::fs::read(&out).unwrap() == want,
        "a failed patch changed the output"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 2, "temporary files left: {left:?}");
    let itself = wft_adapter::copy_and_patch::<Error>(&src, &dir.path().join(".").join("in.bin"), |_| Ok(()));
    assert!(matches!(itself, Err(Error::OutputExists { .. })));
    assert!(std::fs::read(&src).unwrap() == bytes);
}
