//! The whole decoder pipeline on a tiny random Llama, written as a GGUF
//! file by this test (the same code path as SmolLM2): `wft-train generate`,
//! `wft-train lm` (the loss falls), the saved adapter reloaded with the same
//! logits, merged into the GGUF with the same logits, and bad input as
//! clear errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use wft_candle::gguf::Gguf;
use wft_candle::models::llama::{self, Cache, Config, MergeDtype};
use wft_train::llm::finetune::{Example, batch, read_jsonl};
use wft_train::llm::{Decoder, Sampling, Stop};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn tiny_gguf(dir: &Path, dtype: GgmlDType) -> R<PathBuf> {
    let config = Config::tiny(300);
    let mut weights = config.random_weights(11)?;
    // transformers' std of 0.02 leaves a 32-wide tied embedding unable to
    // move the logits by more than about 0.6: widen it so there is
    // something to learn.
    let embed = "model.embed_tokens.weight";
    let wide = (weights.get(embed)? * 25.0)?;
    weights.insert(embed, wide);
    let path = dir.join("tiny.gguf");
    llama::write_gguf(&path, &config, &weights, dtype, llama::tiny_vocab(config.vocab_size)?)?;
    Ok(path)
}

fn wft_train(args: &[&str]) -> R<(bool, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_wft-train")).args(args).output()?;
    Ok((
        out.status.success(),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn logits(d: &Decoder, ids: &[u32]) -> R<Tensor> {
    let x = Tensor::new(ids, &Device::Cpu)?.unsqueeze(0)?;
    Ok(d.model.forward(&x, &mut Cache::new(), None)?)
}

fn max_diff(a: &Tensor, b: &Tensor) -> R<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn generate_finetune_save_reload_merge() -> R {
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::F32)?;
    let m = model.to_str().ok_or("path")?;

    // Generation, plain and through the chat template.
    let (ok, out, err) = wft_train(&[
        "generate",
        "--model",
        m,
        "--prompt",
        "ab cd",
        "--max-new-tokens",
        "6",
        "--json",
    ])?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let d = Decoder::load(&model, None)?;
    let prompt_ids: Vec<u32> = serde_json::from_value(v["prompt_ids"].clone())?;
    assert_eq!(prompt_ids, d.tokenizer.encode("ab cd")?);
    let ids: Vec<u32> = serde_json::from_value(v["ids"].clone())?;
    assert!(ids.len() <= 6 && !ids.contains(&256), "EOS is excluded: {ids:?}");
    assert_eq!(v["text"].as_str(), Some(d.tokenizer.decode(&ids)?.as_str()));
    let (ok, out, err) = wft_train(&[
        "generate",
        "--model",
        m,
        "--chat",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "3",
        "--json",
    ])?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let chat_ids: Vec<u32> = serde_json::from_value(v["prompt_ids"].clone())?;
    // <|im_start|> (257) opens the template's first turn, whole.
    assert_eq!(chat_ids[0], 257);
    assert!(chat_ids.len() > 10);

    // Fine-tuning: a completion to learn for each prompt.
    let data = dir.path().join("data.jsonl");
    let lines: Vec<String> = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op"]
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i % 2 == 0 {
                serde_json::json!({"prompt": format!("{p} is"), "completion": " zz yy"}).to_string()
            } else {
                serde_json::json!({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "qq"}]})
                    .to_string()
            }
        })
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n")?;
    let adapter = dir.path().join("adapter");
    let a = adapter.to_str().ok_or("path")?;
    let data_path = data.to_str().ok_or("path")?;
    let train = |out: &str, activations: &str| {
        wft_train(&[
            "lm",
            "--model",
            m,
            "--data",
            data_path,
            "--method",
            "waveletft-60",
            "--targets",
            "q_proj,v_proj,down_proj",
            "--epochs",
            "12",
            "--batch",
            "4",
            "--lr",
            "0.05",
            "--activations",
            activations,
            "--out",
            out,
            "--quiet",
        ])
    };
    let (ok, out, err) = train(a, "kept")?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let (first, last) = (
        v["first_loss"].as_f64().ok_or("first")?,
        v["last_loss"].as_f64().ok_or("last")?,
    );
    assert_eq!(v["steps"].as_u64(), Some(24));
    assert!(last < 0.8 * first, "the loss fell from {first} to only {last}");
    // Recomputing the activations in the backward pass trains the same way.
    let again = dir.path().join("adapter-recomputed");
    let (ok, out, err) = train(again.to_str().ok_or("path")?, "recomputed")?;
    assert!(ok, "{err}");
    let w: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(w["activations"], "recomputed");
    let losses = |v: &serde_json::Value| -> Vec<f64> {
        v["losses"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (kept, recomputed) = (losses(&v), losses(&w));
    assert_eq!(kept.len(), 24);
    assert_eq!(recomputed.len(), 24);
    for (step, (a, b)) in kept.iter().zip(&recomputed).enumerate() {
        assert!((a - b).abs() <= 1e-4 * a.abs(), "step {step}: kept {a}, recomputed {b}");
    }
    // It refuses to overwrite.
    let (ok, _, err) = wft_train(&[
        "lm",
        "--model",
        m,
        "--data",
        data.to_str().ok_or("path")?,
        "--method",
        "waveletft-60",
        "--lr",
        "0.01",
        "--out",
        a,
    ])?;
    assert!(!ok && err.contains("exists"), "{err}");

    // Reloaded from the folder: the logits of the trained model.
    let trained = Decoder::load(&model, Some(&adapter))?;
    let probe = trained.tokenizer.encode("ab is zz")?;
    let reloaded = logits(&trained, &probe)?;
    assert!(
        max_diff(&reloaded, &logits(&d, &probe)?)? > 1e-2,
        "the adapter changes the logits"
    );
    // The adapter generates through the command too.
    let (ok, _, err) = wft_train(&[
        "generate",
        "--model",
        m,
        "--adapter",
        a,
        "--prompt",
        "ab is",
        "--max-new-tokens",
        "3",
    ])?;
    assert!(ok, "{err}");

    // Merged into the GGUF, the same logits without the adapter.
    let adapters = wft_adapter::AdapterModel::load_for(&adapter, &llama::base_shapes(&model, d.model.config()))?;
    let merged = dir.path().join("merged.gguf");
    let report = llama::merge_gguf(&Gguf::open(&model)?, &adapters, &merged, MergeDtype::F32)?;
    assert_eq!(report.replaced.len(), 3 * 2);
    let m2 = Decoder::load(&merged, None)?;
    assert!(max_diff(&logits(&m2, &probe)?, &reloaded)? < 1e-4);
    Ok(())
}

/// Prompts of different lengths decoded together (left-padded) generate
/// what each generates alone; `Stop::Never` gives exactly the tokens asked.
#[test]
fn batched_generation_equals_separate_runs() -> R {
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::Q8_0)?;
    let d = Decoder::load(&model, None)?;
    let prompts: Vec<Vec<u32>> = ["ab", "cd ef gh ij", "kl mn"]
        .iter()
        .map(|p| d.tokenizer.encode(p))
        .collect::<Result<_, _>>()?;
    let batch = d.generate_batch(&prompts, 12, Stop::AtEos)?;
    for (p, got) in prompts.iter().zip(&batch) {
        assert_eq!(got, &d.generate(p, 12, Sampling::Greedy)?);
    }
    let fixed = d.generate_batch(&prompts, 7, Stop::Never)?;
    assert!(fixed.iter().all(|r| r.len() == 7));
    assert!(d.generate_batch(&[], 3, Stop::Never).is_err());
    Ok(())
}

#[test]
fn batches_learn_completion_tokens_only() -> R {
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::F32)?;
    let d = Decoder::load(&model, None)?;
    let a = d.tokenize_example(
        &Example::Completion {
            prompt: "ab".into(),
            completion: " cd".into(),
        },
        false,
        64,
    )?;
    let b = d.tokenize_example(
        &Example::Completion {
            prompt: "ab ef gh".into(),
            completion: " ij".into(),
        },
        false,
        64,
    )?;
    assert_eq!(*a.ids.last().ok_or("ids")?, 256, "EOS ends the completion");
    let t = batch(&[&a, &b], 256)?;
    let w = t.weights.to_vec2::<f32>()?;
    let mask = t.mask.to_vec2::<f32>()?;
    let len = b.ids.len() - 1;
    assert_eq!(w[1].len(), len);
    for (p, &wt) in w[0].iter().enumerate() {
        // Targets are a.ids[p + 1]: counted from the completion on, not on padding.
        let want = p + 1 >= a.prompt_len && p + 1 < a.ids.len();
        assert_eq!(wt == 1.0, want, "position {p}");
        assert_eq!(mask[0][p] == 1.0, p + 1 < a.ids.len());
    }
    // Too long to keep a completion token: an error, not an empty target.
    assert!(
        d.tokenize_example(
            &Example::Completion {
                prompt: "ab ef gh".into(),
                completion: " ij".into()
            },
            false,
            2
        )
        .is_err()
    );
    Ok(())
}

#[test]
fn bad_input_is_a_clear_error() -> R {
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::F32)?;
    let m = model.to_str().ok_or("path")?;
    // A prompt longer than the context (128 positions).
    let long = "ab ".repeat(200);
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--prompt", &long, "--max-new-tokens", "2"])?;
    assert!(!ok && err.contains("context"), "{err}");
    // A prompt file that is not UTF-8.
    let bad = dir.path().join("prompt.txt");
    std::fs::write(&bad, [b'a', b'b', 0xff, 0xfe])?;
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--prompt-file", bad.to_str().ok_or("path")?])?;
    assert!(!ok && err.contains("not UTF-8"), "{err}");
    // A file that is not GGUF, and one cut short.
    let (ok, _, err) = wft_train(&["generate", "--model", bad.to_str().ok_or("path")?, "--prompt", "ab"])?;
    assert!(!ok && err.contains("not a GGUF file"), "{err}");
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &std::fs::read(&model)?[..5000])?;
    let (ok, _, err) = wft_train(&["generate", "--model", cut.to_str().ok_or("path")?, "--prompt", "ab"])?;
    assert!(!ok && err.starts_with("error:"), "{err}");
    // An adapter for another architecture (BERT's module names).
    let refs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../wft-adapter/tests/peft_refs/lora/adapter");
    let (ok, _, err) = wft_train(&[
        "generate",
        "--model",
        m,
        "--adapter",
        refs.to_str().ok_or("path")?,
        "--prompt",
        "ab",
    ])?;
    assert!(!ok && err.contains("another model"), "{err}");
    // Bad sampling parameters and bad training data.
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--prompt", "ab", "--temperature=-1"])?;
    assert!(!ok && err.contains("--temperature"), "{err}");
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, "{\"prompt\": \"ab\", \"completion\": \"cd\"}\n{\"prompt\": 3}\n")?;
    let e = read_jsonl(&data).expect_err("bad data").to_string();
    assert!(e.contains("bad.jsonl:2"), "{e}");
    std::fs::write(&data, "{\"messages\": [{\"role\": \"user\", \"content\": \"ab\"}]}\n")?;
    assert!(
        read_jsonl(&data)
            .expect_err("bad data")
            .to_string()
            .contains("assistant")
    );
    Ok(())
}

/// Held-out evaluation: the loss equals the mean cross-entropy of the
/// completion tokens computed from the full logits, each generation is the
/// greedy generation of its prompt alone, and kinds group the scores; the
/// `lm --eval` command reports the same object.
#[test]
fn evaluation_loss_and_generations_match_direct_computation() -> R {
    use wft_train::llm::evaluate::{EvalExample, evaluate};
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::F32)?;
    let d = Decoder::load(&model, None)?;
    let rows = [
        ("ab cd", " ef gh", "a"),
        ("ij", " kl", "b"),
        ("mn op qr", " st uv wx", "a"),
    ];
    let examples: Vec<EvalExample> = rows
        .iter()
        .map(|(p, c, k)| EvalExample {
            example: Example::Completion {
                prompt: (*p).into(),
                completion: (*c).into(),
            },
            kind: Some((*k).into()),
        })
        .collect();
    let report = evaluate(&d, &examples, false, 64, 5, 2)?;
    // The loss, directly: log-softmax of every position's logits.
    let (mut total, mut count) = (0f64, 0usize);
    for e in &examples {
        let t = d.tokenize_example(&e.example, false, 64)?;
        let l = logits(&d, &t.ids)?.get(0)?;
        let logp = candle_nn::ops::log_softmax(&l, candle_core::D::Minus1)?.to_vec2::<f32>()?;
        for p in t.prompt_len - 1..t.ids.len() - 1 {
            total -= f64::from(logp[p][t.ids[p + 1] as usize]);
            count += 1;
        }
    }
    assert_eq!(report.loss_tokens, count);
    assert!(
        (report.loss - total / count as f64).abs() < 1e-4,
        "{} against {}",
        report.loss,
        total / count as f64
    );
    for (e, g) in examples.iter().zip(&report.generations) {
        let Example::Completion { prompt, .. } = &e.example else {
            unreachable!()
        };
        let alone = d.generate(&d.tokenizer.encode(prompt)?, 5, Sampling::Greedy)?;
        assert_eq!(g, d.tokenizer.decode(&alone)?.trim());
    }
    assert_eq!(report.by_kind["a"].examples, 2);
    assert_eq!(report.by_kind["b"].examples, 1);
    assert_eq!(report.overall.examples, 3);

    // Through the command, after (a little) training.
    let data = dir.path().join("data.jsonl");
    let lines: Vec<String> = rows
        .iter()
        .map(|(p, c, k)| serde_json::json!({"prompt": p, "completion": c, "kind": k}).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n") + "\n")?;
    let out = dir.path().join("adapter");
    let (ok, stdout, err) = wft_train(&[
        "lm",
        "--model",
        model.to_str().ok_or("path")?,
        "--data",
        data.to_str().ok_or("path")?,
        "--eval",
        data.to_str().ok_or("path")?,
        "--eval-max-new",
        "4",
        "--method",
        "lora-r2",
        "--lr",
        "0.01",
        "--out",
        out.to_str().ok_or("path")?,
        "--quiet",
    ])?;
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&stdout)?;
    let e = &v["eval"][0]["report"];
    assert_eq!(e["overall"]["examples"], 3);
    assert_eq!(e["generations"].as_array().map(Vec::len), Some(3));
    assert!(e["loss"].as_f64().is_some_and(f64::is_finite));
    Ok(())
}

/// `generate --requests`: requests naming two adapters, none, the chat
/// template and their own budgets, decoded together, answer each what a
/// single `generate --json` with that adapter answers, also when they come
/// from `--adapter-dir` through a bank that holds one at a time; bad lines,
/// unknown names and a bank too small are errors with their line, request
/// number or budget.
#[test]
fn mixed_adapter_requests_equal_single_generations() -> R {
    use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, Mt19937, WaveletFtConfig};
    let dir = tempfile::tempdir()?;
    let model = tiny_gguf(dir.path(), GgmlDType::F32)?;
    let m = model.to_str().ok_or("path")?;
    let config = Config::from_gguf(&Gguf::open(&model)?)?;
    let shapes = llama::base_shapes(&model, &config);
    let mut dirs = Vec::new();
    for (k, name) in ["a", "b"].iter().enumerate() {
        let method = MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 40,
            scaling: 50.0,
            seed: k as u64,
            ..Default::default()
        });
        let targets = ModuleSpec::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
        let mut adapters = AdapterModel::new_for_shapes(AdapterConfig::new(method, targets), &shapes, 1)?;
        let mut g = Mt19937::new(k as u64 + 3);
        for a in adapters.modules_mut().values_mut() {
            a.as_adapter_mut()
                .params_mut()
                .iter_mut()
                .for_each(|p| *p = (0.2 * g.next_normal()) as f32);
        }
        let d = dir.path().join(name);
        adapters.save(&d)?;
        dirs.push(d.to_str().ok_or("path")?.to_string());
    }
    let requests = [
        serde_json::json!({"prompt": "ab cd", "adapter": "a", "max_new_tokens": 5}),
        serde_json::json!({"prompt": "ef", "adapter": null}),
        serde_json::json!({"prompt": "gh ij kl", "adapter": "b", "chat": true, "max_new_tokens": 3}),
        serde_json::json!({"prompt": "ab cd", "adapter": "b", "max_new_tokens": 5}),
    ];
    let file = dir.path().join("requests.jsonl");
    let text: Vec<String> = requests.iter().map(|r| r.to_string()).collect();
    std::fs::write(&file, text.join("\n") + "\n\n")?;
    let f = file.to_str().ok_or("path")?;
    let (a, b) = (format!("a={}", dirs[0]), format!("b={}", dirs[1]));
    let (ok, out, err) = wft_train(&[
        "generate",
        "--model",
        m,
        "--requests",
        f,
        "--adapter",
        &a,
        "--adapter",
        &b,
        "--max-new-tokens",
        "4",
    ])?;
    assert!(ok, "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), 4);
    let mut differ = 0;
    for (r, got) in requests.iter().zip(&lines) {
        let max = r["max_new_tokens"].as_u64().unwrap_or(4).to_string();
        let mut args = vec![
            "generate",
            "--model",
            m,
            "--prompt",
            r["prompt"].as_str().ok_or("prompt")?,
            "--json",
        ];
        args.extend(["--max-new-tokens", max.as_str()]);
        let adapter = match r["adapter"].as_str() {
            Some("a") => Some(dirs[0].as_str()),
            Some(_) => Some(dirs[1].as_str()),
            None => None,
        };
        if let Some(d) = adapter {
            args.extend(["--adapter", d]);
        }
        if r["chat"] == true {
            args.push("--chat");
        }
        let (ok, single, err) = wft_train(&args)?;
        assert!(ok, "{err}");
        let single: serde_json::Value = serde_json::from_str(&single)?;
        assert_eq!(got, &single, "{r}");
        differ += usize::from(got["ids"] != lines[0]["ids"]);
    }
    // The adapters change what is generated (else routing is untested).
    assert!(differ >= 2, "{lines:?}");
    // The same adapters found by --adapter-dir, in a bank that holds one
    // at a time: the same answers; a bank smaller than one adapter is an
    // error that says so.
    let one = AdapterModel::load_for(&dirs[0], &shapes)?.memory_bytes();
    let d = dir.path().to_str().ok_or("path")?;
    let budget = one.to_string();
    let base = [
        "generate",
        "--model",
        m,
        "--requests",
        f,
        "--adapter-dir",
        d,
        "--max-new-tokens",
        "4",
    ];
    let (ok, banked, err) = wft_train(&[&base[..], &["--bank-bytes", &budget]].concat())?;
    assert!(ok, "{err}");
    assert_eq!(banked, out);
    let (ok, _, err) = wft_train(&[&base[..], &["--bank-bytes", "100"]].concat())?;
    assert!(!ok && err.contains("budget"), "{err}");
    // A bad line, an unknown name, NAME=DIR missing.
    std::fs::write(
        &file,
        format!("{}\n{{\"prompt\": \"x\", \"temperature\": 1}}\n", requests[0]),
    )?;
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--requests", f, "--adapter", &a])?;
    assert!(
        !ok && err.contains("requests.jsonl:2:") && err.contains("temperature"),
        "{err}"
    );
    std::fs::write(&file, format!("{}\n", requests[2]))?;
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--requests", f, "--adapter", &a])?;
    assert!(!ok && err.contains("request 1") && err.contains("\"b\""), "{err}");
    let (ok, _, err) = wft_train(&["generate", "--model", m, "--requests", f, "--adapter", &dirs[0]])?;
    assert!(!ok && err.contains("NAME=DIR"), "{err}");
    Ok(())
}
