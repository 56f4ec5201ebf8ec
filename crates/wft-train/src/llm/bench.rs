//! Timing a decoder's training step and generation (`wft-train lm-bench`),
//! measured the way `scripts/bench_peft_decoder.py` measures PEFT on torch.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::Serialize;
use wft_adapter::ModuleSpec;
use wft_candle::Adaptable;
use wft_candle::Tuning;
use wft_candle::models::llama::{Cache, Llama};

use super::finetune::new_adapters;
use super::{Decoder, Stop};
use crate::train::median;
use crate::{Error, Method, Result};

/// One method's median step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRow {
    /// The method.
    pub method: String,
    /// Trainable parameters.
    pub trainable: usize,
    /// Median seconds per step (forward, backward, AdamW).
    pub step_secs: f64,
    /// `step_secs` over the frozen step.
    pub ratio: f64,
}

/// What [`bench()`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct DecoderBench {
    /// Timed rounds.
    pub rounds: usize,
    /// Sequences per batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub len: usize,
    /// Median frozen step: forward and the backward pass to the input
    /// embeddings, no weight gradient.
    pub frozen_step_secs: f64,
    /// Each method's step.
    pub rows: Vec<StepRow>,
    /// Generated tokens per second, greedy, batch 1.
    pub generate_batch1_tok_s: f64,
    /// Generated tokens per second, greedy, batch 8 (8 rows × new tokens / s).
    pub generate_batch8_tok_s: f64,
}

/// The next-token loss over every position of `ids` (`batch × len`).
fn lm_loss(model: &Llama, embedded: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (b, t) = ids.dims2()?;
    let inputs = embedded.narrow(1, 0, t - 1)?;
    let targets = ids.narrow(1, 1, t - 1)?.contiguous()?;
    let hidden = model.decode(&inputs, &mut Cache::new(), None)?;
    let weights = Tensor::ones((b, t - 1), candle_core::DType::F32, &Device::Cpu)?;
    Ok(model.selected_loss(&hidden, &targets, &weights)?)
}

/// Time the frozen step and each method's step on `batches` (each `batch ×
/// len` ids) over `rounds` rounds after one warm-up round, every round one
/// frozen step and one step of every method on the same batch; then greedy
/// generation of `new_tokens` after `prompt` at batch 1 and 8, without
/// adapters.
///
/// # Errors
/// [`Error::Usage`] for a method without adapters; the model's errors.
pub fn bench(
    decoder: &Decoder,
    methods: &[Method],
    targets: &[String],
    batches: &[Tensor],
    rounds: usize,
    (prompt, new_tokens): (&[u32], usize),
) -> Result<DecoderBench> {
    let config = decoder.model.config().clone();
    let frozen = Llama::new(&config, decoder.weights(), Tuning::Frozen)?;
    let mut runs = Vec::new();
    for &m in methods {
        let cfg = m
            .adapter_config_for(0, ModuleSpec::Names(targets.to_vec()))
            .ok_or_else(|| Error::Usage(format!("`{m}` is not an adapter method")))?;
        let adapters = new_adapters(decoder, cfg, 0)?;
        let model = Llama::new(&config, decoder.weights(), Tuning::Adapters(&adapters))?;
        let opt = AdamW::new(
            model.vars(),
            ParamsAdamW {
                lr: 1e-4,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        runs.push((m, adapters.num_params(), model, opt, Vec::new()));
    }
    let mut frozen_times = Vec::new();
    for r in 0..=rounds {
        let ids = &batches[r % batches.len()];
        let t = Instant::now();
        let x = Var::from_tensor(&frozen.embed(ids)?)?;
        let grads = lm_loss(&frozen, x.as_tensor(), ids)?.backward()?;
        if grads.get(x.as_tensor()).is_none() {
            return Err(Error::Data("the frozen step computed no input gradient".into()));
        }
        if r > 0 {
            frozen_times.push(t.elapsed().as_secs_f64());
        }
        for (_, _, model, opt, times) in runs.iter_mut() {
            let t = Instant::now();
            let loss = lm_loss(model, &model.embed(ids)?, ids)?;
            opt.backward_step(&loss)?;
            if r > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
    }
    let frozen_step_secs = median(&mut frozen_times);
    let rows = runs
        .into_iter()
        .map(|(m, trainable, _, _, mut times)| {
            let s = median(&mut times);
            StepRow {
                method: m.to_string(),
                trainable,
                step_secs: s,
                ratio: s / frozen_step_secs,
            }
        })
        .collect();
    let tok_s = |b: usize| -> Result<f64> {
        let prompts = vec![prompt.to_vec(); b];
        decoder.generate_batch(&prompts, 2, Stop::Never)?; // warm-up
        let t = Instant::now();
        decoder.generate_batch(&prompts, new_tokens, Stop::Never)?;
        Ok((b * new_tokens) as f64 / t.elapsed().as_secs_f64())
    };
    Ok(DecoderBench {
        rounds,
        batch: batches.first().map_or(0, |b| b.dim(0).unwrap_or(0)),
        len: batches.first().map_or(0, |b| b.dim(1).unwrap_or(0)),
        frozen_step_secs,
        rows,
        generate_batch1_tok_s: tok_s(1)?,
        generate_batch8_tok_s: tok_s(8)?,
    })
}
