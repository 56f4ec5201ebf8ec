//! Tokenisation with the `tokenizers` crate: the model's own
//! `tokenizer.json`, or a small word-level vocabulary for the tiny model.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use crate::{Error, Result};

/// Turns texts into padded `input_ids` and `attention_mask` tensors.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
}

/// One encoded text: token ids with `[CLS]` and `[SEP]`, truncated.
pub type Ids = Vec<u32>;

impl TextEncoder {
    /// The tokenizer a model ships (`tokenizer.json`), truncating to
    /// `max_len` tokens.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the file is missing or unreadable.
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        let mut tokenizer =
            Tokenizer::from_file(path).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        tokenizer.with_padding(None);
        let pad_id = tokenizer.token_to_id("[PAD]").unwrap_or(0);
        TextEncoder { tokenizer, pad_id }.truncating(max_len)
    }

    /// A BERT-style word-level tokenizer (lower-cased, punctuation split)
    /// over the words that occur at least twice in `texts`, up to `size`
    /// entries including `[PAD] [UNK] [CLS] [SEP]` (ids 0–3).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] if the tokenizer cannot be built.
    pub fn word_level(texts: &[&str], size: usize, max_len: usize) -> Result<Self> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for t in texts {
            for w in t
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                *counts.entry(w.to_string()).or_default() += 1;
            }
        }
        let mut words: Vec<(String, usize)> = counts.into_iter().filter(|(_, c)| *c >= 2).collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"];
        let vocab: HashMap<String, u32> = specials
            .iter()
            .map(|s| s.to_string())
            .chain(words.into_iter().map(|(w, _)| w))
            .take(size.max(specials.len()))
            .enumerate()
            .map(|(i, w)| (w, i as u32))
            .collect();
        // The same JSON a Hugging Face `tokenizer.json` holds.
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true, "strip_accents": null, "lowercase": true},
            "pre_tokenizer": {"type": "BertPreTokenizer"},
            "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
            "decoder": null,
            "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##", "max_input_chars_per_word": 100, "vocab": vocab},
        });
        let tokenizer = Tokenizer::from_str(&json.to_string()).map_err(|e| Error::Tokenizer(e.to_string()))?;
        TextEncoder { tokenizer, pad_id: 0 }.truncating(max_len)
    }

    fn truncating(mut self, max_len: usize) -> Result<Self> {
        self.tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(self)
    }

    /// The vocabulary size (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// Token ids of each text.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when encoding fails.
    pub fn encode(&self, texts: &[&str]) -> Result<Vec<Ids>> {
        let enc = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// A padded batch: `input_ids` (`u32`) and `attention_mask` (`f32`),
    /// both `batch × longest`.
    ///
    /// # Errors
    /// [`Error::Data`] for an empty batch.
    pub fn batch(&self, ids: &[&Ids]) -> Result<(Tensor, Tensor)> {
        let len = ids
            .iter()
            .map(|i| i.len())
            .max()
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::Data("an empty batch".into()))?;
        let mut flat = Vec::with_capacity(ids.len() * len);
        let mut mask = Vec::with_capacity(ids.len() * len);
        for i in ids {
            flat.extend(i.iter().copied().chain(std::iter::repeat_n(self.pad_id, len - i.len())));
            mask.extend((0..len).map(|k| if k < i.len() { 1f32 } else { 0f32 }));
        }
        Ok((
            Tensor::from_vec(flat, (ids.len(), len), &Device::Cpu)?,
            Tensor::from_vec(mask, (ids.len(), len), &Device::Cpu)?,
        ))
    }
}
