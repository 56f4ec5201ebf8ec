//! A decoder's tokenizer, built from its GGUF metadata with the `tokenizers`
//! crate the way transformers builds it from the same file.
//!
//! * `tokenizer.ggml.model = gpt2` (SmolLM2, Llama 3, Qwen2): byte-level
//!   BPE. The vocabulary is spelled in GPT-2's byte alphabet (tokens the file
//!   spells otherwise are re-spelled from their UTF-8 bytes), the merges are
//!   the file's, and the pre-tokenizer split is the one `tokenizer.ggml.pre`
//!   names (Llama 3's or Qwen2's), else GPT-2's.
//! * `tokenizer.ggml.model = llama` (Llama 2, Mistral): sentencepiece BPE
//!   with byte fallback, as transformers' `LlamaTokenizer`: the vocabulary as
//!   spelled, `▁` for spaces (Metaspace, prepended to the first word), the
//!   file's merges or, when it has none (Llama 2 files), the merges its
//!   scores imply (transformers' `generate_merges`); the unknown, BOS and EOS
//!   tokens are special. transformers ignores `tokenizer.ggml.add_space_prefix`
//!   and so does this.
//!
//! In both, tokens of type 3 (control) are special added tokens and of
//! type 4 (user-defined) plain added tokens, so they stay whole, and BOS/EOS
//! are added as `tokenizer.ggml.add_{bos,eos}_token` say (for `llama`
//! vocabularies BOS is added unless the file says otherwise, as llama.cpp
//! and transformers do).

use std::collections::HashMap;

use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Merges, Vocab};
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
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
    /// [`Error::Tokenizer`] for a model type other than `gpt2` and `llama`,
    /// missing or malformed vocabulary, merges or scores, or special-token
    /// ids outside the vocabulary.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let model = gguf.string("tokenizer.ggml.model")?;
        let vocabulary = match model {
            "gpt2" => Vocabulary::ByteLevel,
            "llama" => Vocabulary::SentencePiece,
            _ => {
                return Err(bad(format!(
                    "tokenizer.ggml.model = `{model}`: only byte-level (`gpt2`) and sentencepiece (`llama`) BPE \
                     vocabularies are supported"
                )));
            }
        };
        let (mut tokenizer, tokens) = match vocabulary {
            Vocabulary::ByteLevel => byte_level(gguf)?,
            Vocabulary::SentencePiece => sentencepiece(gguf)?,
        };
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
        let types = gguf.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let added = |kind: i64, special: bool| -> Vec<AddedToken> {
            tokens
                .iter()
                .zip(&types)
                .filter(|(t, ty)| {
                    // A control token outside the byte alphabet of a
                    // byte-level vocabulary is a converter's mislabel, as
                    // transformers treats it.
                    **ty == kind
                        && (kind != CONTROL || matches!(vocabulary, Vocabulary::SentencePiece) || in_byte_alphabet(t))
                })
                .map(|(t, _)| AddedToken::from(t.clone(), special).normalized(false))
                .collect()
        };
        let mut special = added(CONTROL, true);
        if let Vocabulary::SentencePiece = vocabulary {
            // transformers' LlamaTokenizer makes its unknown, BOS and EOS
            // tokens special whatever their type.
            for i in [id("tokenizer.ggml.unknown_token_id")?, bos, eos].into_iter().flatten() {
                special.push(AddedToken::from(tokens[i as usize].clone(), true).normalized(false));
            }
        }
        tokenizer
            .add_special_tokens(special)
            .map_err(|e| bad(format!("special tokens: {e}")))?;
        tokenizer
            .add_tokens(added(USER_DEFINED, false))
            .map_err(|e| bad(format!("added tokens: {e}")))?;
        let default_bos = matches!(vocabulary, Vocabulary::SentencePiece);
        let add_bos = gguf.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_bos) && bos.is_some();
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
        self.encode_with(text, true)
    }

    /// The ids of a rendered chat template: no BOS/EOS added, since the
    /// template writes its own (transformers' `apply_chat_template`).
    ///
    /// # Errors
    /// [`Error::Tokenizer`] when the tokenizer fails.
    pub fn encode_rendered(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, false)
    }

    fn encode_with(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self
            .tokenizer
            .encode(text, add_special)
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

/// The two kinds of vocabulary a GGUF names in `tokenizer.ggml.model`.
#[derive(Debug, Clone, Copy)]
enum Vocabulary {
    /// `gpt2`: byte-level BPE.
    ByteLevel,
    /// `llama`: sentencepiece BPE with byte fallback.
    SentencePiece,
}

fn bad(m: String) -> Error {
    Error::Tokenizer(m)
}

/// `tokenizer.ggml.merges`, each `"left right"`, or `None` when absent.
fn file_merges(gguf: &Gguf) -> Result<Option<Merges>> {
    if gguf.value("tokenizer.ggml.merges").is_none() {
        return Ok(None);
    }
    gguf.strings("tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| bad(format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Whether every character of `t` is one of GPT-2's 256 byte characters.
fn in_byte_alphabet(t: &str) -> bool {
    static ALPHABET: std::sync::LazyLock<[char; 256]> = std::sync::LazyLock::new(byte_alphabet);
    t.chars().all(|c| ALPHABET.contains(&c))
}

/// Byte-level BPE: the vocabulary re-spelled into GPT-2's alphabet where
/// needed, the file's merges, the split `tokenizer.ggml.pre` names.
fn byte_level(gguf: &Gguf) -> Result<(Tokenizer, Vec<String>)> {
    let alphabet = byte_alphabet();
    let tokens: Vec<String> = gguf
        .strings("tokenizer.ggml.tokens")?
        .into_iter()
        .map(|t| {
            if in_byte_alphabet(t) {
                t.to_string()
            } else {
                t.bytes().map(|b| alphabet[b as usize]).collect()
            }
        })
        .collect();
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let merges = file_merges(gguf)?.ok_or_else(|| bad("tokenizer.ggml.merges: is missing".into()))?;
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
    Ok((tokenizer, tokens))
}

/// Sentencepiece BPE as transformers' `LlamaTokenizer`: byte fallback,
/// fused unknowns, `▁` prepended to the first word and for every space,
/// and a decoder that undoes both.
fn sentencepiece(gguf: &Gguf) -> Result<(Tokenizer, Vec<String>)> {
    let tokens: Vec<String> = gguf
        .strings("tokenizer.ggml.tokens")?
        .into_iter()
        .map(str::to_string)
        .collect();
    let merges = match file_merges(gguf)? {
        Some(m) => m,
        None => {
            let scores = gguf
                .floats("tokenizer.ggml.scores")?
                .ok_or_else(|| bad("a sentencepiece vocabulary with neither merges nor scores".into()))?;
            if scores.len() != tokens.len() {
                return Err(bad(format!("{} scores for {} tokens", scores.len(), tokens.len())));
            }
            merges_from_scores(&tokens, &scores)
        }
    };
    let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| bad(format!("BPE: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(Metaspace::new(SPACE, PrependScheme::First, false)));
    let replace = Replace::new(SPACE.to_string(), " ").map_err(|e| bad(format!("decoder: {e}")))?;
    tokenizer.with_decoder(Some(DecoderSequence::new(vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ])));
    Ok((tokenizer, tokens))
}

/// Sentencepiece's word boundary, `▁`.
const SPACE: char = '\u{2581}';

/// The merges a sentencepiece vocabulary's scores imply, in transformers'
/// order (`generate_merges`): every split of a token into two tokens of the
/// vocabulary, those of one token by the halves' ids, then all of them by
/// the token's score, the left half's length and the right half's (in
/// characters), highest first, ties in that order.
fn merges_from_scores(tokens: &[String], scores: &[f32]) -> Merges {
    // As Python dicts: the last id of a repeated token, its last score, its
    // first place.
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut first: Vec<(&str, f32)> = Vec::with_capacity(tokens.len());
    let mut place: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    for (t, &score) in tokens.iter().zip(scores) {
        match place.get(t.as_str()) {
            Some(&p) => first[p].1 = score,
            None => {
                place.insert(t, first.len());
                first.push((t, score));
            }
        }
    }
    let mut merges: Vec<(&str, &str, f32)> = Vec::new();
    for (token, score) in first {
        let mut local: Vec<(&str, &str, f32)> = token
            .char_indices()
            .skip(1)
            .map(|(at, _)| token.split_at(at))
            .filter(|(l, r)| ids.contains_key(l) && ids.contains_key(r))
            .map(|(l, r)| (l, r, score))
            .collect();
        local.sort_by_key(|(l, r, _)| (ids[l], ids[r]));
        merges.extend(local);
    }
    let key = |(l, r, s): &(&str, &str, f32)| (*s, l.chars().count(), r.chars().count());
    merges.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        // As Python compares floats: -0.0 ties with 0.0 (and NaN with all).
        kb.0.partial_cmp(&ka.0)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(kb.1.cmp(&ka.1))
            .then(kb.2.cmp(&ka.2))
    });
    merges
        .into_iter()
        .map(|(l, r, _)| (l.to_string(), r.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use wft_candle::gguf::Gguf;

    /// The merges a sentencepiece file's scores imply are transformers'
    /// (`generate_merges`), in its order: the fixture holds the list it
    /// derived for the same file.
    #[test]
    fn merges_from_scores_are_transformers_merges() -> Result<(), Box<dyn std::error::Error>> {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm");
        let gguf = Gguf::open(dir.join("tiny-spm.gguf"))?;
        let tokens: Vec<String> = gguf
            .strings("tokenizer.ggml.tokens")?
            .into_iter()
            .map(str::to_string)
            .collect();
        let scores = gguf.floats("tokenizer.ggml.scores")?.ok_or("scores")?;
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("tokens.json"))?)?;
        let want: Vec<&str> = reference["merges"]
            .as_array()
            .ok_or("merges")?
            .iter()
            .filter_map(serde_json::Value::as_str)
            .collect();
        assert!(want.len() > 300);
        let got: Vec<String> = super::merges_from_scores(&tokens, &scores)
            .into_iter()
            .map(|(l, r)| format!("{l} {r}"))
            .collect();
        assert_eq!(got, want);
        Ok(())
    }
}
