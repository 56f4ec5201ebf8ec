//! A BERT encoder on candle with pluggable linear layers (one table of
//! its linear paths, `LINEARS`): every weight
//! frozen, every weight trainable, or adapters on the modules an
//! [`AdapterModel`](wft_adapter::AdapterModel) names. It loads Hugging Face checkpoints by their own
//! tensor names (`embeddings.word_embeddings.weight`,
//! `encoder.layer.0.attention.self.query.weight`, …), such as
//! sentence-transformers' all-MiniLM-L6-v2.
//!
//! No dropout: the encoder computes the same function in training and
//! evaluation.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use wft_adapter::Mt19937;

use super::attention::packed_attention;
use super::mlp::gelu_mlp_routed;
use super::ops::LayerNorm;
use crate::error::{Error, Result};
use crate::linear::{AdaptedLinear, Bias};
use crate::models::{AdapterMix, Routing, project};
use crate::weights::{Tuning, VarPath, VarStore, Weights};

/// Which width one side of a linear layer has.
#[derive(Debug, Clone, Copy)]
enum Width {
    Hidden,
    Intermediate,
}

/// BERT's linear layers inside `encoder.layer.{l}`, `(path, out, in)`: the
/// one list of them that paths, shapes, loading and [`Bert::linears`] use.
const LINEARS: [(&str, Width, Width); 6] = [
    ("attention.self.query", Width::Hidden, Width::Hidden),
    ("attention.self.key", Width::Hidden, Width::Hidden),
    ("attention.self.value", Width::Hidden, Width::Hidden),
    ("attention.output.dense", Width::Hidden, Width::Hidden),
    ("intermediate.dense", Width::Intermediate, Width::Hidden),
    ("output.dense", Width::Hidden, Width::Intermediate),
];
/// Indices into [`LINEARS`] and [`Layer::linears`].
const QUERY: usize = 0;
const KEY: usize = 1;
const VALUE: usize = 2;
const ATTN_OUT: usize = 3;
const INTERMEDIATE: usize = 4;
const OUTPUT: usize = 5;

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
        self.linear_shapes().into_iter().map(|(p, _)| p).collect()
    }

    /// Every linear layer's module path and `(out, in)`, in order.
    pub fn linear_shapes(&self) -> Vec<(String, (usize, usize))> {
        (0..self.num_hidden_layers)
            .flat_map(|l| {
                LINEARS.map(|(m, out, inp)| (format!("encoder.layer.{l}.{m}"), (self.width(out), self.width(inp))))
            })
            .collect()
    }

    fn width(&self, w: Width) -> usize {
        match w {
            Width::Hidden => self.hidden_size,
            Width::Intermediate => self.intermediate_size,
        }
    }
}

impl Weights {
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
        for (path, (out, inp)) in config.linear_shapes() {
            t.insert(format!("{path}.weight"), normal(&[out, inp])?);
            t.insert(format!("{path}.bias"), Tensor::zeros(out, DType::F32, &Device::Cpu)?);
        }
        for l in 0..config.num_hidden_layers {
            norm(&mut t, &format!("encoder.layer.{l}.attention.output.LayerNorm"))?;
            norm(&mut t, &format!("encoder.layer.{l}.output.LayerNorm"))?;
        }
        Ok(Weights::from_tensors(t))
    }
}

#[derive(Debug)]
struct Layer {
    /// In [`LINEARS`] order.
    linears: Vec<AdaptedLinear>,
    /// Their module paths, which a mixed-adapter pass looks its adapters up by.
    paths: Vec<String>,
    attn_norm: LayerNorm,
    out_norm: LayerNorm,
}

impl Layer {
    /// `encoder.layer.{l}`, read in checkpoint order (so the variables of
    /// full fine-tuning come in that order too).
    fn load(vb: &VarPath<'_>, config: &Config) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let linear = |i: usize| {
            let (path, out, inp) = LINEARS[i];
            AdaptedLinear::load(&vb.pp(path), (config.width(out), config.width(inp)), Bias::With)
        };
        let mut linears = (QUERY..=ATTN_OUT).map(linear).collect::<Result<Vec<_>>>()?;
        let attn_norm = LayerNorm::load(&vb.pp("attention.output.LayerNorm"), h, eps)?;
        linears.push(linear(INTERMEDIATE)?);
        linears.push(linear(OUTPUT)?);
        let out_norm = LayerNorm::load(&vb.pp("output.LayerNorm"), h, eps)?;
        let paths = LINEARS
            .iter()
            .map(|(path, ..)| vb.pp(path).path().to_string())
            .collect();
        Ok(Layer {
            linears,
            paths,
            attn_norm,
            out_norm,
        })
    }
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
        let store = VarStore::new(weights, tuning);
        let vb = store.root();
        let emb = vb.pp("embeddings");
        let word = emb.pp("word_embeddings").get("weight", &[config.vocab_size, h])?;
        let position = emb
            .pp("position_embeddings")
            .get("weight", &[config.max_position_embeddings, h])?;
        let token_type = emb
            .pp("token_type_embeddings")
            .get("weight", &[config.type_vocab_size, h])?;
        let emb_norm = LayerNorm::load(&emb.pp("LayerNorm"), h, config.layer_norm_eps)?;
        let layers = (0..config.num_hidden_layers)
            .map(|l| Layer::load(&vb.pp("encoder").pp(format!("layer.{l}")), config))
            .collect::<Result<Vec<_>>>()?;
        super::check_adapted_modules(tuning, &config.linear_paths(), "encoder")?;
        Ok(Bert {
            config: config.clone(),
            word,
            position,
            token_type,
            emb_norm,
            layers,
            vars: store.into_vars(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The embedding layer's output for `input_ids` (`batch × len`, `u32`),
    /// with token type 0.
    ///
    /// # Errors
    /// [`Error::Config`] for inputs longer than `max_position_embeddings`,
    /// candle's errors for bad ids.
    pub fn embed(&self, input_ids: &Tensor) -> Result<Tensor> {
        self.embed_segments(input_ids, None)
    }

    /// [`Bert::embed`] with BERT's segment ids (`token_type_ids`,
    /// `batch × len`, `u32`: 0 for the first text of a pair, 1 for the
    /// second); `None` is all 0, exactly [`Bert::embed`].
    ///
    /// # Errors
    /// As [`Bert::embed`], and [`Error::Shape`] when the segment ids are
    /// not `batch × len` or name a type the model does not have.
    pub fn embed_segments(&self, input_ids: &Tensor, token_type_ids: Option<&Tensor>) -> Result<Tensor> {
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
        let x = words.broadcast_add(&pos)?;
        let x = match token_type_ids {
            None => x.broadcast_add(&self.token_type.narrow(0, 0, 1)?)?,
            Some(types) => {
                if types.dims() != [batch, len] {
                    return Err(Error::Shape {
                        what: "token type ids".into(),
                        expected: vec![batch, len],
                        found: types.dims().to_vec(),
                    });
                }
                let kinds = self.token_type.dims()[0];
                let flat = types.flatten_all()?;
                if flat
                    .to_dtype(DType::U32)?
                    .to_vec1::<u32>()?
                    .iter()
                    .any(|&t| t as usize >= kinds)
                {
                    return Err(Error::Config(format!("a token type id ≥ the model's {kinds} types")));
                }
                (x + self.token_type.index_select(&flat, 0)?.reshape((batch, len, h))?)?
            }
        };
        self.emb_norm.forward(&x)
    }

    /// The last hidden states (`batch × len × H`) from embedded inputs and
    /// an attention mask (`batch × len`, 1 for tokens, 0 for padding).
    ///
    /// The tokens the mask keeps are packed row after row: no layer computes
    /// a padded position (a batch of short and long texts costs its tokens,
    /// not `batch × len`), and attention runs within each text with no mask.
    /// The states of padded positions are zeros.
    ///
    /// # Errors
    /// [`Error::Shape`] for a mask that is not `batch × len`; candle's
    /// errors for mismatched shapes.
    pub fn encode(&self, embedded: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        self.encode_with(embedded, attention_mask, None)
    }

    /// [`Bert::encode`] for a mixed-adapter batch: text `b` runs with
    /// `mix.routes()[b]`'s adapter (or none), every token through the frozen
    /// weights once and each adapter's tokens through its factored form.
    /// Each text gets what the encoder built with its adapter gives it alone,
    /// to float rounding. Inference only.
    ///
    /// # Errors
    /// As [`Bert::encode`], and [`Error::Shape`] when `mix` does not route
    /// every text.
    pub fn encode_mixed(&self, embedded: &Tensor, attention_mask: &Tensor, mix: &AdapterMix<'_>) -> Result<Tensor> {
        self.encode_with(embedded, attention_mask, Some(mix))
    }

    fn encode_with(&self, embedded: &Tensor, attention_mask: &Tensor, mix: Option<&AdapterMix<'_>>) -> Result<Tensor> {
        let (batch, len, h) = embedded.dims3()?;
        if attention_mask.dims() != [batch, len] {
            return Err(Error::Shape {
                what: "attention mask".into(),
                expected: vec![batch, len],
                found: attention_mask.dims().to_vec(),
            });
        }
        let heads = self.config.num_attention_heads;
        let mask = attention_mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let mut keep = Vec::new();
        let mut starts = vec![0];
        for (b, row) in mask.iter().enumerate() {
            keep.extend((0..len).filter(|&i| row[i] != 0.0).map(|i| (b * len + i) as u32));
            starts.push(keep.len());
        }
        let starts: std::sync::Arc<[usize]> = starts.into();
        let keep = Tensor::from_vec(keep, starts[batch], embedded.device())?;
        let mut x = embedded.reshape((batch * len, h))?.index_select(&keep, 0)?;
        // Each packed token's route: its text's.
        let routes: Vec<Option<usize>> = match mix {
            Some(mix) => {
                crate::error::check_shape("routes", &[mix.routes().len()], &[batch])?;
                (0..batch)
                    .flat_map(|b| std::iter::repeat_n(mix.routes()[b], starts[b + 1] - starts[b]))
                    .collect()
            }
            None => Vec::new(),
        };
        let routing = mix.map(|mix| Routing::with_routes(mix, &routes));
        for layer in &self.layers {
            let lin = |i: usize, x: &Tensor| project(&layer.linears[i], &layer.paths[i], x, routing);
            let (q, k, v) = (lin(QUERY, &x)?, lin(KEY, &x)?, lin(VALUE, &x)?);
            let ctx = packed_attention(&q, &k, &v, heads, heads, &starts)?;
            let a = layer.attn_norm.forward(&(lin(ATTN_OUT, &ctx)? + &x)?)?;
            let fc = |i: usize| (&layer.linears[i], layer.paths[i].as_str());
            let f = gelu_mlp_routed(&a, fc(INTERMEDIATE), fc(OUTPUT), routing)?;
            x = layer.out_norm.forward(&(f + &a)?)?;
        }
        let out = Tensor::zeros((batch * len, h), DType::F32, embedded.device())?.index_add(&keep, &x, 0)?;
        Ok(out.reshape((batch, len, h))?)
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

impl super::Adaptable for Bert {
    fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn linears(&self) -> Vec<(String, &AdaptedLinear)> {
        let paths = self.config.linear_paths();
        paths
            .into_iter()
            .zip(self.layers.iter().flat_map(|l| &l.linears))
            .collect()
    }
}
