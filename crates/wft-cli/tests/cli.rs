//! The `wft` binary end to end on PEFT reference folders.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use wft_test_support::{read_f32 as f32s, rel_err};

fn refs(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../wft-adapter/tests/peft_refs")
        .join(case)
}

fn wft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wft")).args(args).output().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `wft delta --base B --adapter A --module M --out O`.
fn delta(base: &Path, adapter: &Path, module: &str, out: &Path) -> Output {
    wft(&[
        "delta",
        "--base",
        s(base),
        "--adapter",
        s(adapter),
        "--module",
        module,
        "--out",
        s(out),
    ])
}

/// `wft merge --base B --adapter A --out O`, then `extra`.
fn merge(base: &Path, adapter: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["merge", "--base", s(base), "--adapter", s(adapter), "--out", s(out)];
    args.extend_from_slice(extra);
    wft(&args)
}

#[test]
fn merge_matches_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("merged.safetensors");
    let case = refs("waveft_conv1d");
    let o = merge(
        &case.join("base.safetensors"),
        &case.join("adapter"),
        &out,
        &["--quiet"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("merged 2 weights"));
    for name in ["layers.0.c_attn.weight", "layers.0.c_proj.weight"] {
        let e = rel_err(&f32s(&out, name), &f32s(&case.join("merged.safetensors"), name));
        assert!(e <= 1e-5, "{name}: {e}");
    }
}

#[test]
fn inspect_reports_parameters_and_equivalent_rank() {
    let case = refs("waveft_proportional");
    let o = wft(&[
        "inspect",
        s(&case.join("adapter")),
        "--base",
        s(&case.join("base.safetensors")),
    ]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // PEFT's proportional allocation of 3×60 over 64×64, 32×64, 16×24.
    let (sizes, n): ([usize; 3], f64) = ([4096, 2048, 384], 180.0);
    let total: usize = sizes
        .iter()
        .map(|&s| ((s as f64 / 6528.0 * n).round_ties_even() as usize).max(1))
        .sum();
    assert!(text.contains(&format!("parameters  {total}")), "{text}");
    assert!(
        text.contains("WAVEFT") && text.contains("LoRA rank with the same parameter count: 0."),
        "{text}"
    );
    assert!(text.contains("64×64"), "{text}");
}

#[test]
fn delta_writes_one_module() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("delta.safetensors");
    let case = refs("lora");
    let o = delta(
        &case.join("base.safetensors"),
        &case.join("adapter"),
        "layers.0.v",
        &out,
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // ΔW = merged − base, from PEFT's own merge.
    let (m, b) = (
        f32s(&case.join("merged.safetensors"), "layers.0.v.weight"),
        f32s(&case.join("base.safetensors"), "layers.0.v.weight"),
    );
    let want: Vec<f32> = m.iter().zip(&b).map(|(x, y)| x - y).collect();
    assert!(rel_err(&f32s(&out, "delta_weight"), &want) <= 1e-4);
}

#[test]
fn errors_name_the_file_and_exit_nonzero() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.safetensors");
    std::fs::write(&bad, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":").unwrap();
    let case = refs("lora");
    let out = tmp.path().join("out.safetensors");
    let o = merge(&bad, &case.join("adapter"), &out, &[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("bad.safetensors") && err.contains("not a valid safetensors"),
        "{err}"
    );
    assert!(!out.exists());
    let o = merge(
        &refs("waveft_db1_square").join("base.safetensors"),
        &case.join("adapter"),
        &out,
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("layers.0.q.weight") && err.contains("expected"), "{err}");
    let o = delta(&case.join("base.safetensors"), &case.join("adapter"), "nope", &out);
    assert!(String::from_utf8_lossy(&o.stderr).contains("\"nope\" is not adapted"));
    assert_eq!(wft(&["merge"]).status.code(), Some(2), "usage errors exit 2");
}

/// `--device gpu` writes the same file as `--device cpu`, within 1e-5 of
/// the update. Without an adapter this fails under `CI=true` and is
/// reported as skipped otherwise.
#[cfg(feature = "gpu")]
#[test]
fn merge_on_the_gpu_matches_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    for (case, names) in [
        (
            "waveft_conv1d",
            &["layers.0.c_attn.weight", "layers.0.c_proj.weight"][..],
        ),
        ("fourierft", &["layers.0.q.weight", "layers.0.v.weight"][..]),
    ] {
        let dir = refs(case);
        let run = |device: &str| {
            let out = tmp.path().join(format!("{case}-{device}.safetensors"));
            let o = merge(
                &dir.join("base.safetensors"),
                &dir.join("adapter"),
                &out,
                &["--device", device, "--quiet"],
            );
            (o, out)
        };
        let (o, gpu) = run("gpu");
        let err = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() && err.contains("no GPU adapter") {
            wft_test_support::skip_or_fail("merge_on_the_gpu_matches_the_cpu", &err);
            return;
        }
        assert!(o.status.success(), "{err}");
        let (o, cpu) = run("cpu");
        assert!(o.status.success());
        let base = dir.join("base.safetensors");
        for name in names {
            let b = f32s(&base, name);
            let d = |f: &Path| f32s(f, name).iter().zip(&b).map(|(x, y)| x - y).collect::<Vec<_>>();
            let e = rel_err(&d(&gpu), &d(&cpu));
            assert!(e <= 1e-5, "{case} {name}: GPU vs CPU update {e}");
        }
    }
}

/// A merge never replaces its own base, whatever path or link names it, and
/// replaces an existing output only with `--force`; `wft inspect` refuses a
/// config with a repeated key, naming the key.
#[test]
fn merge_refuses_its_base_and_existing_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let case = refs("waveft_conv1d");
    let base = tmp.path().join("model.safetensors");
    std::fs::copy(case.join("base.safetensors"), &base).unwrap();
    let original = std::fs::read(&base).unwrap();
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&base, &link).unwrap();
    let dotted = tmp.path().join(".").join("model.safetensors");
    let adapter = case.join("adapter");
    let merge_to = |out: &Path, extra: &[&str]| merge(&base, &adapter, out, &[&["--quiet"][..], extra].concat());
    for out in [&base, &link, &dotted] {
        for force in [&[][..], &["--force"][..]] {
            let o = merge_to(out, force);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(1), "{}: {err}", out.display());
            assert!(err.contains("exists") || err.contains("base checkpoint"), "{err}");
            assert_eq!(std::fs::read(&base).unwrap(), original, "the base is untouched");
        }
    }
    // With --force the base is still refused for what it is, not for existing.
    let o = merge_to(&link, &["--force"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the base checkpoint"));
    // An existing, unrelated output: refused, then replaced with --force.
    let out = tmp.path().join("merged.safetensors");
    std::fs::write(&out, b"keep me").unwrap();
    let o = merge_to(&out, &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--force"));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    let o = merge_to(&out, &["--force"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_ne!(std::fs::read(&out).unwrap(), b"keep me");

    // The duplicate-key folder of the bug report.
    let dir = tmp.path().join("dup");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(
        case.join("adapter/adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::write(
        dir.join("adapter_config.json"),
        br#"{"peft_type": "WAVEFT", "n_frequency": 10, "peft_type": "LORA"}"#,
    )
    .unwrap();
    let o = wft(&["inspect", s(&dir)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("duplicate") && err.contains("peft_type"), "{err}");
}

/// `wft combine` on a real PEFT folder: the linear combination's ΔW, read
/// back by `wft delta`, is the weighted sum of the inputs' (here one
/// adapter twice: 2·ΔW − 0.5·ΔW); TIES at density 1 of one adapter is that
/// adapter; a weight count that does not fit is an error that writes nothing.
#[test]
fn combine_is_the_weighted_sum_of_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let case = refs("waveft_pattern_regex");
    let (base, adapter) = (case.join("base.safetensors"), case.join("adapter"));
    // `wft combine --base B --out O` and `args`.
    let combine = |out: &Path, args: &[&str]| {
        let mut all = vec!["combine", "--base", s(&base), "--out", s(out)];
        all.extend_from_slice(args);
        wft(&all)
    };
    let a = s(&adapter);
    let combined = tmp.path().join("combined");
    let o = combine(
        &combined,
        &["--adapter", a, "--weight", "2", "--adapter", a, "--weight", "-0.5"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ties = tmp.path().join("ties");
    let o = combine(&ties, &["--adapter", a, "--method", "ties", "--density", "1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for module in ["layers.0.q", "layers.1.v"] {
        let d = |a: &Path, name: &str| {
            let out = tmp.path().join(format!("{name}-{module}.safetensors"));
            let o = delta(&base, a, module, &out);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            f32s(&out, "delta_weight")
        };
        let one = d(&adapter, "one");
        let want: Vec<f32> = one.iter().map(|v| 1.5 * v).collect();
        let e = rel_err(&d(&combined, "combined"), &want);
        assert!(e <= 1e-6, "{module}: {e}");
        assert!(rel_err(&d(&ties, "ties"), &one) <= 1e-6, "{module}");
    }
    let bad = tmp.path().join("bad");
    let o = combine(&bad, &["--adapter", a, "--weight", "1", "--weight", "2"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("2 weights for 1 adapters"));
    assert!(!bad.exists());
}

/// `wft to-lora` on a real PEFT WaveFT folder: full rank reproduces ΔW
/// (read back by `wft delta`), a low rank prints its error and optimum.
#[test]
fn to_lora_exports_a_lora_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let case = refs("waveft_pattern_regex");
    let (base, adapter) = (case.join("base.safetensors"), case.join("adapter"));
    // `wft to-lora --base B --adapter A --out O` and `args`.
    let to_lora = |out: &Path, args: &[&str]| {
        let mut all = vec!["to-lora", "--base", s(&base), "--adapter", s(&adapter), "--out", s(out)];
        all.extend_from_slice(args);
        wft(&all)
    };
    let lora = tmp.path().join("lora");
    let o = to_lora(&lora, &["--rank", "64"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("LoRA of 5 modules"));
    for module in ["layers.0.q", "layers.1.v"] {
        let (x, y) = (tmp.path().join("x.safetensors"), tmp.path().join("y.safetensors"));
        assert!(delta(&base, &adapter, module, &x).status.success());
        let o = delta(&base, &lora, module, &y);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let e = rel_err(&f32s(&y, "delta_weight"), &f32s(&x, "delta_weight"));
        assert!(e <= 1e-5, "{module}: {e}");
        let _ = std::fs::remove_file(&x);
        let _ = std::fs::remove_file(&y);
    }
    let low = tmp.path().join("low");
    let o = to_lora(&low, &["--energy", "0.5"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bad = tmp.path().join("bad");
    let o = to_lora(&bad, &["--rank", "0"]);
    assert!(!o.status.success());
    assert!(!bad.join("adapter_model.safetensors").exists());
}
