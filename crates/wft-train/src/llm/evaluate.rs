//! Held-out evaluation of a decoder: the next-token loss on the completion
//! tokens, and greedy generations scored with BLEU, chrF and ROUGE-L
//! ([`crate::metrics`]), overall and per example kind (exact match for
//! label-like answers).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wft_candle::models::llama::Cache;

use super::finetune::{Example, Tokenized, batch};
use super::{Decoder, Stop};
use crate::metrics::{bleu, chrf, rouge_l};
use crate::{Error, Result};

/// One held-out example and its kind (for per-kind metrics), if given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalExample {
    /// The prompt and the reference answer.
    pub example: Example,
    /// Its kind (`"summarise"`, `"section"`, …), if the file names one.
    pub kind: Option<String>,
}

/// Scores of one group of examples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Examples in the group.
    pub examples: usize,
    /// Corpus BLEU (sacrebleu's defaults), points.
    pub bleu: f64,
    /// Corpus chrF (sacrebleu's defaults), points.
    pub chrf: f64,
    /// Mean ROUGE-L F-measure (rouge-score), points.
    pub rouge_l: f64,
    /// Share of generations equal to the reference after trimming, lower
    /// casing and dropping a final period, percent.
    pub exact_match: f64,
}

/// What [`evaluate`] reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenerationReport {
    /// Mean next-token cross-entropy over every completion token.
    pub loss: f64,
    /// Completion tokens the loss covers.
    pub loss_tokens: usize,
    /// Over every example.
    pub overall: Scores,
    /// Per kind, for examples that name one.
    pub by_kind: BTreeMap<String, Scores>,
    /// The greedy generations, in order.
    pub generations: Vec<String>,
}

/// The reference answer of an example.
fn reference(e: &Example) -> &str {
    match e {
        Example::Completion { completion, .. } => completion,
        Example::Chat(messages) => messages.last().map_or("", |m| m.content.as_str()),
    }
}

fn normalised(s: &str) -> String {
    s.trim().trim_end_matches('.').trim().to_lowercase()
}

fn scores(hyps: &[&str], refs: &[&str]) -> Scores {
    let exact = hyps
        .iter()
        .zip(refs)
        .filter(|(h, r)| normalised(h) == normalised(r))
        .count();
    Scores {
        examples: hyps.len(),
        bleu: bleu(hyps, refs),
        chrf: chrf(hyps, refs),
        rouge_l: rouge_l(hyps, refs),
        exact_match: if hyps.is_empty() {
            0.0
        } else {
            100.0 * exact as f64 / hyps.len() as f64
        },
    }
}

/// Evaluate `decoder` (with whatever adapters it has) on `examples`: the
/// loss over completion tokens (examples cut to `max_len` tokens), and up to
/// `max_new` greedily generated tokens per prompt, `batch` prompts at a
/// time.
///
/// # Errors
/// [`Error::Data`] for no examples or one without a completion token within
/// `max_len`; the model's errors.
pub fn evaluate(
    decoder: &Decoder,
    examples: &[EvalExample],
    chat: bool,
    max_len: usize,
    max_new: usize,
    batch_size: usize,
) -> Result<GenerationReport> {
    if examples.is_empty() {
        return Err(Error::Data("no examples to evaluate".into()));
    }
    let batch_size = batch_size.max(1);
    let pad = decoder.tokenizer.eos.unwrap_or(0);
    // The loss, weighted by each batch's completion tokens.
    let cut = examples
        .iter()
        .map(|e| decoder.tokenize_example(&e.example, chat, max_len))
        .collect::<Result<Vec<Tokenized>>>()?;
    let (mut total, mut tokens) = (0f64, 0usize);
    for chunk in cut.chunks(batch_size) {
        let refs: Vec<&Tokenized> = chunk.iter().collect();
        let b = batch(&refs, pad)?;
        let n = b.weights.sum_all()?.to_scalar::<f32>()? as usize;
        let hidden = decoder.model.hidden(&b.inputs, &mut Cache::new(), Some(&b.mask))?;
        let loss = decoder.model.selected_loss(&hidden, &b.targets, &b.weights)?;
        total += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        tokens += n;
    }
    // Greedy generations from the whole prompts.
    let prompts = examples
        .iter()
        .map(|e| {
            let t = decoder.tokenize_example(&e.example, chat, usize::MAX)?;
            Ok(t.ids[..t.prompt_len].to_vec())
        })
        .collect::<Result<Vec<Vec<u32>>>>()?;
    let mut generations = Vec::with_capacity(examples.len());
    for chunk in prompts.chunks(batch_size) {
        for ids in decoder.generate_batch(chunk, max_new, Stop::AtEos)? {
            generations.push(decoder.tokenizer.decode(&ids)?.trim().to_string());
        }
    }
    let refs: Vec<&str> = examples.iter().map(|e| reference(&e.example).trim()).collect();
    let hyps: Vec<&str> = generations.iter().map(String::as_str).collect();
    let mut by_kind: BTreeMap<String, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for ((e, h), r) in examples.iter().zip(&hyps).zip(&refs) {
        if let Some(k) = &e.kind {
            let g = by_kind.entry(k.clone()).or_default();
            g.0.push(h);
            g.1.push(r);
        }
    }
    Ok(GenerationReport {
        loss: if tokens == 0 { f64::NAN } else { total / tokens as f64 },
        loss_tokens: tokens,
        overall: scores(&hyps, &refs),
        by_kind: by_kind.into_iter().map(|(k, (h, r))| (k, scores(&h, &r))).collect(),
        generations,
    })
}
