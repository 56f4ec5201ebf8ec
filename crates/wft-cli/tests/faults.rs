//! `wft merge` under faults: killed part-way (SIGKILL), a full disk (a
//! 4 MiB tmpfs in a private mount namespace), and a write error (a file-size
//! limit). Each time the output path holds nothing, no temporary file is
//! left where the process could clean up, and the base is untouched.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

fn sha(path: &Path) -> Vec<u8> {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    h.finalize().to_vec()
}

/// A base of `layers` f32 weights `layers.{i}.w.weight` (rows × cols), written
/// streaming, and a LoRA r=8 adapter folder for every one of them.
fn fixture(dir: &Path, layers: usize, rows: usize, cols: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join("base.safetensors");
    let bytes = rows * cols * 4;
    let mut header = serde_json::Map::new();
    for i in 0..layers {
        header.insert(
            format!("layers.{i}.w.weight"),
            serde_json::json!({"dtype": "F32", "shape": [rows, cols], "data_offsets": [i * bytes, (i + 1) * bytes]}),
        );
    }
    let text = serde_json::Value::Object(header).to_string();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&base).unwrap());
    f.write_all(&(text.len() as u64).to_le_bytes()).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    let row: Vec<u8> = (0..cols).flat_map(|j| (j as f32 * 1e-3).to_le_bytes()).collect();
    for _ in 0..layers * rows {
        f.write_all(&row).unwrap();
    }
    f.flush().unwrap();

    let adapter = dir.join("adapter");
    std::fs::create_dir_all(&adapter).unwrap();
    let r = 8;
    let config = serde_json::json!({"peft_type": "LORA", "r": r, "lora_alpha": 16, "target_modules": ["w"]});
    std::fs::write(adapter.join("adapter_config.json"), config.to_string()).unwrap();
    let mut header = serde_json::Map::new();
    let (a, b) = (r * cols * 4, rows * r * 4);
    for i in 0..layers {
        let at = i * (a + b);
        header.insert(
            format!("base_model.model.layers.{i}.w.lora_A.weight"),
            serde_json::json!({"dtype": "F32", "shape": [r, cols], "data_offsets": [at, at + a]}),
        );
        header.insert(
            format!("base_model.model.layers.{i}.w.lora_B.weight"),
            serde_json::json!({"dtype": "F32", "shape": [rows, r], "data_offsets": [at + a, at + a + b]}),
        );
    }
    let text = serde_json::Value::Object(header).to_string();
    let mut data = (text.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(text.as_bytes());
    data.extend(std::iter::repeat_n(0x3c, layers * (a + b)));
    std::fs::write(adapter.join("adapter_model.safetensors"), data).unwrap();
    (base, adapter)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn sigkill_part_way_leaves_no_output_and_the_base_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // 48 weights of 8 MiB: long enough to be caught in the middle.
    let (base, adapter) = fixture(dir.path(), 48, 1024, 2048);
    let before = sha(&base);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    let out = outdir.join("merged.safetensors");
    let mut child = Command::new(env!("CARGO_BIN_EXE_wft"))
        .args([
            "merge",
            "--base",
            s(&base),
            "--adapter",
            s(&adapter),
            "--out",
            s(&out),
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill once the temporary output holds 64 MiB of the ~384 MiB.
    let started = Instant::now();
    let partial = loop {
        let tmp = std::fs::read_dir(&outdir)
            .unwrap()
            .filter_map(Result::ok)
            .find(|e| e.file_name().to_string_lossy().starts_with(".wft-"));
        if let Some(t) = tmp
            && t.metadata().map(|m| m.len()).unwrap_or(0) >= 64 << 20
        {
            break t.path();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the merge ended before it could be killed; make the fixture larger"
        );
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        std::thread::sleep(Duration::from_millis(2));
    };
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!out.exists(), "a killed merge left a file at the output path");
    assert_eq!(sha(&base), before, "the base changed");
    // SIGKILL cannot be cleaned up after: the temporary stays, under its
    // own name, and is all that is there.
    assert_eq!(
        entries(&outdir),
        [partial.file_name().unwrap().to_string_lossy().to_string()]
    );
    // A rerun succeeds and leaves only the output.
    std::fs::remove_file(&partial).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_wft"))
        .args([
            "merge",
            "--base",
            s(&base),
            "--adapter",
            s(&adapter),
            "--out",
            s(&out),
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(entries(&outdir), ["merged.safetensors"]);
    assert_eq!(
        std::fs::metadata(&out).unwrap().len(),
        std::fs::metadata(&base).unwrap().len()
    );
}

/// Run `script` under `wrap` with `$WFT`, `$BASE`, `$ADAPTER` set; returns
/// (success, stdout, stderr), or a failure when `wrap` cannot be started.
fn sh(script: &str, base: &Path, adapter: &Path, wrap: &[&str]) -> (bool, String, String) {
    let o = Command::new(wrap[0])
        .args(&wrap[1..])
        .args(["sh", "-c", script])
        .env("WFT", env!("CARGO_BIN_EXE_wft"))
        .env("BASE", base)
        .env("ADAPTER", adapter)
        .output();
    let o = match o {
        Ok(o) => o,
        Err(e) => return (false, String::new(), format!("{}: {e}", wrap[0])),
    };
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn a_full_disk_gives_a_clear_error_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (base, adapter) = fixture(dir.path(), 4, 512, 1024); // 8 MiB
    let before = sha(&base);
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    // A private mount namespace (as an unprivileged user where user
    // namespaces are allowed): the tmpfs exists only for this script.
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs {m} || exit 99; \
         \"$WFT\" merge --base \"$BASE\" --adapter \"$ADAPTER\" --out {m}/merged.safetensors --quiet; \
         echo \"rc=$?\"; ls -A {m}",
        m = s(&mnt)
    );
    // Where unprivileged user namespaces are off (Ubuntu 24.04's AppArmor
    // default), root may still make a mount namespace: try sudo without a
    // password prompt.
    let mut attempt = sh(
        &script,
        &base,
        &adapter,
        &["unshare", "--user", "--map-root-user", "--mount"],
    );
    if !attempt.0 || attempt.1.is_empty() {
        attempt = sh(&script, &base, &adapter, &["sudo", "-n", "-E", "unshare", "--mount"]);
    }
    let (ok, stdout, stderr) = attempt;
    if !ok || stdout.is_empty() {
        wft_test_support::skip_or_fail(
            "a_full_disk_gives_a_clear_error_and_no_partial_file",
            format!("cannot mount a tmpfs in a user namespace here ({stderr})"),
        );
        return;
    }
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("rc=1"), "the merge must fail: {stdout} {stderr}");
    assert_eq!(lines.next(), None, "files left on the full disk: {stdout}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(
        stderr.contains("merged.safetensors"),
        "the error names the output: {stderr}"
    );
    assert_eq!(sha(&base), before);
}

#[test]
fn a_write_error_gives_a_clear_error_and_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let (base, adapter) = fixture(dir.path(), 4, 512, 1024); // 8 MiB
    let before = sha(&base);
    let outdir = dir.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    // A 2 MiB file-size limit, SIGXFSZ ignored so the write fails with EFBIG.
    let script = format!(
        "ulimit -f 4096; trap '' XFSZ; exec \"$WFT\" merge --base \"$BASE\" --adapter \"$ADAPTER\" --out {}/merged.safetensors --quiet",
        s(&outdir)
    );
    let (ok, _, stderr) = sh(&script, &base, &adapter, &["env"]);
    assert!(!ok);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("merged.safetensors"),
        "{stderr}"
    );
    assert!(stderr.contains("too large"), "{stderr}");
    assert!(entries(&outdir).is_empty(), "left behind: {:?}", entries(&outdir));
    assert_eq!(sha(&base), before);
}
