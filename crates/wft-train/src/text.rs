//! Tokenisation with the `tokenizers` crate: the model's own
//! `tokenizer.json`, or a small word-level vocabulary for the tiny model.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;

use candle_core::{Device, Tensor};
use tokenizers::{EncodeInput, Tokenizer, TruncationParams};

use crate::{Error, Result};

/// Turns texts, or pairs of texts, into padded `input_ids`,
/// `attention_mask` and (for pairs) `token_type_ids` tensors.
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    pad_id: u32,
    sep_id: Option<u32>,
}

/// A padded batch of encoded texts.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Token ids, `batch × longest`, `u32`.
    pub input_ids: Tensor,
    /// 1 for tokens, 0 for padding, `batch × longest`, `f32`.
    pub attention_mask: Tensor,
    /// BERT's segment ids (0 up to and including the first `[SEP]`, 1
    /// after it), `batch × longest`, `u32`; `None` when every row is a
    /// single text (all segment 0).
    pub token_type_ids: Option<Tensor>,
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
        let sep_id = tokenizer.token_to_id("[SEP]");
        TextEncoder {
            tokenizer,
            pad_id,
            sep_id,
        }
        .truncating(max_len)
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
        TextEncoder {
            tokenizer,
            pad_id: 0,
            sep_id: Some(3),
        }
        .truncating(max_len)
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
        let pairs: Vec<(&str, Option<&str>)> = texts.iter().map(|t| (*t, None)).collect();
        self.encode_pairs(&pairs)
    }

    /// Token ids of each text or pair of texts (`[CLS] a [SEP] b [SEP]`),
    /// truncated to the longest-first rule of `tokenizers`.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when encoding fails.
    pub fn encode_pairs(&self, texts: &[(&str, Option<&str>)]) -> Result<Vec<Ids>> {
        let inputs: Vec<EncodeInput<'_>> = texts
            .iter()
            .map(|(a, b)| match b {
                Some(b) => EncodeInput::Dual((*a).into(), (*b).into()),
                None => EncodeInput::Single((*a).into()),
            })
            .collect();
        let enc = self
            .tokenizer
            .encode_batch(inputs, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        Ok(enc.into_iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// A padded batch (see [`Batch`]).
    ///
    /// # Errors
    /// [`Error::Data`] for an empty batch.
    pub fn batch(&self, ids: &[&Ids]) -> Result<Batch> {
        let len = ids
            .iter()
            .map(|i| i.len())
            .max()
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::Data("an empty batch".into()))?;
        let mut flat = Vec::with_capacity(ids.len() * len);
        let mut mask = Vec::with_capacity(ids.len() * len);
        let mut types = Vec::with_capacity(ids.len() * len);
        for i in ids {
            flat.extend(i.iter().copied().chain(std::iter::repeat_n(self.pad_id, len - i.len())));
            mask.extend((0..len).map(|k| if k < i.len() { 1f32 } else { 0f32 }));
            // Segment B starts after the first [SEP]; a single text ends there.
            let b = match self.sep_id.and_then(|sep| i.iter().position(|&t| t == sep)) {
                Some(p) => p + 1,
                None => i.len(),
            };
            types.extend((0..len).map(|k| u32::from(k >= b && k < i.len())));
        }
        let pairs = types.contains(&1);
        let shape = (ids.len(), len);
        Ok(Batch {
            input_ids: Tensor::from_vec(flat, shape, &Device::Cpu)?,
            attention_mask: Tensor::from_vec(mask, shape, &Device::Cpu)?,
            token_type_ids: if pairs {
                Some(Tensor::from_vec(types, shape, &Device::Cpu)?)
            } else {
                None
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_get_segment_ids_and_single_texts_none() -> Result<()> {
        let enc = TextEncoder::word_level(&["alpha beta", "alpha beta gamma", "gamma"], 50, 16)?;
        let single = enc.encode(&["alpha beta"])?;
        let b = enc.batch(&single.iter().collect::<Vec<_>>())?;
        assert!(b.token_type_ids.is_none());
        let pair = enc.encode_pairs(&[("alpha beta", Some("gamma")), ("gamma", None)])?;
        // [CLS] alpha beta [SEP] gamma [SEP], and [CLS] gamma [SEP] padded.
        assert_eq!(pair[0].len(), 6);
        let b = enc.batch(&pair.iter().collect::<Vec<_>>())?;
        let types = b.token_type_ids.ok_or(Error::Data("no segment ids".into()))?;
        assert_eq!(types.to_vec2::<u32>()?, [[0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]);
        Ok(())
    }
}
