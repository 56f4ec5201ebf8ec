//! Evaluating a saved classifier (`wft-train eval`): a model folder, its
//! head, an optional adapter folder, and a user's labelled file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use wft_adapter::{AdapterModel, TensorFile};
use wft_candle::Classifier;
use wft_candle::models::bert::{Bert, Config};
use wft_candle::{Tuning, Weights};

use crate::data::{Format, index_rows, read_file, rows};
use crate::text::TextEncoder;
use crate::train::{Tokenised, correct};
use crate::{Error, Result};

/// The label names a saved head was trained with, in its row order:
/// `labels.json` (a JSON list of strings) beside `head.safetensors`.
pub const LABELS_FILE: &str = "labels.json";

/// What to evaluate.
#[derive(Debug, Clone)]
pub struct EvalSpec {
    /// The model folder (`config.json`, `model.safetensors`,
    /// `tokenizer.json`).
    pub model: PathBuf,
    /// Other weights for the same architecture (a fully fine-tuned
    /// `model.safetensors`), instead of the folder's.
    pub weights: Option<PathBuf>,
    /// The head (`classifier.weight`, `classifier.bias`).
    pub head: PathBuf,
    /// The label names; `None`: [`LABELS_FILE`] beside the head.
    pub labels: Option<PathBuf>,
    /// A PEFT or native adapter folder, applied on the fly.
    pub adapter: Option<PathBuf>,
    /// `label<TAB>text[<TAB>text_b]` TSV or JSON lines.
    pub data: PathBuf,
    /// Longest input in tokens.
    pub max_len: usize,
    /// Examples per forward pass.
    pub batch: usize,
}

/// What `wft-train eval` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EvalReport {
    /// Fraction classified correctly.
    pub accuracy: f64,
    /// Rows evaluated.
    pub examples: usize,
    /// Rows classified correctly.
    pub correct: usize,
    /// The label names, in the head's order.
    pub labels: Vec<String>,
}

/// Write the label names beside a saved head.
///
/// # Errors
/// [`Error::Adapter`] (I/O) when writing fails.
pub fn save_labels(dir: &Path, labels: &[String]) -> Result<()> {
    let json = serde_json::to_string(labels).map_err(|e| Error::Io(e.to_string()))?;
    crate::write_text(&dir.join(LABELS_FILE), &json)
}

/// Evaluate `spec`.
///
/// # Errors
/// [`Error::Io`] for missing files, [`Error::Data`] for rows whose label the
/// head does not know or a label file that does not match the head, and the
/// model's and adapter's errors for files that do not fit the model.
pub fn evaluate(spec: &EvalSpec) -> Result<EvalReport> {
    let need = |p: PathBuf| -> Result<PathBuf> {
        if p.exists() {
            Ok(p)
        } else {
            Err(Error::Io(format!("{}: not found", p.display())))
        }
    };
    let config = Config::from_file(need(spec.model.join("config.json"))?)?;
    let encoder = TextEncoder::from_file(need(spec.model.join("tokenizer.json"))?, spec.max_len)?;
    let weights_path = need(
        spec.weights
            .clone()
            .unwrap_or_else(|| spec.model.join("model.safetensors")),
    )?;
    let weights = Weights::load(&weights_path)?;
    let labels_path = need(
        spec.labels
            .clone()
            .unwrap_or_else(|| spec.head.parent().unwrap_or_else(|| Path::new(".")).join(LABELS_FILE)),
    )?;
    let labels: Vec<String> = serde_json::from_str(&read_file(&labels_path)?)
        .map_err(|e| Error::Data(format!("{}: not a JSON list of strings: {e}", labels_path.display())))?;
    let loaded;
    let tuning = match &spec.adapter {
        Some(dir) => {
            let base = TensorFile::open(&weights_path)?;
            loaded = AdapterModel::load(need(dir.clone())?, Some(&base))?;
            Tuning::Adapters(&loaded)
        }
        None => Tuning::Frozen,
    };
    let classifier = Classifier::with_saved_head(Bert::new(&config, &weights, tuning)?, need(spec.head.clone())?)?;
    if classifier.head().classes() != labels.len() {
        return Err(Error::Data(format!(
            "{} names {} labels, the head has {} classes",
            labels_path.display(),
            labels.len(),
            classifier.head().classes()
        )));
    }
    let name = spec.data.display().to_string();
    let examples = index_rows(
        &name,
        rows(&name, &read_file(&spec.data)?, Format::of(&spec.data))?,
        &labels,
    )?;
    if examples.is_empty() {
        return Err(Error::Data(format!("{name}: no rows")));
    }
    let texts: Vec<(&str, Option<&str>)> = examples.iter().map(|e| (e.text.as_str(), e.pair.as_deref())).collect();
    let tokenised: Vec<Tokenised> = encoder
        .encode_pairs(&texts)?
        .into_iter()
        .zip(examples.iter().map(|e| e.label))
        .collect();
    let right = correct(&classifier, &encoder, &tokenised, spec.batch)?
        .into_iter()
        .filter(|c| *c)
        .count();
    Ok(EvalReport {
        accuracy: right as f64 / tokenised.len() as f64,
        examples: tokenised.len(),
        correct: right,
        labels,
    })
}
