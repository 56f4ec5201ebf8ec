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
    let (input, mask) = encoder.batch(&ids)?;
    Ok(mean_pool(&bert.forward(&input, &mask)?, &mask)?.to_vec2::<f32>()?)
}
