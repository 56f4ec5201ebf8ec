//! Sentence embeddings the way sentence-transformers computes them for
//! all-MiniLM-L6-v2: BERT, then the mean of the token states under the
//! attention mask.

use std::path::Path;

use wft_candle::models::bert::{Bert, Config, mean_pool};
use wft_candle::{Tuning, Weights};

use crate::text::{Ids, TextEncoder};
use crate::{Error, Result};

/// sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2.
pub const EMBED_MAX_LEN: usize = 256;

/// Mean-pooled (not normalised) embeddings of `sentences`, one batch, from
/// a model folder (`config.json`, `model.safetensors`, `tokenizer.json`).
///
/// # Errors
/// [`Error::Io`] for a missing folder, and the model's and tokenizer's
/// errors.
pub fn sentence_embeddings(model: &Path, sentences: &[&str]) -> Result<Vec<Vec<f32>>> {
    if !model.join("model.safetensors").exists() {
        return Err(Error::Io(format!(
            "{}: no model.safetensors (fetch the model with `cargo xtask fetch-minilm`)",
            model.display()
        )));
    }
    let config = Config::from_file(model.join("config.json"))?;
    let encoder = TextEncoder::from_file(
        model.join("tokenizer.json"),
        EMBED_MAX_LEN.min(config.max_position_embeddings),
    )?;
    let bert = Bert::new(
        &config,
        &Weights::load(model.join("model.safetensors"))?,
        Tuning::Frozen,
    )?;
    let ids = encoder.encode(sentences)?;
    let ids: Vec<&Ids> = ids.iter().collect();
    let b = encoder.batch(&ids)?;
    Ok(mean_pool(&bert.forward(&b.input_ids, &b.attention_mask)?, &b.attention_mask)?.to_vec2::<f32>()?)
}

/// What a model folder holds, from `config.json`'s `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FolderKind {
    /// A BERT sentence encoder (`bert`, or no `model_type`).
    Text,
    /// A DINOv2-style ViT (`dinov2`).
    Vision,
}

impl FolderKind {
    /// The kind of the model folder `dir`.
    ///
    /// # Errors
    /// [`Error::Io`] when `config.json` cannot be read, [`Error::Data`] when
    /// it does not parse or names another model type.
    pub fn of(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Data(format!("{}: {e}", path.display())))?;
        match v.get("model_type").and_then(serde_json::Value::as_str) {
            None | Some("bert") => Ok(FolderKind::Text),
            Some("dinov2") => Ok(FolderKind::Vision),
            Some(other) => Err(Error::Data(format!(
                "{}: model_type `{other}` (this knows bert and dinov2)",
                path.display()
            ))),
        }
    }
}

/// One image's features: the final layer norm's CLS token and the mean of
/// its patch tokens.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImageFeatures {
    /// The CLS token.
    pub cls: Vec<f32>,
    /// The mean patch token.
    pub mean_patch: Vec<f32>,
}

/// Images a ViT embeds per forward pass.
const IMAGE_BATCH: usize = 16;

/// The features of every image in `files`, in order (an IDX file gives one
/// per image), from a ViT model folder (`config.json`,
/// `preprocessor_config.json`, `model.safetensors`).
///
/// # Errors
/// [`Error::Io`] for a missing folder, [`Error::Image`] for a bad image
/// file (before any model work), and the model's errors.
pub fn image_features(model: &Path, files: &[&Path]) -> Result<Vec<ImageFeatures>> {
    use wft_candle::models::vit;
    if !model.join("model.safetensors").exists() {
        return Err(Error::Io(format!(
            "{}: no model.safetensors (fetch the model with `cargo xtask fetch-vit`)",
            model.display()
        )));
    }
    let mut images = Vec::new();
    for f in files {
        images.extend(crate::images::read_images(f)?);
    }
    let config = vit::Config::load(model.join("config.json"))?;
    let prep = crate::images::Preprocess::from_folder(model)?;
    let vit = vit::Vit::new(
        &config,
        &Weights::load(model.join("model.safetensors"))?,
        Tuning::Frozen,
    )?;
    let mut out = Vec::with_capacity(images.len());
    for chunk in images.chunks(IMAGE_BATCH) {
        let hidden = vit.forward(&prep.tensor(chunk)?)?;
        let cls = vit::cls(&hidden)?.to_vec2::<f32>()?;
        let mean = vit::mean_patch(&hidden)?.to_vec2::<f32>()?;
        out.extend(
            cls.into_iter()
                .zip(mean)
                .map(|(cls, mean_patch)| ImageFeatures { cls, mean_patch }),
        );
    }
    Ok(out)
}
