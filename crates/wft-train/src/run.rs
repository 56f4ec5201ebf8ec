//! One complete run: model source, tokenisation, training, evaluation,
//! the save → load → merge check, and what to report.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use wft_adapter::TensorFile;
use wft_candle::Classifier;
use wft_candle::models::bert::{Bert, Config};
use wft_candle::{Tuning, Weights};

use crate::text::TextEncoder;
use crate::train::{self, History, Model, Roundtrip, Tokenised, TrainConfig};
use crate::{Dataset, Error, Method, Result};

/// Where the encoder comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Hugging Face BERT folder: `config.json`, `model.safetensors`,
    /// `tokenizer.json` (all-MiniLM-L6-v2 from `cargo xtask fetch-minilm`).
    Model(PathBuf),
    /// A tiny random BERT of the same architecture ([`Config::tiny`]) with a
    /// word-level vocabulary of the training split, from this seed.
    Tiny(u64),
}

/// Inputs shared by every run on one source: config, weights, the
/// checkpoint file for `wft-adapter`, the tokenizer and the tokenised
/// splits.
#[derive(Debug)]
pub struct Prepared {
    /// The encoder config.
    pub config: Config,
    /// The checkpoint's tensors.
    pub weights: Weights,
    /// The same checkpoint, for `wft-adapter` (target matching, merging).
    pub base: TensorFile,
    /// The tokenizer.
    pub encoder: TextEncoder,
    /// Training split, tokenised.
    pub train: Vec<Tokenised>,
    /// Validation split, tokenised.
    pub val: Vec<Tokenised>,
    /// Test split, tokenised.
    pub test: Vec<Tokenised>,
    /// Kept alive for a tiny model's checkpoint file.
    _tmp: Option<tempfile::TempDir>,
}

/// Longest input in tokens (with `[CLS]` and `[SEP]`) unless a run says
/// otherwise ([`TrainConfig::max_len`]).
pub const MAX_LEN: usize = 32;

impl Prepared {
    /// Load or make the model and tokenise the splits.
    ///
    /// # Errors
    /// [`Error::Io`] and the model's errors for missing or malformed files.
    pub fn new(source: &Source, data: &Dataset, max_len: usize) -> Result<Self> {
        let (config, weights, base, encoder, tmp) = match source {
            Source::Model(dir) => {
                let need = |f: &str| -> Result<PathBuf> {
                    let p = dir.join(f);
                    if p.exists() {
                        Ok(p)
                    } else {
                        Err(Error::Io(format!(
                            "{} is missing (fetch the model with `cargo xtask fetch-minilm`)",
                            p.display()
                        )))
                    }
                };
                let config = Config::from_file(need("config.json")?)?;
                let model = need("model.safetensors")?;
                let encoder = TextEncoder::from_file(need("tokenizer.json")?, max_len)?;
                (config, Weights::load(&model)?, TensorFile::open(&model)?, encoder, None)
            }
            Source::Tiny(seed) => {
                let texts: Vec<&str> = data
                    .train
                    .iter()
                    .flat_map(|e| std::iter::once(e.text.as_str()).chain(e.pair.as_deref()))
                    .collect();
                let encoder = TextEncoder::word_level(&texts, 2000, max_len)?;
                let config = Config::tiny(encoder.vocab_size());
                let weights = Weights::random(&config, *seed)?;
                let tmp = tempfile::tempdir().map_err(|e| Error::Io(e.to_string()))?;
                let path = tmp.path().join("model.safetensors");
                weights.save(&path)?;
                (config, weights, TensorFile::open(&path)?, encoder, Some(tmp))
            }
        };
        let tok = |split: &[crate::Example]| -> Result<Vec<Tokenised>> {
            let texts: Vec<(&str, Option<&str>)> = split.iter().map(|e| (e.text.as_str(), e.pair.as_deref())).collect();
            Ok(encoder
                .encode_pairs(&texts)?
                .into_iter()
                .zip(split.iter().map(|e| e.label))
                .collect())
        };
        Ok(Prepared {
            train: tok(&data.train)?,
            val: tok(&data.val)?,
            test: tok(&data.test)?,
            config,
            weights,
            base,
            encoder,
            _tmp: tmp,
        })
    }

    /// The encoder with every weight frozen and a head for `classes`.
    ///
    /// # Errors
    /// The model's errors.
    pub fn frozen(&self, classes: usize, seed: u64) -> Result<Classifier> {
        Ok(Classifier::new(
            Bert::new(&self.config, &self.weights, Tuning::Frozen)?,
            classes,
            seed,
        )?)
    }
}

/// Extra work a run does besides training.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Time this many frozen-model steps first (0: skip).
    pub frozen_steps: usize,
    /// Save, reload and merge into this folder, and compare the logits.
    pub save_dir: Option<PathBuf>,
}

/// Everything one run reports (JSON, one object per run).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// The method's name.
    pub method: String,
    /// Its family (`head`, `full`, `lora`, `fourierft`, `waveletft`).
    pub family: String,
    /// Training settings.
    pub config: TrainConfig,
    /// Trainable parameters of the encoder (adapter coefficients, LoRA
    /// factors, or all weights).
    pub trainable_encoder: usize,
    /// Trainable parameters of the head.
    pub trainable_head: usize,
    /// Examples in the training split.
    #[serde(default)]
    pub train_examples: usize,
    /// Examples in the validation split.
    #[serde(default)]
    pub val_examples: usize,
    /// Examples in the test split.
    #[serde(default)]
    pub test_examples: usize,
    /// Accuracy on the validation split after each epoch.
    pub val_curve: Vec<f64>,
    /// Final validation accuracy.
    pub val_acc: f64,
    /// Final test accuracy.
    pub test_acc: f64,
    /// Whether each test example, in order, was classified correctly (for
    /// paired tests over examples).
    #[serde(default)]
    pub test_correct: Vec<bool>,
    /// Loss of every step.
    pub losses: Vec<f32>,
    /// Median seconds per training step (forward, backward, optimizer).
    pub step_secs: f64,
    /// Median seconds per frozen-model step with input gradients, in the
    /// same process (0 when not measured).
    pub frozen_step_secs: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The save → load → merge check (when asked for).
    pub roundtrip: Option<Roundtrip>,
    /// Wall time of the whole run, seconds.
    pub wall_secs: f64,
}

/// Train and evaluate `method` once.
///
/// # Errors
/// Everything the parts can return.
pub fn run(
    source: &Source,
    data: &Dataset,
    method: Method,
    cfg: &TrainConfig,
    opts: &RunOptions,
    on_step: &mut dyn FnMut(usize, usize, f32),
) -> Result<RunResult> {
    let t = Instant::now();
    let p = Prepared::new(source, data, cfg.max_len)?;
    run_prepared(&p, data.labels.len(), method, cfg, opts, on_step, t)
}

/// [`run`] on inputs already prepared.
///
/// # Errors
/// As [`run`].
pub fn run_prepared(
    p: &Prepared,
    classes: usize,
    method: Method,
    cfg: &TrainConfig,
    opts: &RunOptions,
    on_step: &mut dyn FnMut(usize, usize, f32),
    started: Instant,
) -> Result<RunResult> {
    let frozen_step_secs = if opts.frozen_steps > 0 {
        let frozen = p.frozen(classes, cfg.seed)?;
        train::frozen_step_secs(&frozen, &p.encoder, &p.train, cfg.batch, opts.frozen_steps)?
    } else {
        0.0
    };
    let model = Model::new(method, &p.config, &p.weights, &p.base, classes, cfg.seed)?;
    let (trainable_encoder, trainable_head) = model.num_trainable();
    let History {
        losses,
        val_acc: val_curve,
        mut step_secs,
    } = train::train(&model, &p.encoder, &p.train, &p.val, cfg, on_step)?;
    let test_correct = train::correct(&model.classifier, &p.encoder, &p.test, cfg.batch)?;
    let test_acc = if test_correct.is_empty() {
        0.0
    } else {
        test_correct.iter().filter(|c| **c).count() as f64 / test_correct.len() as f64
    };
    let roundtrip = match &opts.save_dir {
        Some(dir) => Some(train::save_and_reload(
            &model, &p.config, &p.weights, &p.base, &p.encoder, &p.val, dir,
        )?),
        None => None,
    };
    // Skip the first steps (allocator and cache warm-up).
    let skip = step_secs.len().min(3);
    Ok(RunResult {
        method: method.to_string(),
        family: method.family().to_string(),
        config: cfg.clone(),
        trainable_encoder,
        trainable_head,
        train_examples: p.train.len(),
        val_examples: p.val.len(),
        test_examples: p.test.len(),
        val_acc: val_curve.last().copied().unwrap_or(0.0),
        val_curve,
        test_acc,
        test_correct,
        losses,
        step_secs: train::median(&mut step_secs[skip..]),
        frozen_step_secs,
        peak_rss_bytes: train::peak_rss_bytes(),
        roundtrip,
        wall_secs: started.elapsed().as_secs_f64(),
    })
}

/// Write `text` to `path` atomically.
///
/// # Errors
/// [`Error::Adapter`] (I/O) when writing fails.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    Ok(wft_adapter::write_text_atomic(path, text)?)
}
