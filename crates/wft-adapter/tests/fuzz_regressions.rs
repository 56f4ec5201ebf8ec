//! Replays the fuzz targets' seed corpora and every crash reproducer the
//! fuzzers found (tests/fuzz/seeds, tests/fuzz/regressions) through the same
//! harness functions `cargo fuzz` runs (fuzz/, docs/RELIABILITY.md), so a
//! fixed crash stays fixed without nightly or libFuzzer.
#![allow(clippy::unwrap_used)]

#[path = "fuzz/harness.rs"]
mod harness;

use std::path::Path;

/// Every file of the target's seeds and regressions; returns how many ran.
fn replay(target: &str, f: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut n = 0;
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(kind).join(target)) else {
            continue;
        };
        let mut files: Vec<_> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let data = std::fs::read(&file).unwrap();
            // A panic names the input that caused it.
            let result = std::panic::catch_unwind(|| f(&data));
            assert!(result.is_ok(), "{} panicked", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn adapter_folder_inputs() {
    assert!(replay("adapter_folder", harness::adapter_folder) >= 14);
}

/// `wft inspect`'s reader on the adapter-folder seeds (the same
/// `config | weights | base` inputs) and its own reproducers.
#[test]
fn inspect_inputs() {
    assert!(replay("adapter_folder", harness::inspect) >= 14);
    replay("inspect", harness::inspect);
}

#[test]
fn native_folder_inputs() {
    assert!(replay("native_folder", harness::native_folder) >= 3);
}

#[test]
fn merge_header_inputs() {
    assert!(replay("merge_header", harness::merge_header) >= 16);
}

/// The seeds are valid inputs: they load (so the fuzzer starts from inputs
/// that reach deep code, not from early rejections).
#[test]
fn seeds_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/seeds");
    for entry in std::fs::read_dir(root.join("native_folder")).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let [config, weights] = harness::split::<2>(&data);
        wft_adapter::AdapterModel::from_bytes(config, weights.to_vec(), None).unwrap();
    }
    for entry in std::fs::read_dir(root.join("adapter_folder")).unwrap() {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let [config, weights, base] = harness::split::<3>(&data);
        let base = wft_adapter::TensorFile::from_bytes("base".into(), base.to_vec()).unwrap();
        let r = wft_adapter::AdapterModel::from_bytes(config, weights.to_vec(), Some(&base));
        assert!(r.is_ok(), "{}: {}", path.display(), r.unwrap_err());
    }
}
