//! Timing a ViT's training step and its embedding throughput
//! (`wft-train vision-bench`): the frozen step against every method's step
//! on the same batch, and images per second of the encoder alone, the
//! number `scripts/bench_dinov2_onnx.py` measures for onnxruntime.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::Serialize;
use wft_adapter::{AdapterModel, ModuleSpec, Mt19937, TensorFile};
use wft_candle::models::vit::{Config, Vit};
use wft_candle::{ImageClassifier, Pooling, Tuning, Weights};

use super::labels_tensor;
use crate::llm::bench::StepRow;
use crate::train::median;
use crate::{Error, Method, Result};

/// What a vision benchmark times.
#[derive(Debug, Clone)]
pub struct VisionBenchSpec<'a> {
    /// The methods (`head`, `full`, adapters).
    pub methods: &'a [Method],
    /// The modules the adapters adapt.
    pub targets: &'a [String],
    /// The head's input.
    pub pooling: Pooling,
    /// Classes of the head.
    pub classes: usize,
    /// Training images' side, in pixels.
    pub size: usize,
    /// Training images per step.
    pub batch: usize,
    /// Embedding: images' side and images per call.
    pub embed: (usize, usize),
    /// Timed rounds (after one warm-up round).
    pub rounds: usize,
}

/// What [`bench()`] measured.
#[derive(Debug, Clone, Serialize)]
pub struct VisionBench {
    /// Timed rounds.
    pub rounds: usize,
    /// Images per training step.
    pub batch: usize,
    /// Training images' side.
    pub size: usize,
    /// Median frozen step over every method's block: forward and the
    /// backward pass down to the pixels, no weight gradient but the head's.
    pub frozen_step_secs: f64,
    /// Each method's step (forward, backward, AdamW); its `ratio` is over
    /// the frozen steps timed beside it, round by round.
    pub rows: Vec<StepRow>,
    /// Embedding images' side.
    pub embed_size: usize,
    /// Images per embedding call.
    pub embed_batch: usize,
    /// Median images per second of the encoder's forward pass (no graph).
    pub embed_images_per_sec: f64,
}

/// Normal pixels, `batch × 3 × size × size`.
fn pixels(batch: usize, size: usize, g: &mut Mt19937) -> Result<Tensor> {
    let v: Vec<f32> = (0..batch * 3 * size * size).map(|_| g.next_normal() as f32).collect();
    Ok(Tensor::from_vec(v, (batch, 3, size, size), &Device::Cpu)?)
}

/// Time each method's step against the frozen step on random pixels (per
/// method, rounds of one frozen step and one method step on the same
/// batch), then the encoder's forward pass alone at the embedding size.
///
/// # Errors
/// The model's and the adapters' errors.
pub fn bench(config: &Config, weights: &Weights, base: &TensorFile, spec: &VisionBenchSpec<'_>) -> Result<VisionBench> {
    let seed = 0;
    let classifier = |tuning: Tuning<'_>| -> Result<ImageClassifier> {
        Ok(ImageClassifier::new(
            Vit::new(config, weights, tuning)?,
            spec.pooling,
            spec.classes,
            seed,
        )?)
    };
    let frozen = classifier(Tuning::Frozen)?;
    let mut g = Mt19937::new(17);
    let labels: Vec<u32> = (0..spec.batch).map(|i| (i % spec.classes.max(1)) as u32).collect();
    let labels = labels_tensor(&labels)?;
    let frozen_step = |x: &Tensor| -> Result<f64> {
        let t = Instant::now();
        let input = Var::from_tensor(x)?;
        let loss = candle_nn::loss::cross_entropy(&frozen.logits(input.as_tensor())?, &labels)?;
        if loss.backward()?.get(input.as_tensor()).is_none() {
            return Err(Error::Data("the frozen step computed no input gradient".into()));
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // Each method in its own block of rounds, every round a frozen step and
    // a step of the method on the same batch, so that the ratio compares
    // neighbours (a burst of other load lands on both) and no method's
    // memory (full fine-tuning's optimizer state) sits beside another's.
    let mut rows = Vec::new();
    let mut all_frozen = Vec::new();
    for &m in spec.methods {
        let adapters: Option<AdapterModel> = m
            .adapter_config_for(seed, ModuleSpec::Names(spec.targets.to_vec()))
            .map(|c| AdapterModel::new_for_base(c, base, seed))
            .transpose()?;
        let clf = classifier(match (&adapters, m) {
            (Some(a), _) => Tuning::Adapters(a),
            (None, Method::Full) => Tuning::Full,
            (None, _) => Tuning::Frozen,
        })?;
        let mut opt = AdamW::new(
            clf.vars(),
            ParamsAdamW {
                lr: 1e-4,
                weight_decay: 0.0,
                ..Default::default()
            },
        )?;
        let (mut frozen_times, mut times) = (Vec::new(), Vec::new());
        for r in 0..=spec.rounds {
            let x = pixels(spec.batch, spec.size, &mut g)?;
            let f = frozen_step(&x)?;
            let t = Instant::now();
            let loss = candle_nn::loss::cross_entropy(&clf.logits(&x)?, &labels)?;
            opt.backward_step(&loss)?;
            if r > 0 {
                frozen_times.push(f);
                times.push(t.elapsed().as_secs_f64());
            }
        }
        all_frozen.extend_from_slice(&frozen_times);
        let (trainable, frozen_secs, s) = (clf.num_trainable(), median(&mut frozen_times), median(&mut times));
        rows.push(StepRow {
            method: m.to_string(),
            trainable: trainable.0 + trainable.1,
            step_secs: s,
            ratio: s / frozen_secs,
        });
    }
    let frozen_step_secs = median(&mut all_frozen);
    drop(frozen);
    let (embed_size, embed_batch) = spec.embed;
    let vit = Vit::new(config, weights, Tuning::Frozen)?;
    let x = pixels(embed_batch, embed_size, &mut g)?;
    let mut rates = Vec::new();
    for r in 0..=spec.rounds {
        let t = Instant::now();
        vit.forward(&x)?;
        if r > 0 {
            rates.push(embed_batch as f64 / t.elapsed().as_secs_f64());
        }
    }
    Ok(VisionBench {
        rounds: spec.rounds,
        batch: spec.batch,
        size: spec.size,
        frozen_step_secs,
        rows,
        embed_size,
        embed_batch,
        embed_images_per_sec: median(&mut rates),
    })
}
