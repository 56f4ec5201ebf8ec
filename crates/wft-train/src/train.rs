//! Building a model for a method, training it, evaluating it, and checking
//! that what it saves loads and merges to the same function.

use std::path::Path;
use std::time::Instant;

use candle_core::{D, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};
use wft_adapter::{AdapterModel, Mt19937, TensorFile};
use wft_candle::Adaptable;
use wft_candle::Classifier;
use wft_candle::models::bert::{Bert, Config};
use wft_candle::{Tuning, Weights};

use crate::text::{Ids, TextEncoder};
use crate::{Method, Result};

/// A tokenised example.
pub type Tokenised = (Ids, usize);

/// Training settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Passes over the training split.
    pub epochs: usize,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate of the method's own parameters (AdamW, no weight
    /// decay; linear warm-up over the first 10% of steps, then linear decay
    /// to 0).
    pub lr: f64,
    /// Peak learning rate of the classification head (same schedule).
    pub head_lr: f64,
    /// Seed of the head's initialisation, the adapters' locations and the
    /// batch order.
    pub seed: u64,
    /// Longest input in tokens (with `[CLS]` and the `[SEP]`s); longer
    /// texts are truncated.
    #[serde(default = "default_max_len")]
    pub max_len: usize,
}

fn default_max_len() -> usize {
    crate::MAX_LEN
}

/// A model built for one method.
#[derive(Debug)]
pub struct Model {
    /// The method.
    pub method: Method,
    /// Encoder and head.
    pub classifier: Classifier,
    /// The adapters as built (config and modules), for saving.
    pub adapters: Option<AdapterModel>,
    /// The encoder's trainable variables (empty for head-only).
    pub encoder_vars: Vec<Var>,
}

impl Model {
    /// Build `method` on the checkpoint (`weights`, also open as `base` for
    /// `wft-adapter`), with a new head for `classes` classes.
    ///
    /// # Errors
    /// Shape and config errors from the encoder and the adapters.
    pub fn new(
        method: Method,
        config: &Config,
        weights: &Weights,
        base: &TensorFile,
        classes: usize,
        seed: u64,
    ) -> Result<Self> {
        let adapters = method.adapters(base, seed)?;
        let tuning = match (&adapters, method) {
            (Some(a), _) => Tuning::Adapters(a),
            (None, Method::Full) => Tuning::Full,
            (None, _) => Tuning::Frozen,
        };
        let bert = Bert::new(config, weights, tuning)?;
        let encoder_vars = bert.vars();
        let classifier = Classifier::new(bert, classes, seed)?;
        Ok(Model {
            method,
            classifier,
            adapters,
            encoder_vars,
        })
    }

    /// Trainable parameters: (encoder, head).
    pub fn num_trainable(&self) -> (usize, usize) {
        self.classifier.num_trainable()
    }
}

/// What a training run recorded.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// The loss of every step.
    pub losses: Vec<f32>,
    /// Validation accuracy after each epoch.
    pub val_acc: Vec<f64>,
    /// Wall time of every step (forward, backward, optimizer), seconds.
    pub step_secs: Vec<f64>,
}

/// Fisher–Yates with MT19937.
pub(crate) fn shuffle<T>(v: &mut [T], g: &mut Mt19937) {
    for i in (1..v.len()).rev() {
        let j = (g.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// The learning-rate factor at `step` of `total`: a linear warm-up over
/// `warmup` steps, then a linear decay to zero.
pub(crate) fn schedule(step: usize, total: usize, warmup: usize) -> f64 {
    if step < warmup {
        (step + 1) as f64 / warmup as f64
    } else {
        total.saturating_sub(step) as f64 / total.saturating_sub(warmup).max(1) as f64
    }
}

/// The optimisation `wft-train vision` and `lm` share: AdamW with one
/// learning rate, linear warm-up over the first 10% of the steps, then
/// linear decay to 0.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimization {
    /// Passes over the data.
    pub epochs: usize,
    /// Examples per step.
    pub batch: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW's weight decay.
    pub weight_decay: f64,
    /// Shuffling seed.
    pub seed: u64,
}

/// What [`optimize`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Steps {
    /// The loss of each step's batch.
    pub losses: Vec<f32>,
    /// Seconds per step.
    pub step_secs: Vec<f64>,
}

/// Train `vars` on `len` examples: every epoch a fresh shuffle, cut into
/// batches; `batch_grads(indices)` gives a batch's loss and gradients, and
/// AdamW steps on them. `on_step(step, total, loss)` runs after every step.
///
/// # Errors
/// [`crate::Error::Diverged`] when a loss is not finite; `batch_grads`' and
/// candle's errors.
pub fn optimize(
    vars: Vec<Var>,
    len: usize,
    cfg: &Optimization,
    on_step: &mut dyn FnMut(usize, usize, f32),
    mut batch_grads: impl FnMut(&[usize]) -> Result<(f32, candle_core::backprop::GradStore)>,
) -> Result<Steps> {
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.lr,
            weight_decay: cfg.weight_decay,
            ..Default::default()
        },
    )?;
    let bs = cfg.batch.max(1);
    let total = len.div_ceil(bs) * cfg.epochs;
    let warmup = (total / 10).max(1);
    let mut order: Vec<usize> = (0..len).collect();
    let mut g = Mt19937::new(cfg.seed ^ 0x5eed);
    let mut steps = Steps::default();
    for _ in 0..cfg.epochs {
        shuffle(&mut order, &mut g);
        for chunk in order.chunks(bs) {
            let t = Instant::now();
            let (l, grads) = batch_grads(chunk)?;
            let step = steps.losses.len();
            if !l.is_finite() {
                return Err(crate::Error::Diverged { step });
            }
            opt.set_learning_rate(cfg.lr * schedule(step, total, warmup));
            opt.step(&grads)?;
            steps.losses.push(l);
            steps.step_secs.push(t.elapsed().as_secs_f64());
            on_step(step + 1, total, l);
        }
    }
    Ok(steps)
}

/// Cross-entropy of a batch.
fn loss_of(classifier: &Classifier, enc: &TextEncoder, batch: &[&Tokenised]) -> Result<Tensor> {
    let ids: Vec<&Ids> = batch.iter().map(|(i, _)| i).collect();
    let labels: Vec<u32> = batch.iter().map(|(_, l)| *l as u32).collect();
    let b = enc.batch(&ids)?;
    let logits = classifier.logits_segments(&b.input_ids, &b.attention_mask, b.token_type_ids.as_ref())?;
    let labels = Tensor::from_vec(labels, batch.len(), &Device::Cpu)?;
    Ok(candle_nn::loss::cross_entropy(&logits, &labels)?)
}

/// One optimizer per parameter group (the method's own, the head's),
/// stepping together on the same gradients.
#[derive(Debug)]
pub struct Trainer<'a> {
    model: &'a Model,
    head: AdamW,
    encoder: Option<AdamW>,
    lr: f64,
    head_lr: f64,
}

impl<'a> Trainer<'a> {
    /// AdamW (no weight decay) for the head and, unless head-only, the
    /// encoder's variables, at `cfg`'s peak learning rates.
    ///
    /// # Errors
    /// candle's errors.
    pub fn new(model: &'a Model, cfg: &TrainConfig) -> Result<Self> {
        let params = |lr| ParamsAdamW {
            lr,
            weight_decay: 0.0,
            ..Default::default()
        };
        let head_vars: Vec<Var> = model
            .classifier
            .vars()
            .into_iter()
            .skip(model.encoder_vars.len())
            .collect();
        Ok(Trainer {
            model,
            head: AdamW::new(head_vars, params(cfg.head_lr))?,
            encoder: if model.encoder_vars.is_empty() {
                None
            } else {
                Some(AdamW::new(model.encoder_vars.clone(), params(cfg.lr))?)
            },
            lr: cfg.lr,
            head_lr: cfg.head_lr,
        })
    }

    /// One step on `batch` with the learning rates scaled by `factor`;
    /// returns the loss before the step.
    ///
    /// # Errors
    /// candle's errors.
    pub fn step(&mut self, enc: &TextEncoder, batch: &[&Tokenised], factor: f64) -> Result<f32> {
        let loss = loss_of(&self.model.classifier, enc, batch)?;
        let grads = loss.backward()?;
        self.head.set_learning_rate(self.head_lr * factor);
        self.head.step(&grads)?;
        if let Some(o) = self.encoder.as_mut() {
            o.set_learning_rate(self.lr * factor);
            o.step(&grads)?;
        }
        Ok(loss.to_scalar::<f32>()?)
    }
}

/// Train `model` on `train`, evaluating on `val` after each epoch;
/// `on_step(step, total, loss)` is called after every step.
///
/// # Errors
/// candle's errors, and [`crate::Error::Diverged`] when the loss becomes NaN.
pub fn train(
    model: &Model,
    enc: &TextEncoder,
    train: &[Tokenised],
    val: &[Tokenised],
    cfg: &TrainConfig,
    on_step: &mut dyn FnMut(usize, usize, f32),
) -> Result<History> {
    let mut trainer = Trainer::new(model, cfg)?;
    let per_epoch = train.len().div_ceil(cfg.batch.max(1));
    let total = per_epoch * cfg.epochs;
    let warmup = (total / 10).max(1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut g = Mt19937::new(cfg.seed ^ 0x5eed);
    let mut history = History::default();
    let mut step = 0;
    for _ in 0..cfg.epochs {
        shuffle(&mut order, &mut g);
        for chunk in order.chunks(cfg.batch.max(1)) {
            let t = Instant::now();
            let factor = schedule(step, total, warmup);
            let batch: Vec<&Tokenised> = chunk.iter().map(|&i| &train[i]).collect();
            let l = trainer.step(enc, &batch, factor)?;
            history.step_secs.push(t.elapsed().as_secs_f64());
            if !l.is_finite() {
                return Err(crate::Error::Diverged { step });
            }
            history.losses.push(l);
            step += 1;
            on_step(step, total, l);
        }
        history.val_acc.push(accuracy(&model.classifier, enc, val, cfg.batch)?);
    }
    Ok(history)
}

/// Logits of `examples`, in order, `len × classes`.
///
/// # Errors
/// candle's errors.
pub fn logits(classifier: &Classifier, enc: &TextEncoder, examples: &[Tokenised], batch: usize) -> Result<Tensor> {
    let mut parts = Vec::new();
    for chunk in examples.chunks(batch.max(1)) {
        let ids: Vec<&Ids> = chunk.iter().map(|(i, _)| i).collect();
        let b = enc.batch(&ids)?;
        parts.push(
            classifier
                .logits_segments(&b.input_ids, &b.attention_mask, b.token_type_ids.as_ref())?
                .detach(),
        );
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// Whether each of `examples`, in order, is classified correctly.
///
/// # Errors
/// candle's errors.
pub fn correct(classifier: &Classifier, enc: &TextEncoder, examples: &[Tokenised], batch: usize) -> Result<Vec<bool>> {
    if examples.is_empty() {
        return Ok(Vec::new());
    }
    let pred = logits(classifier, enc, examples, batch)?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    Ok(pred.iter().zip(examples).map(|(p, (_, l))| *p as usize == *l).collect())
}

/// Fraction of `examples` classified correctly (0 for none).
///
/// # Errors
/// candle's errors.
pub fn accuracy(classifier: &Classifier, enc: &TextEncoder, examples: &[Tokenised], batch: usize) -> Result<f64> {
    let c = correct(classifier, enc, examples, batch)?;
    if c.is_empty() {
        return Ok(0.0);
    }
    Ok(c.iter().filter(|c| **c).count() as f64 / c.len() as f64)
}

/// Seconds of one step of the frozen model with input gradients on
/// `batch`: the encoder frozen, its embedded input a variable, forward plus
/// the backward pass down to that input (no weight gradients).
///
/// # Errors
/// candle's errors, and [`crate::Error::Data`] if no input gradient came out.
pub fn frozen_step(frozen: &Classifier, enc: &TextEncoder, batch: &[&Tokenised]) -> Result<f64> {
    let ids: Vec<&Ids> = batch.iter().map(|(i, _)| i).collect();
    let labels: Vec<u32> = batch.iter().map(|(_, l)| *l as u32).collect();
    let t = Instant::now();
    let b = enc.batch(&ids)?;
    let x = Var::from_tensor(&frozen.bert().embed_segments(&b.input_ids, b.token_type_ids.as_ref())?)?;
    let logits = frozen.logits_from_embedded(x.as_tensor(), &b.attention_mask)?;
    let labels = Tensor::from_vec(labels, batch.len(), &Device::Cpu)?;
    let grads = candle_nn::loss::cross_entropy(&logits, &labels)?.backward()?;
    if grads.get(x.as_tensor()).is_none() {
        return Err(crate::Error::Data("the frozen step computed no input gradient".into()));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds to embed `batch` with the frozen encoder: its mean-pooled last
/// states, no graph (what `wft-train embed` computes per batch).
///
/// # Errors
/// candle's errors.
pub fn embed_step(frozen: &Classifier, enc: &TextEncoder, batch: &[&Tokenised]) -> Result<f64> {
    let ids: Vec<&Ids> = batch.iter().map(|(i, _)| i).collect();
    let t = Instant::now();
    let b = enc.batch(&ids)?;
    let embedded = frozen.bert().embed_segments(&b.input_ids, b.token_type_ids.as_ref())?;
    let hidden = frozen.bert().encode(&embedded, &b.attention_mask)?;
    let pooled = wft_candle::models::bert::mean_pool(&hidden, &b.attention_mask)?;
    if pooled.dims2()? != (batch.len(), frozen.bert().config().hidden_size) {
        return Err(crate::Error::Data("the embedding has the wrong shape".into()));
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Median of [`frozen_step`] over `steps` batches of `batch` from `data`,
/// after one untimed warm-up batch.
///
/// # Errors
/// As [`frozen_step`].
pub fn frozen_step_secs(
    frozen: &Classifier,
    enc: &TextEncoder,
    data: &[Tokenised],
    batch: usize,
    steps: usize,
) -> Result<f64> {
    let mut times = Vec::new();
    for (i, chunk) in data.chunks(batch.max(1)).take(steps + 1).enumerate() {
        let chunk: Vec<&Tokenised> = chunk.iter().collect();
        let t = frozen_step(frozen, enc, &chunk)?;
        if i > 0 {
            times.push(t);
        }
    }
    Ok(median(&mut times))
}

/// The median (0 for none).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        0.5 * (v[m - 1] + v[m])
    }
}

/// What [`save_and_reload`] found.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Roundtrip {
    /// Bytes of what the method saves for the encoder: the adapter folder
    /// (weights and `adapter_config.json`), the whole checkpoint for full
    /// fine-tuning, 0 for head-only.
    pub encoder_bytes: u64,
    /// Bytes of the head file.
    pub head_bytes: u64,
    /// Largest |logit difference| after saving and loading (adapters
    /// applied on the fly).
    pub load_max_diff: f32,
    /// Largest |logit difference| of the merged checkpoint, run as a plain
    /// frozen model.
    pub merge_max_diff: f32,
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Save the trained model into `dir` (PEFT-compatible adapter folder
/// `dir/adapter` and `dir/head.safetensors`, or the whole checkpoint for
/// full fine-tuning), load it back, merge it into the base checkpoint
/// (`dir/merged.safetensors`), and compare the logits on `probe`.
///
/// # Errors
/// I/O, adapter-file and candle errors.
pub fn save_and_reload(
    model: &Model,
    config: &Config,
    weights: &Weights,
    base: &TensorFile,
    enc: &TextEncoder,
    probe: &[Tokenised],
    dir: &Path,
) -> Result<Roundtrip> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::Io(format!("{}: {e}", dir.display())))?;
    let head = dir.join("head.safetensors");
    model.classifier.save_head(&head)?;
    let want = logits(&model.classifier, enc, probe, 64)?;
    let diff = |c: &Classifier| -> Result<f32> {
        let got = logits(c, enc, probe, 64)?;
        Ok((got - &want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
    };
    let mut report = Roundtrip {
        head_bytes: file_bytes(&head),
        ..Default::default()
    };
    match (&model.adapters, model.method) {
        (Some(template), _) => {
            let folder = dir.join("adapter");
            model.classifier.adapters(template)?.save(&folder)?;
            report.encoder_bytes = file_bytes(&folder.join(wft_adapter::WEIGHTS_FILE))
                + file_bytes(&folder.join(wft_adapter::CONFIG_FILE));
            let loaded = AdapterModel::load(&folder, Some(base))?;
            let bert = Bert::new(config, weights, Tuning::Adapters(&loaded))?;
            report.load_max_diff = diff(&Classifier::with_saved_head(bert, &head)?)?;
            let merged = dir.join("merged.safetensors");
            loaded.merge(base, &merged, &mut |_, _| {})?;
            let bert = Bert::new(config, &Weights::load(&merged)?, Tuning::Frozen)?;
            report.merge_max_diff = diff(&Classifier::with_saved_head(bert, &head)?)?;
        }
        (None, Method::Full) => {
            let mut trained = weights.clone();
            for (name, v) in model.classifier.bert().named_vars() {
                trained.insert(name.clone(), v.as_tensor().detach());
            }
            let path = dir.join("model.safetensors");
            trained.save(&path)?;
            report.encoder_bytes = file_bytes(&path);
            let bert = Bert::new(config, &Weights::load(&path)?, Tuning::Frozen)?;
            report.load_max_diff = diff(&Classifier::with_saved_head(bert, &head)?)?;
            report.merge_max_diff = report.load_max_diff;
        }
        (None, _) => {
            let bert = Bert::new(config, weights, Tuning::Frozen)?;
            report.load_max_diff = diff(&Classifier::with_saved_head(bert, &head)?)?;
            report.merge_max_diff = report.load_max_diff;
        }
    }
    Ok(report)
}

/// Peak resident memory of this process (`VmHWM`), in bytes; `None` where
/// `/proc` does not say.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
