//! A DINOv2-style Vision Transformer encoder (transformers' `Dinov2Model`
//! names), with adapted linears on the six projections of every layer (one
//! table, `LINEARS`).
//!
//! Patch embedding (a `Conv2d` of stride = kernel = `patch_size`), a CLS
//! token, position embeddings interpolated bicubically to the input's patch
//! grid as DINOv2 does, pre-norm blocks with layer scale and an exact-GELU
//! MLP, and a final layer norm. Input pixels are normalised by the caller.

use std::path::Path;

use std::collections::HashMap;

use candle_core::{Device, Module, Tensor, Var};
use serde::{Deserialize, Serialize};
use wft_adapter::Mt19937;

use super::attention::attention;
use super::mlp::gelu_mlp_routed;
use super::ops::{LayerNorm, scaled_residual};
use crate::error::{Error, Result};
use crate::linear::{AdaptedLinear, Bias};
use crate::models::{AdapterMix, Routing, project};
use crate::weights::{Tuning, VarPath, VarStore, Weights};

/// The projections inside `encoder.layer.{l}`: `(path, out, in)` as
/// multiples of the hidden size `H` (`Mlp` = `mlp_ratio · H`).
const LINEARS: [(&str, Width, Width); 6] = [
    ("attention.attention.query", Width::Hidden, Width::Hidden),
    ("attention.attention.key", Width::Hidden, Width::Hidden),
    ("attention.attention.value", Width::Hidden, Width::Hidden),
    ("attention.output.dense", Width::Hidden, Width::Hidden),
    ("mlp.fc1", Width::Mlp, Width::Hidden),
    ("mlp.fc2", Width::Hidden, Width::Mlp),
];
const QUERY: usize = 0;
const KEY: usize = 1;
const VALUE: usize = 2;
const ATTN_OUT: usize = 3;
const FC1: usize = 4;
const FC2: usize = 5;

#[derive(Debug, Clone, Copy)]
enum Width {
    Hidden,
    Mlp,
}

/// A ViT's configuration (transformers' `Dinov2Config` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// Number of layers.
    pub num_hidden_layers: usize,
    /// Attention heads (`H` must divide evenly).
    pub num_attention_heads: usize,
    /// MLP width over `H`.
    pub mlp_ratio: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// The side the position embeddings were trained for (their grid is
    /// `image_size / patch_size` square).
    pub image_size: usize,
    /// Input channels.
    #[serde(default = "three")]
    pub num_channels: usize,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// The activation; only `gelu` (erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// SwiGLU MLPs (the giant DINOv2) are refused.
    #[serde(default)]
    pub use_swiglu_ffn: bool,
}

fn three() -> usize {
    3
}
fn default_eps() -> f64 {
    1e-6
}
fn default_act() -> String {
    "gelu".into()
}

impl Config {
    /// `config.json` of a model folder.
    ///
    /// # Errors
    /// [`Error::Config`] when it cannot be read or parsed, or fails
    /// [`Config::validate`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let config: Config =
            serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        config.validate()?;
        Ok(config)
    }

    /// Check the sizes.
    ///
    /// # Errors
    /// [`Error::Config`] for zero sizes, heads that do not divide `H`, an
    /// image size that is not a whole number of patches, or an MLP this
    /// model does not have.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.mlp_ratio,
            self.patch_size,
            self.image_size,
            self.num_channels,
        ];
        if sizes.contains(&0) {
            return Err(Error::Config("every size must be positive".into()));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::Config(format!(
                "hidden size {} is not a multiple of {} heads",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::Config(format!(
                "image size {} is not a whole number of {}-pixel patches",
                self.image_size, self.patch_size
            )));
        }
        if self.hidden_act != "gelu" || self.use_swiglu_ffn {
            return Err(Error::Config(format!(
                "the MLP `{}`{} is not supported (only gelu)",
                self.hidden_act,
                if self.use_swiglu_ffn { " with SwiGLU" } else { "" }
            )));
        }
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(Error::Config("layer_norm_eps must be positive".into()));
        }
        Ok(())
    }

    /// A tiny ViT for tests: `H` = 32, 2 layers of 4 heads, MLP 64,
    /// 4-pixel patches, trained for 16 × 16 images (a 4 × 4 grid).
    pub fn tiny() -> Self {
        Config {
            hidden_size: 32,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            mlp_ratio: 2,
            patch_size: 4,
            image_size: 16,
            num_channels: 3,
            layer_norm_eps: 1e-6,
            hidden_act: "gelu".into(),
            use_swiglu_ffn: false,
        }
    }

    /// `config.json` for this config (transformers' `Dinov2Config` fields,
    /// `model_type` included).
    ///
    /// # Errors
    /// [`Error::Config`] when serialising fails.
    pub fn to_json(&self) -> Result<String> {
        let mut v = serde_json::to_value(self).map_err(|e| Error::Config(e.to_string()))?;
        if let Some(m) = v.as_object_mut() {
            m.insert("model_type".into(), "dinov2".into());
        }
        serde_json::to_string_pretty(&v).map_err(|e| Error::Config(e.to_string()))
    }

    /// Every tensor of the encoder: name and shape, in a fixed order.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, p, c, g) = (self.hidden_size, self.patch_size, self.num_channels, self.grid());
        let mut v = vec![
            ("embeddings.cls_token".to_string(), vec![1, 1, h]),
            ("embeddings.position_embeddings".into(), vec![1, 1 + g * g, h]),
            ("embeddings.patch_embeddings.projection.weight".into(), vec![h, c, p, p]),
            ("embeddings.patch_embeddings.projection.bias".into(), vec![h]),
        ];
        for l in 0..self.num_hidden_layers {
            let layer = format!("encoder.layer.{l}");
            for norm in ["norm1", "norm2"] {
                v.push((format!("{layer}.{norm}.weight"), vec![h]));
                v.push((format!("{layer}.{norm}.bias"), vec![h]));
            }
            for scale in ["layer_scale1", "layer_scale2"] {
                v.push((format!("{layer}.{scale}.lambda1"), vec![h]));
            }
        }
        for (module, (o, i)) in self.linear_shapes() {
            v.push((format!("{module}.weight"), vec![o, i]));
            v.push((format!("{module}.bias"), vec![o]));
        }
        v.push(("layernorm.weight".into(), vec![h]));
        v.push(("layernorm.bias".into(), vec![h]));
        v
    }

    /// Random weights for this config, seeded: normal(0, 0.02) matrices,
    /// embeddings and biases, norm weights 1 and biases 0, layer scales 0.5.
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid config.
    pub fn random_weights(&self, seed: u64) -> Result<Weights> {
        self.validate()?;
        let mut g = Mt19937::new(seed);
        let mut t = HashMap::new();
        for (name, shape) in self.tensor_shapes() {
            let n: usize = shape.iter().product();
            let value = |g: &mut Mt19937| -> f32 {
                if name.contains(".norm") || name.starts_with("layernorm") {
                    if name.ends_with("weight") { 1.0 } else { 0.0 }
                } else if name.contains("layer_scale") {
                    0.5
                } else {
                    (0.02 * g.next_normal()) as f32
                }
            };
            let v: Vec<f32> = (0..n).map(|_| value(&mut g)).collect();
            t.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
        }
        Ok(Weights::from_tensors(t))
    }

    /// The side of the trained position-embedding grid, in patches.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    fn width(&self, w: Width) -> usize {
        match w {
            Width::Hidden => self.hidden_size,
            Width::Mlp => self.mlp_ratio * self.hidden_size,
        }
    }

    /// Every projection's module path, in order.
    pub fn linear_paths(&self) -> Vec<String> {
        self.linear_shapes().into_iter().map(|(p, _)| p).collect()
    }

    /// Every adaptable module's path: the patch embedding's convolution
    /// ([`PATCH_EMBEDDING`]), then the projections.
    pub fn adaptable_paths(&self) -> Vec<String> {
        std::iter::once(PATCH_EMBEDDING.to_string())
            .chain(self.linear_paths())
            .collect()
    }

    /// Every projection's module path and `(out, in)`, in order.
    pub fn linear_shapes(&self) -> Vec<(String, (usize, usize))> {
        (0..self.num_hidden_layers)
            .flat_map(|l| {
                LINEARS.map(|(m, out, inp)| (format!("encoder.layer.{l}.{m}"), (self.width(out), self.width(inp))))
            })
            .collect()
    }
}

#[derive(Debug)]
struct Block {
    norm1: LayerNorm,
    /// In [`LINEARS`] order.
    linears: Vec<AdaptedLinear>,
    /// Their module paths, which a mixed-adapter pass looks its adapters up by.
    paths: Vec<String>,
    scale1: Tensor,
    norm2: LayerNorm,
    scale2: Tensor,
}

/// The module path of the patch embedding's convolution (`[H, C, p, p]`,
/// stride `p`): adaptable like the projections, as the `out × (C·p·p)`
/// matrix of `wft_adapter::WeightLayout::Conv2d`.
pub const PATCH_EMBEDDING: &str = "embeddings.patch_embeddings.projection";

/// A ViT encoder.
#[derive(Debug)]
pub struct Vit {
    config: Config,
    /// The patch embedding: its convolution as the layer over flattened patches.
    patch: AdaptedLinear,
    cls: Tensor,
    /// `1 × (1 + grid²) × H`: the CLS position first, then the grid row by row.
    position: Tensor,
    blocks: Vec<Block>,
    norm: LayerNorm,
    vars: Vec<(String, Var)>,
}

impl Vit {
    /// Build the encoder from `weights` (transformers' `Dinov2Model`
    /// names), tuned as `tuning` says.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] or [`Error::Shape`] when the weights do not
    /// fit the config, [`Error::Config`] for an invalid config or an adapter
    /// on a module the encoder does not have, and the adapters' own errors.
    pub fn new(config: &Config, weights: &Weights, tuning: Tuning<'_>) -> Result<Self> {
        config.validate()?;
        super::check_adapted_modules(tuning, &config.adaptable_paths(), "encoder")?;
        let (h, p, c) = (config.hidden_size, config.patch_size, config.num_channels);
        let store = VarStore::new(weights, tuning);
        let root = store.root();
        let emb = root.pp("embeddings");
        let patch = AdaptedLinear::load_conv(&root.pp(PATCH_EMBEDDING), [h, c, p, p], Bias::With)?;
        let cls = emb.get("cls_token", &[1, 1, h])?;
        let grid = config.grid();
        let position = emb.get("position_embeddings", &[1, 1 + grid * grid, h])?;
        let blocks = (0..config.num_hidden_layers)
            .map(|l| Block::load(&root.pp("encoder").pp(format!("layer.{l}")), config))
            .collect::<Result<Vec<_>>>()?;
        let norm = LayerNorm::load(&root.pp("layernorm"), h, config.layer_norm_eps)?;
        Ok(Vit {
            config: config.clone(),
            patch,
            cls,
            position,
            blocks,
            norm,
            vars: store.into_vars(),
        })
    }

    /// The config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The final layer norm's hidden states, `batch × (1 + patches) × H`
    /// (the CLS token first), of normalised `pixels` (`batch × channels ×
    /// height × width`, each side a whole number of patches).
    ///
    /// # Errors
    /// [`Error::Shape`] for other channels or sides that are not whole
    /// patches; candle's errors.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.forward_with(pixels, None)
    }

    /// [`Vit::forward`] for a mixed-adapter batch: image `b` runs with
    /// `mix.routes()[b]`'s adapter (or none), every token through the frozen
    /// weights once and each adapter's tokens through its factored form
    /// (the patch embedding included). Each image gets what the model built
    /// with its adapter gives it alone, to float rounding. Inference only.
    ///
    /// # Errors
    /// As [`Vit::forward`], and [`Error::Shape`] when `mix` does not route
    /// every image.
    pub fn forward_mixed(&self, pixels: &Tensor, mix: &AdapterMix<'_>) -> Result<Tensor> {
        self.forward_with(pixels, Some(mix))
    }

    fn forward_with(&self, pixels: &Tensor, mix: Option<&AdapterMix<'_>>) -> Result<Tensor> {
        let c = &self.config;
        let (batch, channels, height, width) = pixels.dims4()?;
        let p = c.patch_size;
        if channels != c.num_channels || height == 0 || width == 0 || height % p != 0 || width % p != 0 {
            return Err(Error::Shape {
                what: format!("images (sides in whole {p}-pixel patches)"),
                expected: vec![
                    batch,
                    c.num_channels,
                    height.div_ceil(p).max(1) * p,
                    width.div_ceil(p).max(1) * p,
                ],
                found: vec![batch, channels, height, width],
            });
        }
        let (gh, gw) = (height / p, width / p);
        let h = c.hidden_size;
        // The patch embedding, a convolution of stride = kernel: each patch
        // flattened channel-major (the weight's `[H, C, p, p]` order), one
        // token per patch row by row, through the layer.
        let patches = pixels
            .reshape((batch, channels, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .reshape((batch, gh * gw, channels * p * p))?;
        let patches = match mix {
            None => self.patch.forward(&patches)?,
            Some(mix) => self
                .patch
                .forward_mixed(&patches, &mix.layer(PATCH_EMBEDDING), mix.routes())?,
        }; // batch × gh·gw × H
        let cls = self.cls.broadcast_as((batch, 1, h))?;
        let x = Tensor::cat(&[&cls, &patches], 1)?;
        let x = x.broadcast_add(&self.position_for(gh, gw)?)?;
        let mut x = x.contiguous()?;
        for block in &self.blocks {
            x = self.block(block, &x, mix)?;
        }
        self.norm.forward(&x)
    }

    /// The position embeddings for a `gh × gw` patch grid: the trained grid
    /// as it is when it matches, else resized bicubically (`a = −0.75`, half
    /// pixel centres, edges repeated, no antialiasing: torch's
    /// `interpolate(mode="bicubic", align_corners=False)`, which DINOv2 and
    /// the ONNX export's `Resize` both compute).
    fn position_for(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let grid = self.config.grid();
        if (gh, gw) == (grid, grid) {
            return Ok(self.position.clone());
        }
        let h = self.config.hidden_size;
        let cls = self.position.narrow(1, 0, 1)?;
        let trained = self.position.narrow(1, 1, grid * grid)?.reshape((grid, grid, h))?;
        let resized = resize_bicubic(&trained, gh, gw)?.reshape((1, gh * gw, h))?;
        Ok(Tensor::cat(&[&cls, &resized], 1)?)
    }

    fn block(&self, block: &Block, x: &Tensor, mix: Option<&AdapterMix<'_>>) -> Result<Tensor> {
        let c = &self.config;
        let nh = c.num_attention_heads;
        let routing = mix.map(Routing::by_row);
        let lin = |i: usize, x: &Tensor| project(&block.linears[i], &block.paths[i], x, routing);
        let a = block.norm1.forward(x)?;
        let (q, k, v) = (lin(QUERY, &a)?, lin(KEY, &a)?, lin(VALUE, &a)?);
        let ctx = attention(&q, &k, &v, nh, nh, None)?;
        let x = scaled_residual(x, &lin(ATTN_OUT, &ctx)?, &block.scale1)?;
        let m = block.norm2.forward(&x)?;
        let fc = |i: usize| (&block.linears[i], block.paths[i].as_str());
        let f = gelu_mlp_routed(&m, fc(FC1), fc(FC2), routing)?;
        scaled_residual(&x, &f, &block.scale2)
    }
}

impl Block {
    fn load(vb: &VarPath<'_>, config: &Config) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let linears = LINEARS
            .iter()
            .map(|(path, out, inp)| {
                AdaptedLinear::load(&vb.pp(path), (config.width(*out), config.width(*inp)), Bias::With)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Block {
            norm1: LayerNorm::load(&vb.pp("norm1"), h, eps)?,
            paths: LINEARS
                .iter()
                .map(|(path, ..)| vb.pp(path).path().to_string())
                .collect(),
            linears,
            scale1: vb.pp("layer_scale1").get("lambda1", &[h])?,
            norm2: LayerNorm::load(&vb.pp("norm2"), h, eps)?,
            scale2: vb.pp("layer_scale2").get("lambda1", &[h])?,
        })
    }
}

impl super::Adaptable for Vit {
    fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    fn linears(&self) -> Vec<(String, &AdaptedLinear)> {
        self.config
            .adaptable_paths()
            .into_iter()
            .zip(std::iter::once(&self.patch).chain(self.blocks.iter().flat_map(|b| &b.linears)))
            .collect()
    }
}

/// Resize `grid` (`rows × cols × channels`) to `out_rows × out_cols`
/// bicubically, as torch's `interpolate(mode="bicubic",
/// align_corners=False, antialias=False)`: source coordinate
/// `(i + ½)·in/out − ½`, the cubic convolution kernel with `a = −0.75`, taps
/// outside the grid clamped to its edge. It is linear, so it is two
/// products with interpolation matrices (rows, then columns), and gradients
/// flow through it to trained position embeddings.
fn resize_bicubic(grid: &Tensor, out_rows: usize, out_cols: usize) -> Result<Tensor> {
    let (rows, cols, ch) = grid.dims3()?;
    let along_rows = interpolation(rows, out_rows)?.matmul(&grid.reshape((rows, cols * ch))?)?;
    let t = along_rows
        .reshape((out_rows, cols, ch))?
        .transpose(0, 1)?
        .reshape((cols, out_rows * ch))?;
    let along_cols = interpolation(cols, out_cols)?.matmul(&t)?;
    Ok(along_cols
        .reshape((out_cols, out_rows, ch))?
        .transpose(0, 1)?
        .contiguous()?)
}

/// The `out × n` matrix of bicubic weights along one axis (a clamped tap
/// adds its weight to the edge).
fn interpolation(n: usize, out: usize) -> Result<Tensor> {
    let mut m = vec![0f32; out * n];
    for o in 0..out {
        let (taps, w) = cubic_taps(o, n, out);
        for (t, wt) in taps.iter().zip(w) {
            m[o * n + t] += wt;
        }
    }
    Ok(Tensor::from_vec(m, (out, n), &Device::Cpu)?)
}

/// The four source indices (clamped) and weights of output `o` of `out`
/// along an axis of `n`.
fn cubic_taps(o: usize, n: usize, out: usize) -> ([usize; 4], [f32; 4]) {
    const A: f32 = -0.75;
    let scale = n as f32 / out as f32;
    let real = scale * (o as f32 + 0.5) - 0.5;
    let base = real.floor();
    let t = real - base;
    let cubic1 = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cubic2 = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
    let last = n as i64 - 1;
    let at = |k: i64| (base as i64 + k).clamp(0, last) as usize;
    ([at(-1), at(0), at(1), at(2)], w)
}

/// The mean of the patch tokens (all but the first) of hidden states
/// `batch × (1 + patches) × H`: DINOv2's linear evaluation concatenates it
/// with the CLS token.
///
/// # Errors
/// candle's errors for a wrong rank.
pub fn mean_patch(hidden: &Tensor) -> Result<Tensor> {
    let len = hidden.dim(1)?;
    Ok(hidden.narrow(1, 1, len - 1)?.mean(1)?)
}

/// The CLS token of hidden states `batch × (1 + patches) × H`.
///
/// # Errors
/// candle's errors for a wrong rank.
pub fn cls(hidden: &Tensor) -> Result<Tensor> {
    Ok(hidden.narrow(1, 0, 1)?.squeeze(1)?)
}
