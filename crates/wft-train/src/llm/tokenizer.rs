//! A decoder's tokenizer, built from its GGUF metadata.
//!
//! `tokenizer.ggml.model = gpt2` is byte-level BPE, made here with the
//! `tokenizers` crate the way transformers builds it from the same file:
//!
//! * the vocabulary spelled in GPT-2's byte alphabet (tokens the file spells
//!   otherwise are re-spelled from their UTF-8 bytes), the file's merges;
//! * tokens of type 3 (control) as special added tokens and of type 4
//!   (user-defined) as plain added tokens, so they stay whole;
//! * the pre-tokenizer split that `tokenizer.ggml.pre` names (Llama 3's or
//!   Qwen2's), else GPT-2's;
//! * BOS/EOS added as `tokenizer.ggml.add_{bos,eos}_token` say.
//!
//! Sentencepiece vocabularies (`llama`, as in Llama 2 and Mistral) are
//! refused with a clear error for now.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};
use wft_candle::gguf::{Gguf, byte_alphabet};

use crate::{Error, Result};

/// Llama 3's split (also `smaug-bpe`, `dbrx`, `falcon3` and others).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (one digit at a time).
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// `tokenizer.ggml.pre` values and their splits; others use GPT-2's.
const SPLITS: [(&str, &str); 11] = [
    ("llama3", LLAMA3_SPLIT),
    ("llama-v3", LLAMA3_SPLIT),
    ("llama-bpe", LLAMA3_SPLIT),
    ("falcon3", LLAMA3_SPLIT),
    ("pixtral", LLAMA3_SPLIT),
    ("dbrx", LLAMA3_SPLIT),
    ("smaug-bpe", LLAMA3_SPLIT),
    ("qwen2", QWEN2_SPLIT),
    ("deepseek-r1-qwen", QWEN2_SPLIT),
    ("megrez", QWEN2_SPLIT),
    ("kormo", QWEN2_SPLIT),
];

/// GGUF's token types.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// A decoder's tokenizer and its special tokens.
#[derive(Debug, Clone)]
pub struct LlmTokenizer {
    tokenizer: Tokenizer,
    tokens: Vec<String>,
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence: generation stops here.
    pub eos: Option<u32>,
}

impl LlmTokenizer {
    /// The tokenizer a GGUF file's metadata describes.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] for a model type other than `gpt2`, missing or
    /// malformed vocabulary and merges, or special-token ids outside the
    /// vocabulary.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let bad = |m: String| Error::Tokenizer(m);
        let model = gguf.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(bad(format!(
                "tokenizer.ggml.model = `{model}`: only byte-level BPE (`gpt2`) vocabularies are supported"
            )));
        }
        let alphabet = byte_alphabet();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
        let tokens: Vec<String> = gguf
            .strings("tokenizer.ggml.tokens")?
            .into_iter()
            .map(|t| {
                if in_alphabet(t) {
                    t.to_string()
                } else {
                    t.bytes().map(|b| alphabet[b as usize]).collect()
                }
            })
            .collect();
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = gguf
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge `{m}` is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix(String::new())
            .fuse_unk(false)
            .build()
            .map_err(|e| bad(format!("BPE: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let split = gguf
            .string("tokenizer.ggml.pre")
            .ok()
            .and_then(|pre| SPLITS.iter().find(|(name, _)| *name == pre));
        match split {
            Some((_, regex)) => {
                let split = Split::new(
                    SplitPattern::Regex((*regex).into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| bad(format!("split: {e}")))?;
                tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
                    split.into(),
                    ByteLevel::new(false, true, false).into(),
                ])));
            }
            None => {
                tokenizer.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            }
        }
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let types = gguf.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let added = |kind: i64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(t, ty)| **ty == kind && (kind != CONTROL || in_alphabet(t)))
                .map(|(t, _)| AddedToken::from(t.clone(), special).normalized(false))
                .collect()
        };
        tokenizer
            .add_special_tokens(added(CONTROL, true))
            .map_err(|e| bad(format!("special tokens: {e}")))?;
        tokenizer
            .add_tokens(added(USER_DEFINED, false))
            .map_err(|e| bad(format!("added tokens: {e}")))?;
        let id = |key: &str| -> Result<Option<u32>> {
            match gguf.uint(key)? {
                None => Ok(None),
                Some(i) if (i as usize) < tokens.len() => Ok(Some(i as u32)),
                Some(i) => Err(bad(format!(
                    "{key} = {i} is outside the vocabulary of {}",
                    tokens.len()
                ))),
            }
        };
        let (bos, eos) = (id("tokenizer.ggml.bos_token_id")?, id("tokenizer.ggml.eos_token_id")?);
        let add_bos = gguf.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false) && bos.is_some();
        let add_eos = gguf.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false) && eos.is_some();
        if add_bos || add_eos {
            let mut single = Vec::new();
            let mut special = Vec::new();
            for (add, id) in [(add_bos, bos), (add_eos, eos)] {
                if let (true, Some(id)) = (add, id) {
                    special.push((tokens[id as usize].clone(), id));
                }
            }
            if let (true, Some(b)) = (add_bos, bos) {
                single.push(format!("{}:0", tokens[b as usize]));
            }
            single.push("$A:0".into());
            if let (true, Some(e)) = (add_eos, eos) {
                single.push(format!("{}:0", tokens[e as usize]));
            }
            let template = TemplateProcessing::builder()
                .try_single(single.join(" "))
                .map_err(|e| bad(format!("template: {e}")))?
                .special_tokens(special)
                .build()
                .map_err(|e| bad(format!("template: {e}")))?;
            tokenizer.with_post_processor(Some(template));
        }
        Ok(LlmTokenizer {
            tokenizer,
            tokens,
            bos,
            eos,
        })
    }

    /// The ids of `text`, special tokens in it kept whole, BOS/EOS added as
    /// the file says.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
    }

    /// The text of `ids`, special tokens included.
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(e.to_string()))
    }

    /// The token `id` as the vocabulary spells it.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The vocabulary's size.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }
}
