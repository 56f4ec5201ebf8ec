//! Decoder language models from GGUF files: the model
//! ([`wft_candle::models::llama`]), its tokenizer and chat template from the
//! file's metadata, adapters applied unmerged, and generation.

pub mod bench;
mod chat;
pub mod evaluate;
pub mod finetune;
pub mod requests;
mod tokenizer;

use std::path::{Path, PathBuf};

use candle_core::{D, Device, Tensor};
use wft_adapter::{AdapterModel, Mt19937};
use wft_candle::gguf::Gguf;
use wft_candle::models::llama::{self, Cache, Llama};
use wft_candle::{AdapterMix, Tuning, Weights};

pub use chat::{ChatTemplate, Message};
pub use tokenizer::LlmTokenizer;

use crate::{Error, Result};

/// How the next token is picked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties to the lowest id, as `argmax` does).
    Greedy,
    /// Drawn from the distribution at `temperature`, cut to the smallest set
    /// of tokens whose probability reaches `top_p`, from a seeded generator.
    Sample {
        /// Softmax temperature (> 0).
        temperature: f64,
        /// Nucleus mass in (0, 1].
        top_p: f64,
        /// The generator's seed.
        seed: u64,
    },
}

/// How a decoder holds its frozen weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseWeights {
    /// De-quantized to `f32` once, at load.
    #[default]
    F32,
    /// Kept in the file's quantization, de-quantized inside each product
    /// (QLoRA-style: the same values, a quarter of the memory or less).
    Quantized,
}

/// When batched generation stops a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// At EOS (not returned).
    AtEos,
    /// Never: exactly the tokens asked for.
    Never,
}

/// A decoder, its tokenizer and (when the file has one) chat template.
#[derive(Debug)]
pub struct Decoder {
    /// The model.
    pub model: Llama,
    /// Its frozen weights (shared with the model, not copied).
    weights: Weights,
    /// The GGUF file.
    path: PathBuf,
    /// The tokenizer.
    pub tokenizer: LlmTokenizer,
    /// The chat template, if the file carries one.
    pub chat: Option<ChatTemplate>,
}

pub use llama::base_shapes;

impl Decoder {
    /// Load a GGUF decoder, with the adapter folder `adapter` (PEFT's
    /// WaveFT, FourierFT or LoRA, or a native one) applied unmerged.
    ///
    /// # Errors
    /// The file's errors ([`wft_candle::gguf::GgufError`]), an architecture
    /// other than `llama`, a tokenizer or template this crate cannot build,
    /// and an adapter that does not fit the model.
    pub fn load(path: &Path, adapter: Option<&Path>) -> Result<Self> {
        Self::open(path, adapter, BaseWeights::F32)
    }

    /// [`Decoder::load`], holding the frozen weights as `base` says.
    ///
    /// # Errors
    /// As [`Decoder::load`].
    pub fn open(path: &Path, adapter: Option<&Path>, base: BaseWeights) -> Result<Self> {
        let gguf = Gguf::open(path)?;
        let (config, weights) = match base {
            BaseWeights::F32 => llama::load_gguf(&gguf)?,
            BaseWeights::Quantized => llama::load_gguf_quantized(&gguf)?,
        };
        let tokenizer = LlmTokenizer::from_gguf(&gguf)?;
        if tokenizer.vocab_size() != config.vocab_size {
            return Err(Error::Tokenizer(format!(
                "{} tokens in the vocabulary, {} rows in token_embd",
                tokenizer.vocab_size(),
                config.vocab_size
            )));
        }
        let chat = ChatTemplate::from_gguf(&gguf, &tokenizer)?;
        let model = Llama::new(&config, &weights, Tuning::Frozen)?;
        let mut decoder = Decoder {
            model,
            weights,
            path: path.to_path_buf(),
            tokenizer,
            chat,
        };
        if let Some(dir) = adapter {
            decoder.set_adapter(Some(dir))?;
        }
        Ok(decoder)
    }

    /// Apply the adapter folder `adapter` (unmerged) in place of the
    /// current one, or none. The frozen weights are shared, not reloaded.
    ///
    /// # Errors
    /// The folder's errors, and [`wft_candle::Error::Config`] for an
    /// adapter of modules this decoder does not have (another
    /// architecture's); the decoder is unchanged then.
    pub fn set_adapter(&mut self, adapter: Option<&Path>) -> Result<()> {
        let config = self.model.config().clone();
        self.model = match adapter {
            None => Llama::new(&config, &self.weights, Tuning::Frozen)?,
            Some(dir) => {
                let adapters = AdapterModel::load_for(dir, &base_shapes(&self.path, &config))?;
                self.set_adapters(&adapters)?;
                return Ok(());
            }
        };
        Ok(())
    }

    /// Apply in-memory adapters (unmerged), as [`Decoder::set_adapter`].
    ///
    /// # Errors
    /// As [`Decoder::set_adapter`].
    pub fn set_adapters(&mut self, adapters: &AdapterModel) -> Result<()> {
        let config = self.model.config().clone();
        self.model = Llama::new(&config, &self.weights, Tuning::Adapters(adapters))?;
        Ok(())
    }

    /// The frozen weights, under transformers' names.
    pub fn weights(&self) -> &Weights {
        &self.weights
    }

    /// The GGUF file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token ids of a prompt: through the chat template as one user
    /// turn with the assistant's turn opened when `chat`, as it is
    /// otherwise.
    ///
    /// # Errors
    /// [`Error::Usage`] when `chat` is asked of a file without a template,
    /// and the template's and tokenizer's errors.
    pub fn prompt_ids(&self, prompt: &str, chat: bool) -> Result<Vec<u32>> {
        if !chat {
            return self.tokenizer.encode(prompt);
        }
        let template = self
            .chat
            .as_ref()
            .ok_or_else(|| Error::Usage("the model file has no chat template (tokenizer.chat_template)".into()))?;
        let text = template.render(
            &[Message {
                role: "user".into(),
                content: prompt.into(),
            }],
            true,
        )?;
        self.tokenizer.encode_rendered(&text)
    }

    /// Up to `max_new` tokens after `prompt`, stopping at EOS (which is not
    /// returned), through the key/value cache.
    ///
    /// # Errors
    /// [`Error::Usage`] for an empty prompt or one that leaves no room in
    /// the context; the model's errors.
    pub fn generate(&self, prompt: &[u32], max_new: usize, sampling: Sampling) -> Result<Vec<u32>> {
        let context = self.model.config().max_position_embeddings;
        if prompt.is_empty() {
            return Err(Error::Usage("the prompt has no tokens".into()));
        }
        if prompt.len() >= context {
            return Err(Error::Usage(format!(
                "the prompt has {} tokens; the model's context is {context}",
                prompt.len()
            )));
        }
        let max_new = max_new.min(context - prompt.len());
        let mut rng = match sampling {
            Sampling::Sample { seed, .. } => Some(Mt19937::new(seed)),
            Sampling::Greedy => None,
        };
        let mut cache = Cache::new();
        let mut out = Vec::new();
        let mut input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
        for _ in 0..max_new {
            let hidden = self.model.hidden(&input, &mut cache, None)?;
            let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
            let logits = self.model.logits(&last)?.flatten_all()?;
            let next = pick(&logits, sampling, rng.as_mut())?;
            if Some(next) == self.tokenizer.eos {
                break;
            }
            out.push(next);
            input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        }
        Ok(out)
    }

    /// Greedy generation for a batch of prompts, decoded together through
    /// one cache: shorter prompts are left-padded (masked, and their
    /// positions start after the padding), so every row generates what it
    /// generates alone. Up to `max_new` tokens per row; with
    /// [`Stop::AtEos`] a row ends at EOS (not returned), with
    /// [`Stop::Never`] every row gets exactly `max_new` (for throughput
    /// measurements, like transformers' `min_new_tokens`).
    ///
    /// # Errors
    /// [`Error::Usage`] for an empty batch or prompt, or one that leaves no
    /// room in the context; the model's errors.
    pub fn generate_batch(&self, prompts: &[Vec<u32>], max_new: usize, stop: Stop) -> Result<Vec<Vec<u32>>> {
        self.generate_rows(prompts, &vec![max_new; prompts.len()], stop, None)
    }

    /// [`Decoder::generate_batch`] with a budget of new tokens per row and,
    /// with `mix`, each row's own adapter (a mixed-adapter batch through
    /// [`Llama::hidden_mixed`]: no merging, each row what the decoder with
    /// its adapter generates alone). Rows stop at their budget or at EOS
    /// (with [`Stop::AtEos`]).
    ///
    /// # Errors
    /// As [`Decoder::generate_batch`], and [`Error::Usage`] when `budgets`
    /// does not have one entry per prompt.
    pub fn generate_rows(
        &self,
        prompts: &[Vec<u32>],
        budgets: &[usize],
        stop: Stop,
        mix: Option<&AdapterMix<'_>>,
    ) -> Result<Vec<Vec<u32>>> {
        let len = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let max_new = budgets.iter().copied().max().unwrap_or(0);
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(Error::Usage("a batch needs non-empty prompts".into()));
        }
        if budgets.len() != prompts.len() {
            return Err(Error::Usage(format!(
                "{} budgets for {} prompts",
                budgets.len(),
                prompts.len()
            )));
        }
        if len + max_new > self.model.config().max_position_embeddings {
            return Err(Error::Usage(
                "the prompts and the new tokens pass the model's context".into(),
            ));
        }
        let b = prompts.len();
        let pad = self.tokenizer.eos.unwrap_or(0);
        let starts: Vec<usize> = prompts.iter().map(|p| len - p.len()).collect();
        let mut ids = Vec::with_capacity(b * len);
        let mut mask = Vec::with_capacity(b * (len + max_new));
        for (p, &s) in prompts.iter().zip(&starts) {
            ids.extend(std::iter::repeat_n(pad, s).chain(p.iter().copied()));
        }
        let mut input = Tensor::new(ids, &Device::Cpu)?.reshape((b, len))?;
        let mut cache = Cache::new();
        let mut out: Vec<Vec<u32>> = budgets.iter().map(|&n| Vec::with_capacity(n)).collect();
        let mut done: Vec<bool> = budgets.iter().map(|&n| n == 0).collect();
        for step in 0..max_new {
            if done.iter().all(|&d| d) {
                break;
            }
            let total = len + step;
            mask.clear();
            for &s in &starts {
                mask.extend((0..total).map(|j| if j < s { 0f32 } else { 1. }));
            }
            let m = Tensor::new(mask.as_slice(), &Device::Cpu)?.reshape((b, total))?;
            let hidden = match mix {
                None => self.model.hidden_padded(&input, &mut cache, Some(&m), &starts)?,
                Some(mix) => self
                    .model
                    .hidden_mixed(&input, &mut cache, Some(&m), Some(&starts), mix)?,
            };
            let last = hidden.narrow(1, hidden.dim(1)? - 1, 1)?;
            let logits = self.model.logits(&last)?.squeeze(1)?;
            let next = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
            for (((o, &n), d), &budget) in out.iter_mut().zip(&next).zip(done.iter_mut()).zip(budgets) {
                if stop == Stop::AtEos && Some(n) == self.tokenizer.eos {
                    *d = true;
                }
                if !*d {
                    o.push(n);
                    *d = o.len() >= budget;
                }
            }
            input = Tensor::new(next, &Device::Cpu)?.reshape((b, 1))?;
        }
        Ok(out)
    }

    /// [`Decoder::generate`] without the cache: every step runs the whole
    /// sequence again (the reference the cache is checked against).
    ///
    /// # Errors
    /// As [`Decoder::generate`].
    pub fn generate_uncached(&self, prompt: &[u32], max_new: usize) -> Result<Vec<u32>> {
        let mut seq = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_new {
            let ids = Tensor::new(seq.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
            let logits = self.model.forward(&ids, &mut Cache::new(), None)?;
            let next = pick(&logits.get(0)?.get(seq.len() - 1)?, Sampling::Greedy, None)?;
            if Some(next) == self.tokenizer.eos {
                break;
            }
            out.push(next);
            seq.push(next);
        }
        Ok(out)
    }
}

/// The next token from one position's logits.
fn pick(logits: &Tensor, sampling: Sampling, rng: Option<&mut Mt19937>) -> Result<u32> {
    let v: Vec<f32> = logits.to_vec1()?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(Error::Usage("the model produced non-finite logits".into()));
    }
    let argmax = || {
        v.iter()
            .enumerate()
            .fold(
                (0usize, f32::NEG_INFINITY),
                |(bi, bv), (i, &x)| if x > bv { (i, x) } else { (bi, bv) },
            )
            .0 as u32
    };
    let (Sampling::Sample { temperature, top_p, .. }, Some(rng)) = (sampling, rng) else {
        return Ok(argmax());
    };
    if temperature <= 0.0 {
        return Ok(argmax());
    }
    let probs = candle_nn::ops::softmax((logits / temperature)?.as_ref(), D::Minus1)?.to_vec1::<f32>()?;
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    let mut kept = Vec::new();
    let mut mass = 0.0f64;
    for i in order {
        kept.push(i);
        mass += f64::from(probs[i]);
        if mass >= top_p {
            break;
        }
    }
    let mut r = rng.next_f64() * mass;
    for &i in &kept {
        r -= f64::from(probs[i]);
        if r <= 0.0 {
            return Ok(i as u32);
        }
    }
    Ok(kept.last().copied().unwrap_or(0) as u32)
}
