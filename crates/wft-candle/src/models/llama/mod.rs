//! A Llama-family decoder (Llama 2/3, Mistral, SmolLM, Qwen2-style models
//! without biases) on candle, with pluggable linear layers on the seven
//! projections of every block (one table, `LINEARS`), loaded from a GGUF
//! file whose `general.architecture` is `llama`.
//!
//! RMSNorm, rotary position embeddings, grouped-query attention, a SwiGLU
//! MLP, tied or separate output embeddings, and a [`Cache`] of keys and
//! values for generation.
//!
//! # Layout: transformers' rows, GGUF's permutation
//! The model computes in the layout of transformers' `LlamaForCausalLM`:
//! module names are `model.layers.N.self_attn.q_proj` and the rest, and the
//! rows of `q_proj`/`k_proj` are in transformers' order, with RoPE applied
//! to the two halves of each head. llama.cpp's converter permutes those rows
//! for its interleaved RoPE; [`load_gguf`] undoes that ([`RowOrder`]) while
//! it de-quantizes, so PEFT's adapters, whose locations and `ΔW` live in
//! transformers' layout, apply unchanged. Whoever writes a `ΔW` into a GGUF
//! `attn_q`/`attn_k` tensor permutes it with [`RowOrder::to_gguf`] first.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Tensor, Var};
use serde::{Deserialize, Serialize};
use wft_adapter::Mt19937;

use crate::models::attention::attention;
use crate::models::ops::{AttentionMask, rms_norm, rope, swiglu};

mod file;
mod head_loss;
mod loss;

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::linear::{AdaptedLinear, Bias};
use crate::models::{AdapterMix, Routing, project};
use crate::weights::{Stored, Tuning, VarPath, VarStore, Weights};
pub use file::{
    MergeDtype, RowOrder, base_shapes, load_gguf, load_gguf_quantized, merge_gguf, merge_gguf_streaming, tiny_vocab,
    write_gguf,
};
pub use loss::{Activations, masked_cross_entropy};

/// Which width one side of a projection has.
#[derive(Debug, Clone, Copy)]
enum Width {
    Hidden,
    /// `num_attention_heads × head_dim`.
    Query,
    /// `num_key_value_heads × head_dim`.
    KeyValue,
    Intermediate,
}

/// The projections inside `model.layers.{l}`: `(path, GGUF name, out, in)`.
/// The one list that paths, shapes, loading, merging and [`Llama::linears`]
/// use.
const LINEARS: [(&str, &str, Width, Width); 7] = [
    ("self_attn.q_proj", "attn_q", Width::Query, Width::Hidden),
    ("self_attn.k_proj", "attn_k", Width::KeyValue, Width::Hidden),
    ("self_attn.v_proj", "attn_v", Width::KeyValue, Width::Hidden),
    ("self_attn.o_proj", "attn_output", Width::Hidden, Width::Query),
    ("mlp.gate_proj", "ffn_gate", Width::Intermediate, Width::Hidden),
    ("mlp.up_proj", "ffn_up", Width::Intermediate, Width::Hidden),
    ("mlp.down_proj", "ffn_down", Width::Hidden, Width::Intermediate),
];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// The norms inside `model.layers.{l}`: `(path, GGUF name)`.
const NORMS: [(&str, &str); 2] = [
    ("input_layernorm", "attn_norm"),
    ("post_attention_layernorm", "ffn_norm"),
];
/// Tensors outside the blocks: `(transformers name, GGUF name)`.
const GLOBALS: [(&str, &str); 3] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
];

/// A Llama decoder's sizes (the fields of transformers' `LlamaConfig` that
/// it uses).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP width.
    pub intermediate_size: usize,
    /// Number of blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query
    /// heads).
    pub num_key_value_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Longest sequence (prompt plus generation).
    pub max_position_embeddings: usize,
    /// Whether the output projection is the token embedding.
    pub tie_word_embeddings: bool,
}

impl Config {
    /// A tiny decoder of the same architecture (for tests and quick runs):
    /// GQA with 4 query and 2 key/value heads.
    pub fn tiny(vocab_size: usize) -> Self {
        Config {
            vocab_size,
            hidden_size: 32,
            intermediate_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 128,
            tie_word_embeddings: true,
        }
    }

    /// The sizes a GGUF file's metadata gives (`llama.*` keys, the vocabulary
    /// from `token_embd`'s shape, tied embeddings when there is no
    /// `output.weight`).
    ///
    /// # Errors
    /// [`Error::Architecture`] when `general.architecture` is not `llama`,
    /// [`Error::Config`] for missing or inconsistent sizes, or more blocks
    /// than the file has tensors for.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self> {
        let arch = gguf.string("general.architecture")?;
        if arch != "llama" {
            return Err(Error::Architecture(arch.to_string()));
        }
        let size = |key: &str| -> Result<usize> {
            let v = gguf
                .uint(&format!("llama.{key}"))?
                .ok_or_else(|| Error::Config(format!("the GGUF metadata has no `llama.{key}`")))?;
            usize::try_from(v).map_err(|_| Error::Config(format!("`llama.{key}` = {v} is too large")))
        };
        let hidden_size = size("embedding_length")?;
        let heads = size("attention.head_count")?;
        let kv_heads = match gguf.uint("llama.attention.head_count_kv")? {
            Some(n) => n as usize,
            None => heads,
        };
        let head_dim = match gguf.uint("llama.attention.key_length")? {
            Some(n) => n as usize,
            None => hidden_size.checked_div(heads).unwrap_or(0),
        };
        if let Some(rot) = gguf.uint("llama.rope.dimension_count")?
            && rot as usize != head_dim
        {
            return Err(Error::Config(format!(
                "rotary embeddings on {rot} of {head_dim} head dimensions are not supported"
            )));
        }
        // Scaled RoPE (Llama 3.1's, YaRN, linear) changes every position's
        // rotation: refuse it rather than compute another model.
        if let Ok(kind) = gguf.string("llama.rope.scaling.type")
            && kind != "none"
        {
            return Err(Error::Config(format!("RoPE scaling `{kind}` is not supported")));
        }
        if gguf.value("llama.rope.scaling.factor").is_some() || gguf.value("llama.rope.freqs").is_some() {
            return Err(Error::Config(
                "RoPE scaling (llama.rope.scaling.factor / rope_freqs) is not supported".into(),
            ));
        }
        if let Some(t) = gguf
            .tensors()
            .iter()
            .find(|t| t.name == "rope_freqs.weight" || (t.name.starts_with("blk.") && t.name.ends_with(".bias")))
        {
            return Err(Error::Config(format!(
                "tensor `{}`: projection biases and RoPE frequency factors are not supported",
                t.name
            )));
        }
        let embd = gguf
            .entry("token_embd.weight")
            .ok_or_else(|| Error::MissingTensor("token_embd.weight".into()))?;
        let config = Config {
            vocab_size: embd.shape()[0],
            hidden_size,
            intermediate_size: size("feed_forward_length")?,
            num_hidden_layers: size("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: gguf.float("llama.attention.layer_norm_rms_epsilon")?.unwrap_or(1e-5),
            rope_theta: gguf.float("llama.rope.freq_base")?.unwrap_or(10_000.0),
            max_position_embeddings: size("context_length")?,
            tie_word_embeddings: gguf.entry("output.weight").is_none(),
        };
        config.validate()?;
        // Every block has its projections and norms: a block count the
        // file cannot hold is refused before anything is sized by it (the
        // fuzzer's first find: `block_count = 2²⁷` had the tensor-name list
        // take gigabytes).
        let per_block = LINEARS.len() + NORMS.len();
        if config.num_hidden_layers > gguf.tensors().len() / per_block {
            return Err(Error::Config(format!(
                "llama.block_count = {}, but the file holds {} tensors: too few for {per_block} per block",
                config.num_hidden_layers,
                gguf.tensors().len()
            )));
        }
        Ok(config)
    }

    /// Check the sizes.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes, key/value heads that do not divide
    /// the query heads, or an odd head width.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.intermediate_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.num_key_value_heads,
            self.head_dim,
            self.max_position_embeddings,
        ];
        if sizes.contains(&0) {
            return Err(Error::Config("every size must be positive".into()));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_key_value_heads) {
            return Err(Error::Config(format!(
                "{} query heads are not a multiple of {} key/value heads",
                self.num_attention_heads, self.num_key_value_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(Error::Config(format!("head_dim {} is odd", self.head_dim)));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err(Error::Config("rms_norm_eps and rope_theta must be positive".into()));
        }
        Ok(())
    }

    /// Every projection's module path and `(out, in)`, in order.
    pub fn linear_shapes(&self) -> Vec<(String, (usize, usize))> {
        (0..self.num_hidden_layers)
            .flat_map(|l| {
                LINEARS.map(|(m, _, out, inp)| (format!("model.layers.{l}.{m}"), (self.width(out), self.width(inp))))
            })
            .collect()
    }

    /// The module paths of every projection, in order.
    pub fn linear_paths(&self) -> Vec<String> {
        self.linear_shapes().into_iter().map(|(p, _)| p).collect()
    }

    fn width(&self, w: Width) -> usize {
        match w {
            Width::Hidden => self.hidden_size,
            Width::Query => self.num_attention_heads * self.head_dim,
            Width::KeyValue => self.num_key_value_heads * self.head_dim,
            Width::Intermediate => self.intermediate_size,
        }
    }

    /// Every tensor the decoder reads, as `(transformers name, GGUF name,
    /// row order)`: embeddings, norms and projections.
    pub fn tensor_names(&self) -> Vec<(String, String, RowOrder)> {
        let mut names: Vec<(String, String, RowOrder)> = GLOBALS
            .iter()
            .filter(|(hf, _)| !(self.tie_word_embeddings && *hf == "lm_head.weight"))
            .map(|(hf, g)| (hf.to_string(), g.to_string(), RowOrder::Same))
            .collect();
        for l in 0..self.num_hidden_layers {
            for (i, (m, g, _, _)) in LINEARS.iter().enumerate() {
                let order = match i {
                    Q => RowOrder::Rope(self.num_attention_heads),
                    K => RowOrder::Rope(self.num_key_value_heads),
                    _ => RowOrder::Same,
                };
                names.push((
                    format!("model.layers.{l}.{m}.weight"),
                    format!("blk.{l}.{g}.weight"),
                    order,
                ));
            }
            for (m, g) in NORMS {
                names.push((
                    format!("model.layers.{l}.{m}.weight"),
                    format!("blk.{l}.{g}.weight"),
                    RowOrder::Same,
                ));
            }
        }
        names
    }

    /// The GGUF tensor and row order of a transformers module path
    /// (`model.layers.3.self_attn.q_proj` → `blk.3.attn_q.weight`,
    /// permuted over 9 heads).
    pub fn gguf_tensor(&self, module: &str) -> Option<(String, RowOrder)> {
        let weight = format!("{module}.weight");
        self.tensor_names()
            .into_iter()
            .find(|(hf, _, _)| *hf == weight)
            .map(|(_, g, order)| (g, order))
    }

    /// Random weights for this config, seeded: normal(0, 0.02) matrices and
    /// embeddings, unit norm scales (transformers' initialisation).
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn random_weights(&self, seed: u64) -> Result<Weights> {
        self.validate()?;
        let mut g = Mt19937::new(seed);
        let mut t = HashMap::new();
        let h = self.hidden_size;
        let shape = |name: &str| -> Vec<usize> {
            if name.ends_with("norm.weight") {
                vec![h]
            } else if name.contains("embed_tokens") || name.starts_with("lm_head") {
                vec![self.vocab_size, h]
            } else {
                let module = name.trim_end_matches(".weight");
                let (_, (o, i)) = self
                    .linear_shapes()
                    .into_iter()
                    .find(|(p, _)| p == module)
                    .unwrap_or_default();
                vec![o, i]
            }
        };
        for (name, _, _) in self.tensor_names() {
            let s = shape(&name);
            let tensor = if s.len() == 1 {
                Tensor::ones(h, DType::F32, &Device::Cpu)?
            } else {
                let v: Vec<f32> = (0..s[0] * s[1]).map(|_| (0.02 * g.next_normal()) as f32).collect();
                Tensor::from_vec(v, s, &Device::Cpu)?
            };
            t.insert(name, tensor);
        }
        Ok(Weights::from_tensors(t))
    }
}

/// Keys and values of the positions seen so far, per block.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    kv: Vec<Option<(Tensor, Tensor)>>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Self {
        Cache::default()
    }

    /// How many positions it holds.
    pub fn len(&self) -> usize {
        match self.kv.first() {
            Some(Some((k, _))) => k.dim(1).unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What every block of one pass shares: the RoPE tables and the additive
/// attention mask.
struct Pass<'a> {
    cos: Tensor,
    sin: Tensor,
    mask: AttentionMask,
    /// A mixed-adapter pass: each batch row's adapter.
    mix: Option<&'a AdapterMix<'a>>,
}

#[derive(Debug)]
struct Block {
    /// In [`LINEARS`] order.
    linears: Vec<AdaptedLinear>,
    /// Their module paths (`model.layers.{l}.self_attn.q_proj`, …), which
    /// a mixed-adapter pass looks its adapters up by.
    paths: Vec<String>,
    /// In [`NORMS`] order.
    norms: [Tensor; 2],
}

/// A Llama-family decoder.
#[derive(Debug)]
pub struct Llama {
    config: Config,
    embed: Stored,
    blocks: Vec<Block>,
    norm: Tensor,
    lm_head: AdaptedLinear,
    vars: Vec<(String, Var)>,
}

impl Llama {
    /// Build the decoder from `weights` (transformers' names), tuned as
    /// `tuning` says.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] or [`Error::Shape`] when the weights do not
    /// fit the config, [`Error::Config`] for an invalid config or an adapter
    /// on a module the decoder does not have, and the adapters' own shape
    /// errors.
    pub fn new(config: &Config, weights: &Weights, tuning: Tuning<'_>) -> Result<Self> {
        config.validate()?;
        crate::models::check_adapted_modules(tuning, &config.linear_paths(), "decoder")?;
        let (h, v) = (config.hidden_size, config.vocab_size);
        let store = VarStore::new(weights, tuning);
        let root = store.root();
        let model = root.pp("model");
        let embed = model.pp("embed_tokens").get_stored("weight", &[v, h])?;
        let blocks = (0..config.num_hidden_layers)
            .map(|l| Block::load(&model.pp(format!("layers.{l}")), config))
            .collect::<Result<Vec<_>>>()?;
        let norm = model.pp("norm").get("weight", &[h])?;
        // The output projection is never adapted (PEFT's target modules are
        // the blocks' projections).
        let head = |w: &Stored| match (w, tuning) {
            (Stored::Dense(t), Tuning::Full) => AdaptedLinear::plain(t.clone(), None),
            (Stored::Dense(t), _) => AdaptedLinear::frozen(t.clone(), None),
            (Stored::Quantized(q), _) => AdaptedLinear::quantized(q.clone(), None),
        };
        let lm_head = if config.tie_word_embeddings {
            head(&embed)?
        } else {
            head(&root.pp("lm_head").get_stored("weight", &[v, h])?)?
        };
        Ok(Llama {
            config: config.clone(),
            embed,
            blocks,
            norm,
            lm_head,
            vars: store.into_vars(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The token embeddings of `ids` (`batch × len`, `u32`).
    ///
    /// # Errors
    /// [`Error::Config`] for an id outside the vocabulary; candle's errors
    /// for a wrong rank.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let flat = ids.flatten_all()?;
        let max = flat.max(0)?.to_dtype(DType::U32)?.to_scalar::<u32>()?;
        if max as usize >= self.config.vocab_size {
            return Err(Error::Config(format!(
                "token id {max} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let rows = match &self.embed {
            Stored::Dense(t) => t.index_select(&flat, 0)?,
            Stored::Quantized(q) => q.embedding(&flat)?,
        };
        Ok(rows.reshape((batch, len, self.config.hidden_size))?)
    }

    /// The final hidden states (after the last norm), `batch × len × H`,
    /// for `ids` (`batch × len`) following the positions in `cache`, which
    /// then holds these too.
    ///
    /// `mask` (`batch × (cached + len)`, 1 for tokens, 0 for padding) hides
    /// padded keys; without it every key is a token. Attention is causal.
    ///
    /// # Errors
    /// [`Error::Config`] when the sequence would pass
    /// `max_position_embeddings` or an id is outside the vocabulary;
    /// candle's errors for mismatched shapes.
    pub fn hidden(&self, ids: &Tensor, cache: &mut Cache, mask: Option<&Tensor>) -> Result<Tensor> {
        self.decode(&self.embed(ids)?, cache, mask)
    }

    /// [`Llama::hidden`] from token embeddings (`batch × len × H`) instead
    /// of ids: what gradients to the input are taken against.
    ///
    /// # Errors
    /// As [`Llama::hidden`].
    pub fn decode(&self, embedded: &Tensor, cache: &mut Cache, mask: Option<&Tensor>) -> Result<Tensor> {
        self.decode_padded(embedded, cache, mask, None, None)
    }

    /// [`Llama::hidden`] for a left-padded batch: row `r` starts with
    /// `starts[r]` padding positions (hidden by `mask`), and its tokens take
    /// positions from 0 after them, so that each row computes what it
    /// computes alone.
    ///
    /// # Errors
    /// As [`Llama::hidden`], and [`Error::Shape`] when `starts` does not
    /// have one entry per row.
    pub fn hidden_padded(
        &self,
        ids: &Tensor,
        cache: &mut Cache,
        mask: Option<&Tensor>,
        starts: &[usize],
    ) -> Result<Tensor> {
        self.decode_padded(&self.embed(ids)?, cache, mask, Some(starts), None)
    }

    /// Final hidden states of a mixed-adapter batch ([`Llama::logits`] of
    /// them are the logits): batch row `b` runs with
    /// `mix.routes()[b]`'s adapter (or none), every row through the frozen
    /// weights once, each adapter's rows through its factored form. Rows
    /// may be left-padded (`starts`, as [`Llama::hidden_padded`]) and the
    /// pass may extend a `cache` (prefill, then one token per step). Each
    /// row computes what the decoder built with its adapter computes alone,
    /// to float rounding (merged there, unmerged here). Inference only.
    ///
    /// # Errors
    /// As [`Llama::hidden_padded`], and [`Error::Shape`] when `mix` does not
    /// route every row.
    pub fn hidden_mixed(
        &self,
        ids: &Tensor,
        cache: &mut Cache,
        mask: Option<&Tensor>,
        starts: Option<&[usize]>,
        mix: &AdapterMix<'_>,
    ) -> Result<Tensor> {
        self.decode_padded(&self.embed(ids)?, cache, mask, starts, Some(mix))
    }

    fn decode_padded(
        &self,
        embedded: &Tensor,
        cache: &mut Cache,
        mask: Option<&Tensor>,
        starts: Option<&[usize]>,
        mix: Option<&AdapterMix<'_>>,
    ) -> Result<Tensor> {
        let pass = self.pass(embedded, cache.len(), mask, starts, mix)?;
        if cache.kv.len() != self.blocks.len() {
            cache.kv = vec![None; self.blocks.len()];
        }
        let mut x = embedded.clone();
        for (block, kv) in self.blocks.iter().zip(cache.kv.iter_mut()) {
            x = self.block(block, &x, &pass, Some(kv))?;
        }
        rms_norm(&x, &self.norm, self.config.rms_norm_eps)
    }

    /// What every block of a pass over `embedded` (`batch × len × H`)
    /// after `past` cached positions shares, routed by `mix` if mixed.
    fn pass<'a>(
        &self,
        embedded: &Tensor,
        past: usize,
        mask: Option<&Tensor>,
        starts: Option<&[usize]>,
        mix: Option<&'a AdapterMix<'a>>,
    ) -> Result<Pass<'a>> {
        let c = &self.config;
        let (batch, len, _) = embedded.dims3()?;
        if let Some(s) = starts
            && s.len() != batch
        {
            return Err(Error::Shape {
                what: "left-padding starts".into(),
                expected: vec![batch],
                found: vec![s.len()],
            });
        }
        if past + len > c.max_position_embeddings {
            return Err(Error::Config(format!(
                "{} positions; the model takes at most {}",
                past + len,
                c.max_position_embeddings
            )));
        }
        let (cos, sin) = self.rope_tables(past, len, starts)?;
        let mask = AttentionMask::new(&attention_mask(batch, past, len, mask)?)?;
        Ok(Pass { cos, sin, mask, mix })
    }

    /// One block on `x` (`batch × len × H`): attention over the keys and
    /// values in `kv` (then extended with this pass's) or over this pass's
    /// alone (`None`), then the MLP, each with its residual.
    fn block(
        &self,
        block: &Block,
        x: &Tensor,
        pass: &Pass<'_>,
        kv: Option<&mut Option<(Tensor, Tensor)>>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let Pass { cos, sin, mask, mix } = pass;
        let routing = mix.map(Routing::by_row);
        let lin = |i: usize, x: &Tensor| project(&block.linears[i], &block.paths[i], x, routing);
        let (nh, nkv) = (c.num_attention_heads, c.num_key_value_heads);
        let a = rms_norm(x, &block.norms[0], c.rms_norm_eps)?;
        // Token-major throughout: batch × len × (heads·head_dim), as the
        // linear layers give it; the cache holds keys and values alike.
        let q = rope(&lin(Q, &a)?, nh, cos, sin)?;
        let k = rope(&lin(K, &a)?, nkv, cos, sin)?;
        let v = lin(V, &a)?;
        let (k, v) = match kv {
            Some(kv) => {
                let (k, v) = match kv.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                    None => (k, v),
                };
                *kv = Some((k.clone(), v.clone()));
                (k, v)
            }
            None => (k, v),
        };
        let ctx = attention(&q, &k, &v, nh, nkv, Some(mask))?;
        let x = (x + lin(O, &ctx)?)?;
        let m = rms_norm(&x, &block.norms[1], c.rms_norm_eps)?;
        let f = swiglu(&lin(GATE, &m)?, &lin(UP, &m)?)?;
        Ok((x + lin(DOWN, &f)?)?)
    }

    /// The output logits (`… × vocab`) of final hidden states.
    ///
    /// # Errors
    /// candle's errors for a wrong width.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }

    /// [`Llama::hidden`] then [`Llama::logits`] at every position.
    ///
    /// # Errors
    /// As those.
    pub fn forward(&self, ids: &Tensor, cache: &mut Cache, mask: Option<&Tensor>) -> Result<Tensor> {
        self.logits(&self.hidden(ids, cache, mask)?)
    }

    /// `cos`/`sin` for positions `past..past + len`, `len × head_dim/2`,
    /// computed in `f32` as transformers does.
    /// With `starts`, one table per row (`batch × len × head_dim/2`), row
    /// `r`'s positions shifted back by `starts[r]` (padding positions get 0).
    fn rope_tables(&self, past: usize, len: usize, starts: Option<&[usize]>) -> Result<(Tensor, Tensor)> {
        let hd = self.config.head_dim;
        let base = self.config.rope_theta as f32;
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / base.powf((2 * i) as f32 / hd as f32))
            .collect();
        let shifts = starts.map_or(vec![0], <[usize]>::to_vec);
        let mut freqs = Vec::with_capacity(shifts.len() * len * hd / 2);
        for shift in &shifts {
            for p in past..past + len {
                let p = p.saturating_sub(*shift);
                freqs.extend(inv.iter().map(|f| p as f32 * f));
            }
        }
        let freqs = match starts {
            None => Tensor::from_vec(freqs, (len, hd / 2), &Device::Cpu)?,
            Some(s) => Tensor::from_vec(freqs, (s.len(), len, hd / 2), &Device::Cpu)?,
        };
        Ok((freqs.cos()?, freqs.sin()?))
    }
}

/// The additive attention mask, `batch × 1 × 1 × len × total`: causal over
/// the new positions, padded keys hidden.
fn attention_mask(batch: usize, past: usize, len: usize, keys: Option<&Tensor>) -> Result<Tensor> {
    const HIDDEN: f32 = -1e9;
    let total = past + len;
    let causal: Vec<f32> = (0..len)
        .flat_map(|i| (0..total).map(move |j| if j <= past + i { 0.0 } else { HIDDEN }))
        .collect();
    let causal = Tensor::from_vec(causal, (1, 1, 1, len, total), &Device::Cpu)?;
    match keys {
        None => Ok(causal),
        Some(keys) => {
            let (b, t) = keys.dims2()?;
            if (b, t) != (batch, total) {
                return Err(Error::Shape {
                    what: "attention mask".into(),
                    expected: vec![batch, total],
                    found: vec![b, t],
                });
            }
            let pad = ((keys.to_dtype(DType::F32)? - 1.0)? * (-f64::from(HIDDEN)))?.reshape((batch, 1, 1, 1, total))?;
            Ok(causal.broadcast_add(&pad)?)
        }
    }
}

impl Block {
    fn load(vb: &VarPath<'_>, config: &Config) -> Result<Self> {
        let h = config.hidden_size;
        let linears = LINEARS
            .iter()
            .map(|(path, _, out, inp)| {
                AdaptedLinear::load(&vb.pp(path), (config.width(*out), config.width(*inp)), Bias::Without)
            })
            .collect::<Result<Vec<_>>>()?;
        let paths = LINEARS
            .iter()
            .map(|(path, ..)| vb.pp(path).path().to_string())
            .collect();
        let norm = |i: usize| vb.pp(NORMS[i].0).get("weight", &[h]);
        Ok(Block {
            linears,
            paths,
            norms: [norm(0)?, norm(1)?],
        })
    }
}

impl crate::models::Adaptable for Llama {
    fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn linears(&self) -> Vec<(String, &AdaptedLinear)> {
        self.config
            .linear_paths()
            .into_iter()
            .zip(self.blocks.iter().flat_map(|b| &b.linears))
            .collect()
    }
}
