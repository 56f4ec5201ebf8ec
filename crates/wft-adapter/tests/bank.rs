//! The adapter bank: lazy loads equal direct loads, the byte budget holds
//! under eviction (least recently used first), concurrent readers are safe,
//! and bad names, unknown names and a budget below one adapter are typed
//! errors.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use wft_adapter::{
    AdapterBank, AdapterConfig, AdapterModel, Error, MethodConfig, ModuleSpec, Mt19937, SharedShapes, TensorFile,
    WaveletFtConfig,
};

/// Five WaveFT folders (other seeds and values) under `dir`, and the base.
fn folders(dir: &Path) -> TensorFile {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/waveft_pattern_regex/base.safetensors");
    let base = TensorFile::open(p).unwrap();
    for k in 0..5u64 {
        let method = MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 40 + 10 * k as usize,
            seed: k,
            ..Default::default()
        });
        let config = AdapterConfig::new(method, ModuleSpec::Names(vec!["q".into(), "v".into()]));
        let mut model = AdapterModel::new_for_base(config, &base, k).unwrap();
        let mut g = Mt19937::new(k + 10);
        for m in model.modules_mut().values_mut() {
            m.as_adapter_mut()
                .params_mut()
                .iter_mut()
                .for_each(|p| *p = g.next_normal() as f32);
        }
        model.save(dir.join(format!("a{k}"))).unwrap();
    }
    base
}

#[test]
fn bank_loads_lazily_within_its_budget_across_threads() {
    let dir = tempfile::tempdir().unwrap();
    let base = folders(dir.path());
    let direct: Vec<AdapterModel> = (0..5)
        .map(|k| AdapterModel::load(dir.path().join(format!("a{k}")), Some(&base)).unwrap())
        .collect();
    let sizes: Vec<usize> = direct.iter().map(AdapterModel::memory_bytes).collect();
    assert!(sizes.iter().all(|&s| s > 0));
    // Room for the two largest, not three.
    let mut sorted = sizes.clone();
    sorted.sort_unstable();
    let budget = sorted[4] + sorted[3] + 1;
    assert!(sorted[0] + sorted[1] + sorted[2] > budget);
    let shapes: SharedShapes = Arc::new(base);
    let mut bank = AdapterBank::new(budget, Some(shapes));
    assert_eq!(bank.register_dir(dir.path()).unwrap(), 5);
    assert_eq!(bank.report().loads, 0, "nothing is read at registration");
    let bank = Arc::new(bank);
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let bank = bank.clone();
            let direct = direct.clone();
            std::thread::spawn(move || {
                let mut g = Mt19937::new(t);
                for _ in 0..60 {
                    let k = (g.next_u32() % 5) as usize;
                    let got = bank.get(&format!("a{k}")).unwrap();
                    for (m, a) in direct[k].modules() {
                        assert_eq!(got.modules()[m].as_adapter().params(), a.as_adapter().params());
                    }
                    let r = bank.report();
                    assert!(r.bytes <= r.budget, "{} over {}", r.bytes, r.budget);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let r = bank.report();
    assert!(r.evictions > 0 && r.loads > 5, "{r:?}");
    assert!(r.loaded.len() <= 2 && r.bytes <= budget);
    // Least recently used goes first.
    let mut bank = AdapterBank::new(budget, base_shapes());
    bank.register_dir(dir.path()).unwrap();
    let (big, next) = (
        sizes.iter().position(|&s| s == sorted[4]).unwrap(),
        sizes.iter().position(|&s| s == sorted[3]).unwrap(),
    );
    bank.get(&format!("a{big}")).unwrap();
    bank.get(&format!("a{next}")).unwrap();
    bank.get(&format!("a{big}")).unwrap();
    let small = sizes.iter().position(|&s| s == sorted[0]).unwrap();
    bank.get(&format!("a{small}")).unwrap();
    let names: Vec<String> = bank.report().loaded.into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![format!("a{small}"), format!("a{big}")]);
}

fn base_shapes() -> Option<SharedShapes> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peft_refs/waveft_pattern_regex/base.safetensors");
    Some(Arc::new(TensorFile::open(p).unwrap()))
}

#[test]
fn bank_errors_are_typed() {
    let dir = tempfile::tempdir().unwrap();
    folders(dir.path());
    let mut bank = AdapterBank::new(100, base_shapes());
    for bad in ["", "../a0", "a/b", ".hidden"] {
        assert!(
            matches!(bank.register(bad, dir.path().join("a0")), Err(Error::Invalid { .. })),
            "{bad:?}"
        );
    }
    assert!(
        matches!(bank.register("x", dir.path()), Err(Error::Invalid { .. })),
        "no config in the folder"
    );
    bank.register("a0", dir.path().join("a0")).unwrap();
    assert!(matches!(
        bank.register("a0", dir.path().join("a1")),
        Err(Error::Invalid { .. })
    ));
    assert!(matches!(bank.get("nope"), Err(Error::Invalid { .. })));
    // 100 bytes hold no adapter.
    assert!(matches!(bank.get("a0"), Err(Error::OverBudget { budget: 100, .. })));
    assert_eq!(bank.report().bytes, 0);
    // A WaveFT folder without the base's shapes cannot load.
    let mut no_base = AdapterBank::new(1 << 20, None);
    no_base.register("a0", dir.path().join("a0")).unwrap();
    assert!(no_base.get("a0").is_err());
    // A link in the folder is not registered.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(dir.path().join("a1"), dir.path().join("link")).unwrap();
        let mut b = AdapterBank::new(1 << 20, None);
        assert_eq!(b.register_dir(dir.path()).unwrap(), 5);
        assert!(!b.contains("link"));
    }
}
