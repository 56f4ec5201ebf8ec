//! A BERT encoder on candle with pluggable linear layers: every weight
//! frozen, every weight trainable, or adapters on the modules an
//! [`AdapterModel`] names. It loads Hugging Face checkpoints by their own
//! tensor names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, …), such as
//! sentence-transformers' all-MiniLM-L6-v2.
//!
//! No dropout: the encoder computes the same function in training and
//! evaluation.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor, Var};
use serde::{Deserialize, Serialize};
use wft_adapter::{AdapterModel, Mt19937, RawTensor};

use crate::error::{Error, Result, check_shape};
use crate::linear::Linear;

/// The fields of a Hugging Face BERT `config.json` the encoder uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (`H` must divide evenly).
    pub num_attention_heads: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Longest input.
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    pub type_vocab_size: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The activation; only `gelu` (erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

impl Config {
    /// Read a `config.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Config`] when it
    /// is not a usable BERT config.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// A tiny BERT of the same architecture (for tests and quick runs).
    pub fn tiny(vocab_size: usize) -> Self {
        Config {
            vocab_size,
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            intermediate_size: 64,
            max_position_embeddings: 64,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        }
    }

    /// Check the sizes.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes, heads that do not divide the hidden
    /// size, or an activation other than `gelu`.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        if sizes.contains(&0) {
            return Err(Error::Config("every size must be positive".into()));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(Error::Config(format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                self.hidden_act
            )));
        }
        Ok(())
    }

    /// The module paths of every linear layer, in order.
    pub fn linear_paths(&self) -> Vec<String> {
        (0..self.num_hidden_layers)
            .flat_map(|l| {
                [
                    "attention.self.query",
                    "attention.self.key",
                    "attention.self.value",
                    "attention.output.dense",
                    "intermediate.dense",
                    "output.dense",
                ]
                .map(|m| format!("encoder.layer.{l}.{m}"))
            })
            .collect()
    }
}

/// A checkpoint's tensors by name, on the CPU.
#[derive(Debug, Clone)]
pub struct Weights {
    tensors: HashMap<String, Tensor>,
}

impl Weights {
    /// Load a safetensors checkpoint (any float dtype; converted to `f32`).
    ///
    /// # Errors
    /// candle's errors for unreadable or malformed files.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path.as_ref(), &Device::Cpu)?;
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| {
                let t = if t.dtype().is_float() {
                    t.to_dtype(DType::F32)?
                } else {
                    t
                };
                Ok((k, t))
            })
            .collect::<Result<_>>()?;
        Ok(Weights { tensors })
    }

    /// Random weights for `config`, seeded: normal(0, 0.02) matrices and
    /// embeddings, unit layer-norm scales, zero biases (BERT's own
    /// initialisation).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn random(config: &Config, seed: u64) -> Result<Self> {
        config.validate()?;
        let mut g = Mt19937::new(seed);
        let mut normal = |shape: &[usize]| -> Result<Tensor> {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| (0.02 * g.next_normal()) as f32).collect();
            Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
        };
        let h = config.hidden_size;
        let mut t = HashMap::new();
        let norm = |t: &mut HashMap<String, Tensor>, p: &str| -> Result<()> {
            t.insert(format!("{p}.weight"), Tensor::ones(h, DType::F32, &Device::Cpu)?);
            t.insert(format!("{p}.bias"), Tensor::zeros(h, DType::F32, &Device::Cpu)?);
            Ok(())
        };
        t.insert(
            "embeddings.word_embeddings.weight".into(),
            normal(&[config.vocab_size, h])?,
        );
        t.insert(
            "embeddings.position_embeddings.weight".into(),
            normal(&[config.max_position_embeddings, h])?,
        );
        t.insert(
            "embeddings.token_type_embeddings.weight".into(),
            normal(&[config.type_vocab_size, h])?,
        );
        norm(&mut t, "embeddings.LayerNorm")?;
        for (i, path) in config.linear_paths().into_iter().enumerate() {
            let (out, inp) = match i % 6 {
                4 => (config.intermediate_size, h),
                5 => (h, config.intermediate_size),
                _ => (h, h),
            };
            t.insert(format!("{path}.weight"), normal(&[out, inp])?);
            t.insert(format!("{path}.bias"), Tensor::zeros(out, DType::F32, &Device::Cpu)?);
        }
        for l in 0..config.num_hidden_layers {
            norm(&mut t, &format!("encoder.layer.{l}.attention.output.LayerNorm"))?;
            norm(&mut t, &format!("encoder.layer.{l}.output.LayerNorm"))?;
        }
        Ok(Weights { tensors: t })
    }

    /// The tensors by name.
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Replace or add a tensor.
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        self.tensors.insert(name.into(), tensor);
    }

    /// One tensor.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when it is absent.
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.into()))
    }

    /// Save the float tensors as an `f32` safetensors file, atomically.
    ///
    /// # Errors
    /// candle's errors reading tensors, and [`Error::Adapter`] (I/O) when
    /// writing fails.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        save_f32(self.tensors.iter().map(|(k, v)| (k.as_str(), v)), path.as_ref())
    }
}

/// Save `f32` tensors to a safetensors file atomically (temporary file,
/// then rename), through `wft-adapter`'s writer. Integer tensors are
/// skipped.
pub(crate) fn save_f32<'a>(tensors: impl Iterator<Item = (&'a str, &'a Tensor)>, path: &Path) -> Result<()> {
    let mut raw = BTreeMap::new();
    for (k, t) in tensors {
        if !t.dtype().is_float() {
            continue;
        }
        let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        raw.insert(k.to_string(), RawTensor::from_f32(t.dims(), &v));
    }
    wft_adapter::write_atomic(path, raw.iter().map(|(k, v)| (k.clone(), v)), None)?;
    Ok(())
}

/// How the encoder's weights are tuned.
#[derive(Debug, Clone, Copy)]
pub enum Tuning<'a> {
    /// Nothing trains (gradients can still flow to the inputs).
    Frozen,
    /// Every weight is a variable (full fine-tuning).
    Full,
    /// The modules `AdapterModel` adapts get its adapters (their
    /// parameters become variables); everything else is frozen.
    Adapters(&'a AdapterModel),
}

/// Where tensors come from while building: constants, or new variables.
struct Builder<'a> {
    weights: &'a Weights,
    tuning: Tuning<'a>,
    vars: Vec<(String, Var)>,
}

impl Builder<'_> {
    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.weights.get(name)?;
        check_shape(name, t.dims(), shape)?;
        if let Tuning::Full = self.tuning {
            let v = Var::from_tensor(t)?;
            let t = v.as_tensor().clone();
            self.vars.push((name.to_string(), v));
            Ok(t)
        } else {
            Ok(t.clone())
        }
    }

    fn norm(&mut self, path: &str, h: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: self.tensor(&format!("{path}.weight"), &[h])?,
            bias: self.tensor(&format!("{path}.bias"), &[h])?,
            eps,
        })
    }

    fn linear(&mut self, path: &str, out: usize, inp: usize) -> Result<Linear> {
        let weight = self.tensor(&format!("{path}.weight"), &[out, inp])?;
        let bias = self.tensor(&format!("{path}.bias"), &[out])?;
        match self.tuning {
            Tuning::Full => Linear::plain(weight, Some(bias)),
            Tuning::Frozen => Linear::frozen(weight, Some(bias)),
            Tuning::Adapters(model) => match model.modules().get(path) {
                Some(adapter) => {
                    let layer = Linear::adapted(weight, Some(bias), adapter.clone())?;
                    for v in layer.vars() {
                        self.vars.push((path.to_string(), v));
                    }
                    Ok(layer)
                }
                None => Linear::frozen(weight, Some(bias)),
            },
        }
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // candle-nn's fused kernel has no backward; use it only when no
        // gradient will flow.
        if !x.track_op() && !self.weight.track_op() && x.is_contiguous() {
            return Ok(candle_nn::ops::layer_norm(
                x,
                &self.weight,
                &self.bias,
                self.eps as f32,
            )?);
        }
        let h = x.dim(D::Minus1)? as f64;
        let mean = (x.sum_keepdim(D::Minus1)? / h)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / h)?;
        let xn = xc.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(xn.broadcast_mul(&self.weight)?.broadcast_add(&self.bias)?)
    }
}

/// Softmax over the last axis, with candle-nn's fused kernel when no
/// gradient will flow.
fn softmax(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

#[derive(Debug)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
}

/// A BERT encoder.
#[derive(Debug)]
pub struct Bert {
    config: Config,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: LayerNorm,
    layers: Vec<Layer>,
    vars: Vec<(String, Var)>,
}

impl Bert {
    /// Build the encoder from `weights`, tuned as `tuning` says.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] or [`Error::Shape`] when the checkpoint does
    /// not fit the config, [`Error::Config`] for an invalid config, and the
    /// adapters' own shape errors.
    pub fn new(config: &Config, weights: &Weights, tuning: Tuning<'_>) -> Result<Self> {
        config.validate()?;
        let h = config.hidden_size;
        let f = config.intermediate_size;
        let eps = config.layer_norm_eps;
        let mut b = Builder {
            weights,
            tuning,
            vars: Vec::new(),
        };
        let word = b.tensor("embeddings.word_embeddings.weight", &[config.vocab_size, h])?;
        let position = b.tensor(
            "embeddings.position_embeddings.weight",
            &[config.max_position_embeddings, h],
        )?;
        let token_type = b.tensor("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, h])?;
        let emb_norm = b.norm("embeddings.LayerNorm", h, eps)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            layers.push(Layer {
                query: b.linear(&format!("{p}.attention.self.query"), h, h)?,
                key: b.linear(&format!("{p}.attention.self.key"), h, h)?,
                value: b.linear(&format!("{p}.attention.self.value"), h, h)?,
                attn_out: b.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: b.norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                intermediate: b.linear(&format!("{p}.intermediate.dense"), f, h)?,
                output: b.linear(&format!("{p}.output.dense"), h, f)?,
                out_norm: b.norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        if let Tuning::Adapters(model) = tuning {
            let known = config.linear_paths();
            if let Some(m) = model.modules().keys().find(|m| !known.contains(m)) {
                return Err(Error::Config(format!(
                    "the adapter adapts `{m}`, which this encoder does not have"
                )));
            }
        }
        Ok(Bert {
            config: config.clone(),
            word,
            position,
            token_type,
            emb_norm,
            layers,
            vars: b.vars,
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The trainable variables with the module or tensor each belongs to.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The trainable variables.
    pub fn vars(&self) -> Vec<Var> {
        self.vars.iter().map(|(_, v)| v.clone()).collect()
    }

    /// Every linear layer by module path.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let paths = self.config.linear_paths();
        self.layers
            .iter()
            .flat_map(|l| [&l.query, &l.key, &l.value, &l.attn_out, &l.intermediate, &l.output])
            .zip(paths)
            .map(|(l, p)| (p, l))
            .collect()
    }

    /// The embedding layer's output for `input_ids` (`batch × len`, `u32`),
    /// with token type 0.
    ///
    /// # Errors
    /// [`Error::Config`] for inputs longer than `max_position_embeddings`,
    /// candle's errors for bad ids.
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        let (batch, len) = input_ids.dims2()?;
        if len > self.config.max_position_embeddings {
            return Err(Error::Config(format!(
                "input of {len} tokens; the model takes at most {}",
                self.config.max_position_embeddings
            )));
        }
        let h = self.config.hidden_size;
        let ids = input_ids.flatten_all()?;
        let words = self.word.index_select(&ids, 0)?.reshape((batch, len, h))?;
        let pos = self.position.narrow(0, 0, len)?;
        let types = self.token_type.narrow(0, 0, 1)?;
        let x = words.broadcast_add(&pos)?.broadcast_add(&types)?;
        self.emb_norm.forward(&x)
    }

    /// The last hidden states (`batch × len × H`) from embedded inputs and
    /// an attention mask (`batch × len`, 1 for tokens, 0 for padding).
    ///
    /// # Errors
    /// candle's errors for mismatched shapes.
    pub fn encode(&self, embedded: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (batch, len, h) = embedded.dims3()?;
        let heads = self.config.num_attention_heads;
        let hd = h / heads;
        // Additive mask: 0 for tokens, a large negative for padding.
        let mask = attention_mask.to_dtype(DType::F32)?;
        let mask = ((mask - 1.0)? * 1e9)?.reshape((batch, 1, 1, len))?;
        let split =
            |t: Tensor| -> Result<Tensor> { Ok(t.reshape((batch, len, heads, hd))?.transpose(1, 2)?.contiguous()?) };
        let mut x = embedded.clone();
        for layer in &self.layers {
            let q = split(layer.query.forward(&x)?)?;
            let k = split(layer.key.forward(&x)?)?;
            let v = split(layer.value.forward(&x)?)?;
            let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let probs = softmax(&scores)?;
            let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((batch, len, h))?;
            let a = layer.attn_norm.forward(&(layer.attn_out.forward(&ctx)? + &x)?)?;
            let f = layer.intermediate.forward(&a)?.gelu_erf()?;
            x = layer.out_norm.forward(&(layer.output.forward(&f)? + &a)?)?;
        }
        Ok(x)
    }

    /// [`Bert::embed`] then [`Bert::encode`].
    ///
    /// # Errors
    /// As those.
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.encode(&self.embed(input_ids)?, attention_mask)
    }
}

/// Mean of the hidden states over the tokens the mask keeps
/// (sentence-transformers' mean pooling): `batch × len × H` → `batch × H`.
///
/// # Errors
/// candle's errors for mismatched shapes.
pub fn mean_pool(hidden: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
    let mask = attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let sum = hidden.broadcast_mul(&mask)?.sum(1)?;
    let count = mask.sum(1)?.clamp(1e-9, f64::INFINITY)?;
    Ok(sum.broadcast_div(&count)?)
}
