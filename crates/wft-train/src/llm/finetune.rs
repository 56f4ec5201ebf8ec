//! Causal-LM fine-tuning of a [`Decoder`]: JSONL data (prompt/completion
//! pairs or chat conversations), the loss on completion tokens only,
//! right-padded batches with masks, AdamW with warm-up and linear decay.

use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use serde::Deserialize;
use wft_adapter::{AdapterConfig, AdapterModel};
use wft_candle::Adaptable;
use wft_candle::models::llama::Activations;

use super::{Decoder, Message};
use crate::{Error, Result};

/// One training example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Example {
    /// A prompt and the completion to learn.
    Completion {
        /// Given, not trained on.
        prompt: String,
        /// Trained on, then EOS.
        completion: String,
    },
    /// A conversation whose last message (the assistant's) is learnt.
    Chat(Vec<Message>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    prompt: Option<String>,
    completion: Option<String>,
    messages: Option<Vec<Message>>,
    /// A label for per-kind evaluation; training ignores it.
    kind: Option<String>,
}

/// The examples of a JSONL file: one object per line, either
/// `{"prompt": …, "completion": …}` or `{"messages": [{"role", "content"}, …]}`
/// ending with an assistant message, each with an optional `"kind"`
/// (ignored here; see [`read_eval_jsonl`]). Blank lines are skipped.
///
/// # Errors
/// [`Error::Data`] naming the line for invalid JSON, unknown or missing
/// fields, a conversation that does not end with the assistant, or a file
/// without examples; [`Error::Io`] when it cannot be read.
pub fn read_jsonl(path: &Path) -> Result<Vec<Example>> {
    Ok(read_eval_jsonl(path)?.into_iter().map(|e| e.example).collect())
}

/// The lines of a UTF-8 JSONL file parsed as `T`, blank lines skipped, each
/// with its 1-based line number.
///
/// # Errors
/// [`Error::Io`] when it cannot be read, [`Error::Data`] when it is not
/// UTF-8 or a line is not a `T` (naming the file and line).
pub(crate) fn jsonl_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<(usize, T)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        Error::Data(format!(
            "{}: not UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|v| (i + 1, v))
                .map_err(|e| line_error(path, i + 1, e.to_string()))
        })
        .collect()
}

/// An [`Error::Data`] at `path:line`.
pub(crate) fn line_error(path: &Path, line: usize, m: String) -> Error {
    Error::Data(format!("{}:{line}: {m}", path.display()))
}

/// [`read_jsonl`] keeping each line's `"kind"`.
///
/// # Errors
/// As [`read_jsonl`].
pub fn read_eval_jsonl(path: &Path) -> Result<Vec<super::evaluate::EvalExample>> {
    let mut out = Vec::new();
    for (n, l) in jsonl_lines::<Line>(path)? {
        let at = |m: String| line_error(path, n, m);
        let kind = l.kind.clone();
        let example = match l {
            Line {
                prompt: Some(prompt),
                completion: Some(completion),
                messages: None,
                ..
            } => Example::Completion { prompt, completion },
            Line {
                prompt: None,
                completion: None,
                messages: Some(m),
                ..
            } => {
                if m.last().is_none_or(|m| m.role != "assistant") {
                    return Err(at("the conversation must end with an assistant message".into()));
                }
                Example::Chat(m)
            }
            _ => return Err(at("give either `prompt` and `completion`, or `messages`".into())),
        };
        out.push(super::evaluate::EvalExample { example, kind });
    }
    if out.is_empty() {
        return Err(Error::Data(format!("{}: no examples", path.display())));
    }
    Ok(out)
}

/// An example's tokens, and which of them are learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    /// Every token.
    pub ids: Vec<u32>,
    /// How many leading tokens are the prompt (not learnt); the rest is.
    pub prompt_len: usize,
}

impl Decoder {
    /// The tokens of `example`. A completion pair is `prompt ‖ completion ‖
    /// EOS`, or with `chat` a user turn and the assistant's answer through
    /// the chat template; a conversation goes through the template, the
    /// prompt being the conversation up to the last message with the
    /// assistant's turn opened. At most `max_len` tokens are kept.
    ///
    /// # Errors
    /// [`Error::Data`] when no completion token is left within `max_len`;
    /// the template's and tokenizer's errors.
    pub fn tokenize_example(&self, example: &Example, chat: bool, max_len: usize) -> Result<Tokenized> {
        let template = || {
            self.chat
                .as_ref()
                .ok_or_else(|| Error::Usage("the model file has no chat template (tokenizer.chat_template)".into()))
        };
        let (mut ids, prompt_len) = match example {
            Example::Completion { prompt, completion } if !chat => {
                let mut ids = self.tokenizer.encode(prompt)?;
                let n = ids.len();
                ids.extend(self.tokenizer.encode(completion)?);
                ids.extend(self.tokenizer.eos);
                (ids, n)
            }
            Example::Completion { prompt, completion } => {
                let messages = [
                    Message {
                        role: "user".into(),
                        content: prompt.clone(),
                    },
                    Message {
                        role: "assistant".into(),
                        content: completion.clone(),
                    },
                ];
                self.split_chat(template()?, &messages)?
            }
            Example::Chat(messages) => self.split_chat(template()?, messages)?,
        };
        ids.truncate(max_len);
        if ids.len() <= prompt_len || prompt_len == 0 {
            return Err(Error::Data(format!(
                "an example keeps no completion token within {max_len} tokens (prompt of {prompt_len})"
            )));
        }
        Ok(Tokenized { ids, prompt_len })
    }

    /// The ids of a whole conversation, and how many of them render the
    /// conversation without its last message (with the assistant's turn
    /// opened).
    fn split_chat(&self, template: &super::ChatTemplate, messages: &[Message]) -> Result<(Vec<u32>, usize)> {
        let (last, head) = messages
            .split_last()
            .ok_or_else(|| Error::Data("an empty conversation".into()))?;
        let prompt = self.tokenizer.encode_rendered(&template.render(head, true)?)?;
        let full = self.tokenizer.encode_rendered(&template.render(messages, false)?)?;
        if !full.starts_with(&prompt) || last.role != "assistant" {
            return Err(Error::Data(
                "the chat template does not render the conversation as its prompt followed by the answer".into(),
            ));
        }
        Ok((full, prompt.len()))
    }
}

/// A padded batch: inputs, next-token targets, which targets count, and the
/// key mask (all `batch × len`).
#[derive(Debug)]
pub struct Batch {
    /// Tokens fed (`u32`).
    pub inputs: Tensor,
    /// The token each position should predict (`u32`).
    pub targets: Tensor,
    /// 1 where a target is a completion token, 0 elsewhere.
    pub weights: Tensor,
    /// 1 for tokens, 0 for padding.
    pub mask: Tensor,
}

/// Right-pad `examples` with `pad` into one batch of their longest length
/// minus one (the last token is only a target).
///
/// # Errors
/// candle's errors.
pub fn batch(examples: &[&Tokenized], pad: u32) -> Result<Batch> {
    let len = examples.iter().map(|e| e.ids.len() - 1).max().unwrap_or(0);
    let (mut inputs, mut targets, mut weights, mut mask) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in examples {
        let n = e.ids.len() - 1;
        for p in 0..len {
            let real = p < n;
            inputs.push(if real { e.ids[p] } else { pad });
            targets.push(if real { e.ids[p + 1] } else { pad });
            // Position p predicts token p + 1: learnt when that is a completion token.
            weights.push(if real && p + 1 >= e.prompt_len { 1f32 } else { 0. });
            mask.push(if real { 1f32 } else { 0. });
        }
    }
    let shape = (examples.len(), len);
    Ok(Batch {
        inputs: Tensor::from_vec(inputs, shape, &Device::Cpu)?,
        targets: Tensor::from_vec(targets, shape, &Device::Cpu)?,
        weights: Tensor::from_vec(weights, shape, &Device::Cpu)?,
        mask: Tensor::from_vec(mask, shape, &Device::Cpu)?,
    })
}

/// How to fine-tune.
#[derive(Debug, Clone)]
pub struct LmConfig {
    /// Epochs, batch, learning rate, weight decay, shuffling seed.
    pub optimization: crate::train::Optimization,
    /// Whether the backward pass keeps or recomputes the blocks'
    /// activations (memory against one more forward pass).
    pub activations: Activations,
}

/// What fine-tuning did (the loss before each step, seconds per step).
pub type LmHistory = crate::train::Steps;

/// The masked next-token loss of one batch and the gradients of the
/// decoder's variables, its activations kept or recomputed.
///
/// # Errors
/// The model's errors.
pub fn batch_grads(decoder: &Decoder, b: &Batch, activations: Activations) -> Result<(f32, GradStore)> {
    Ok(decoder
        .model
        .loss_and_grads(&b.inputs, &b.mask, &b.targets, &b.weights, activations)?)
}

/// Fine-tune `decoder`'s adapters (`adapters`, applied to it first) on
/// `data`; returns the trained adapters and the history. `on_step(step,
/// total, loss)` runs after every step.
///
/// # Errors
/// [`Error::Diverged`] when the loss is not finite; the model's errors.
pub fn finetune(
    decoder: &mut Decoder,
    adapters: &AdapterModel,
    data: &[Tokenized],
    cfg: &LmConfig,
    on_step: &mut dyn FnMut(usize, usize, f32),
) -> Result<(AdapterModel, LmHistory)> {
    decoder.set_adapters(adapters)?;
    let pad = decoder.tokenizer.eos.unwrap_or(0);
    let history = {
        let decoder = &*decoder;
        crate::train::optimize(decoder.model.vars(), data.len(), &cfg.optimization, on_step, |chunk| {
            let examples: Vec<&Tokenized> = chunk.iter().map(|&i| &data[i]).collect();
            batch_grads(decoder, &batch(&examples, pad)?, cfg.activations)
        })?
    };
    Ok((decoder.model.adapters(adapters)?, history))
}

/// New adapters of `config` for `decoder`'s projections.
///
/// # Errors
/// As [`AdapterModel::new_for_shapes`].
pub fn new_adapters(decoder: &Decoder, config: AdapterConfig, seed: u64) -> Result<AdapterModel> {
    let shapes = super::base_shapes(decoder.path(), decoder.model.config());
    Ok(AdapterModel::new_for_shapes(config, &shapes, seed)?)
}
