//! Operations the models share: candle-nn's fused kernels (or plain
//! compositions) where no gradient will flow, and where one will, a custom
//! op with its own backward that keeps only its inputs or output alive
//! (RMSNorm, RoPE, SwiGLU and GELU, their elementwise math vectorised in
//! `vmath`: a composition of tensor ops would keep one to six intermediate
//! copies of the activations for the backward pass). Attention is in
//! `attention`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, Layout, Shape, Tensor};

use super::vmath::{self, Kernel};
use crate::error::Result;
use crate::weights::VarPath;

/// An additive attention mask that every head shares: `batches` (1, or one
/// per batch row) × `len` × `total` values, from a tensor of shape
/// `batches × 1 × 1 × len × total`.
#[derive(Debug, Clone)]
pub(crate) struct AttentionMask {
    pub(super) values: Arc<[f32]>,
    pub(super) batches: usize,
    pub(super) len: usize,
    pub(super) total: usize,
}

impl AttentionMask {
    /// The mask `tensor`, `batches × 1 × 1 × len × total`.
    pub(crate) fn new(tensor: &Tensor) -> Result<Self> {
        let (batches, _, _, len, total) = tensor.dims5()?;
        let values: Arc<[f32]> = tensor.flatten_all()?.to_vec1::<f32>()?.into();
        Ok(AttentionMask {
            values,
            batches,
            len,
            total,
        })
    }
}

/// The SwiGLU gate `silu(gate) ⊙ up`, vectorised (`vmath`). Where a
/// gradient will flow, one custom op whose backward needs only its inputs
/// (the composition also kept `silu(gate)`, an intermediate-width
/// activation per token).
pub(crate) fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if gate.dims() != up.dims() {
        return Err(crate::Error::Shape {
            what: "SwiGLU up projection".into(),
            expected: gate.dims().to_vec(),
            found: up.dims().to_vec(),
        });
    }
    let (gate, up) = (gate.contiguous()?, up.contiguous()?);
    if !gate.track_op() && !up.track_op() {
        return Ok(gate.apply_op2_no_bwd(&up, &SwiGlu)?);
    }
    Ok(gate.apply_op2(&up, SwiGlu)?)
}

/// `y = silu(a) ⊙ b`, `silu(a) = a·σ(a)`; backward
/// `∂L/∂a = g ⊙ b ⊙ σ(a)(1 + a(1 − σ(a)))`, `∂L/∂b = g ⊙ silu(a)`, one
/// pass each.
struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "wft-swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, "swiglu")?, slice(s2, l2, "swiglu")?);
        let y = run_par("swiglu", Kernel::SwiGlu, a, b)?;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let ga = a.apply_op2_no_bwd(&(&g * b)?, &Elementwise(Kernel::SiluBackward))?;
        let gb = a.apply_op2_no_bwd(&g, &SwiGlu)?;
        Ok((Some(ga), Some(gb)))
    }
}

/// The cross-entropy of each row of `logits` (`rows × classes`, f32)
/// against its `targets` entry (`rows`, u32): `logsumexp(x) − x[target]`,
/// a vector of `rows`. One op that never materialises the log-softmax; its
/// backward writes `g · (softmax(x) − onehot(target))` in one pass (the
/// composition `log_softmax` then `gather` made about six full-size tensors
/// forward and twice as many backward: for a 49152-word vocabulary, 200 MB
/// each at batch 8 × 128).
///
/// # Errors
/// [`crate::Error::Shape`] for mismatched shapes; candle's errors for a
/// target out of range.
pub(crate) fn cross_entropy_rows(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, classes) = logits.dims2()?;
    if targets.dims() != [rows] || classes == 0 {
        return Err(crate::Error::Shape {
            what: "cross-entropy targets".into(),
            expected: vec![rows],
            found: targets.dims().to_vec(),
        });
    }
    let (logits, targets) = (
        logits.contiguous()?,
        targets.to_dtype(candle_core::DType::U32)?.contiguous()?,
    );
    if logits.track_op() {
        Ok(logits.apply_op2(&targets, CrossEntropy)?)
    } else {
        Ok(logits.apply_op2_no_bwd(&targets, &CrossEntropy)?)
    }
}

/// Rows of logits against u32 targets; see [`cross_entropy_rows`].
struct CrossEntropy;

impl CrossEntropy {
    /// The logits and targets, checked (every target below the class count).
    fn inputs<'a>(
        s1: &'a CpuStorage,
        l1: &Layout,
        s2: &'a CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(&'a [f32], &'a [u32], usize)> {
        let x = slice(s1, l1, "cross-entropy")?;
        let CpuStorage::U32(t) = s2 else {
            candle_core::bail!("cross-entropy: u32 targets")
        };
        let Some((a, b)) = l2.contiguous_offsets() else {
            candle_core::bail!("cross-entropy: non-contiguous targets")
        };
        let t = &t[a..b];
        let classes = *l1.shape().dims().last().unwrap_or(&0);
        if classes == 0 || x.len() != t.len() * classes {
            candle_core::bail!("cross-entropy: {} logits for {} targets", x.len(), t.len())
        }
        if let Some(bad) = t.iter().find(|&&c| c as usize >= classes) {
            candle_core::bail!("cross-entropy: target {bad} of {classes} classes")
        }
        Ok((x, t, classes))
    }
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "wft-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (x, t, classes) = Self::inputs(s1, l1, s2, l2)?;
        let nll: Vec<f32> = x
            .par_chunks(classes)
            .zip(t.par_iter())
            .map_init(Vec::new, |scratch, (row, &target)| {
                scratch.clear();
                scratch.extend_from_slice(row);
                let (max, sum) = vmath::exp_from_max(scratch);
                max + sum.ln() - row[target as usize]
            })
            .collect();
        Ok((CpuStorage::F32(nll), Shape::from(t.len())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        nll: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let (rows, classes) = logits.dims2()?;
        let (gs, ls) = (g.to_vec1::<f32>()?, nll.to_vec1::<f32>()?);
        let (sx, lx) = logits.storage_and_layout();
        let (st, lt) = targets.storage_and_layout();
        let (candle_core::Storage::Cpu(sx), candle_core::Storage::Cpu(st)) = (&*sx, &*st) else {
            candle_core::bail!("cross-entropy: the fused op runs on the CPU")
        };
        let (x, t, _) = Self::inputs(sx, lx, st, lt)?;
        let mut d = vec![0f32; rows * classes];
        d.par_chunks_mut(classes)
            .zip(x.par_chunks(classes))
            .enumerate()
            .for_each(|(r, (d, row))| {
                // logsumexp(x) = nll + x[target]; softmax(x) = exp(x − lse).
                let target = t[r] as usize;
                let lse = ls[r] + row[target];
                d.copy_from_slice(row);
                vmath::exp_shifted_sum(d, lse);
                d.iter_mut().for_each(|v| *v *= gs[r]);
                d[target] -= gs[r];
            });
        Ok((Some(Tensor::from_vec(d, (rows, classes), logits.device())?), None))
    }
}

/// GELU, erf form: `x·Φ(x) = ½x(1 + erf(x/√2))`, vectorised (`vmath`;
/// candle's `gelu_erf` calls libm's scalar `erff` per element). Where a
/// gradient will flow, one custom op whose backward is one pass over `x`
/// and `g`; candle's own backward composes eleven full-size tensor ops.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.track_op() {
        return Ok(x.apply_op1_no_bwd(&Gelu)?);
    }
    Ok(x.apply_op1(Gelu)?)
}

/// Elements per parallel chunk of the elementwise ops.
pub(crate) const CHUNK: usize = 1 << 14;

/// `kernel` over `a` (and `b`, of the same length, for a two-input kernel)
/// into a new vector, chunks in parallel (rayon).
fn run_par(what: &str, kernel: Kernel, a: &[f32], b: &[f32]) -> candle_core::Result<Vec<f32>> {
    use rayon::prelude::*;
    if kernel.binary() && a.len() != b.len() {
        candle_core::bail!("{what}: {} values against {}", a.len(), b.len())
    }
    let mut y = vec![0f32; a.len()];
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(i, y)| {
        let at = i * CHUNK..i * CHUNK + y.len();
        let b = if kernel.binary() { &b[at.clone()] } else { &[] };
        kernel.run(&a[at], b, y);
    });
    Ok(y)
}

struct Gelu;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "wft-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, "gelu")?;
        Ok((
            CpuStorage::F32(run_par("gelu", Kernel::Gelu, x, &[])?),
            l.shape().clone(),
        ))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(x.apply_op2_no_bwd(
            &g.contiguous()?,
            &Elementwise(Kernel::GeluBackward),
        )?))
    }
}

/// A two-input `vmath` kernel as a (backward-free) op on tensors of one
/// shape: the gradient passes of GELU and SwiGLU.
struct Elementwise(Kernel);

impl CustomOp2 for Elementwise {
    fn name(&self) -> &'static str {
        "wft-elementwise"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, "elementwise")?, slice(s2, l2, "elementwise")?);
        let d = run_par("elementwise", self.0, a, b)?;
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// The residual step `x + y·λ`, `λ` scaling the last axis (DINOv2's layer
/// scale). With a constant `λ`, one op whose backward hands `g` to `x` and
/// `g·λ` to `y`: the composition's broadcast product is a node of its own
/// whose gradient candle zeroes and accumulates. The same bits as the
/// composition either way; a trained `λ` (full fine-tuning) takes the
/// composition, so that it gets its gradient.
///
/// # Errors
/// candle's errors when the shapes differ or `λ` does not fit the last axis.
pub(crate) fn scaled_residual(x: &Tensor, y: &Tensor, scale: &Tensor) -> Result<Tensor> {
    if scale.track_op() {
        return Ok((x + y.broadcast_mul(scale)?)?);
    }
    let width = x.dim(D::Minus1)?;
    if x.dims() != y.dims() || scale.dims() != [width] {
        return Err(crate::Error::Shape {
            what: "scaled residual (the branch; the scale)".into(),
            expected: [x.dims(), &[width]].concat(),
            found: [y.dims(), scale.dims()].concat(),
        });
    }
    let op = ScaledResidual {
        scale: scale.to_vec1::<f32>()?,
    };
    let (x, y) = (x.contiguous()?, y.contiguous()?);
    if x.track_op() || y.track_op() {
        Ok(x.apply_op2(&y, op)?)
    } else {
        Ok(x.apply_op2_no_bwd(&y, &op)?)
    }
}

/// `x + y·λ` over rows of `λ`'s width.
struct ScaledResidual {
    scale: Vec<f32>,
}

impl CustomOp2 for ScaledResidual {
    fn name(&self) -> &'static str {
        "wft-scaled-residual"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (x, y) = (slice(s1, l1, "scaled residual")?, slice(s2, l2, "scaled residual")?);
        let w = self.scale.len().max(1);
        if x.len() != y.len() || x.len() % w != 0 {
            candle_core::bail!("scaled residual: {} and {} values in rows of {w}", x.len(), y.len())
        }
        let rows = (CHUNK / w).max(1) * w;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(rows)
            .zip(x.par_chunks(rows).zip(y.par_chunks(rows)))
            .for_each(|(o, (x, y))| {
                for ((o, x), y) in o.chunks_exact_mut(w).zip(x.chunks_exact(w)).zip(y.chunks_exact(w)) {
                    for (((o, &x), &y), &l) in o.iter_mut().zip(x).zip(y).zip(&self.scale) {
                        *o = x + y * l;
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _x: &Tensor,
        _y: &Tensor,
        _out: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let scale = Tensor::from_slice(&self.scale, self.scale.len(), g.device())?;
        Ok((Some(g.clone()), Some(g.broadcast_mul(&scale)?)))
    }
}

/// RMS normalisation over the last axis, scaled by `weight`:
/// `x / sqrt(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let x = x.contiguous()?;
    if !x.track_op() && !weight.track_op() {
        return Ok(candle_nn::ops::rms_norm(&x, weight, eps as f32)?);
    }
    Ok(x.apply_op2(weight, RmsNorm { eps })?)
}

/// Rotary position embedding in the half-split ("rotate half") layout of
/// transformers' Llama: `x · cos + rotate_half(x) · sin`, on token-major
/// projections `x` of shape `batch × len × (heads·head_dim)` (as the linear
/// layers give them and the fused attention takes them), with `cos`/`sin`
/// of `len × head_dim/2` (shared by every row) or `batch × len ×
/// head_dim/2` (one per row). One custom op either way; its backward is the
/// rotation by `−sin`.
///
/// # Errors
/// [`crate::Error::Shape`] when the width does not split into `heads` of
/// even width.
pub(crate) fn rope(x: &Tensor, heads: usize, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let x = x.contiguous()?;
    let (_, len, w) = x.dims3()?;
    if heads == 0 || !w.is_multiple_of(heads) || !(w / heads).is_multiple_of(2) {
        return Err(crate::Error::Shape {
            what: format!("rotary embedding input split into {heads} heads of even width"),
            expected: vec![len, heads],
            found: x.dims().to_vec(),
        });
    }
    let table = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.contiguous()?.flatten_all()?.to_vec1::<f32>()?) };
    let op = Rope {
        cos: table(cos)?,
        sin: table(sin)?,
        rows: if cos.rank() == 3 { cos.dim(0)? } else { 1 },
        heads,
    };
    if x.track_op() {
        Ok(x.apply_op1(op)?)
    } else {
        Ok(x.apply_op1_no_bwd(&op)?)
    }
}

/// The `f32` slice a contiguous layout covers.
pub(crate) fn slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{what}: the models compute in f32")
    };
    let Some((a, b)) = l.contiguous_offsets() else {
        candle_core::bail!("{what}: a non-contiguous input")
    };
    Ok(&v[a..b])
}

/// RMSNorm with a backward pass that recomputes the row scale from `x`.
struct RmsNorm {
    eps: f64,
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "wft-rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "rms_norm")?, slice(s2, l2, "rms_norm")?);
        let h = w.len();
        if h == 0 || !x.len().is_multiple_of(h) {
            candle_core::bail!("rms_norm: rows of {} against a weight of {h}", x.len())
        }
        let mut y = vec![0f32; x.len()];
        for (row, out) in x.chunks_exact(h).zip(y.chunks_exact_mut(h)) {
            let ms = row.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / h as f64;
            let r = (1.0 / (ms + self.eps).sqrt()) as f32;
            for ((o, &v), &g) in out.iter_mut().zip(row).zip(w) {
                *o = v * r * g;
            }
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // r = 1/sqrt(mean(x²) + eps), y = x·r·w:
        // ∂L/∂x = r·(g·w) − x·r³·mean(x·g·w), ∂L/∂w = Σ_rows g·x·r.
        let r = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?.sqrt()?.recip()?;
        let gw = g.broadcast_mul(w)?;
        let dot = (x * &gw)?.mean_keepdim(D::Minus1)?;
        let gx = (gw.broadcast_mul(&r)? - x.broadcast_mul(&(r.powf(3.0)? * dot)?)?)?;
        let gweight = if w.track_op() {
            let h = w.dim(0)?;
            Some((g * x.broadcast_mul(&r)?)?.reshape(((), h))?.sum(0)?)
        } else {
            None
        };
        Ok((Some(gx), gweight))
    }
}

/// RoPE over contiguous `… × len × head_dim` rows; linear in `x`, so its
/// backward is the same rotation by `−sin`.
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// 1 for tables shared by the batch, else one table per batch row.
    rows: usize,
    /// Heads per token: consecutive rows of `head_dim` that share a position.
    heads: usize,
}

impl Rope {
    fn rotate(&self, x: &[f32], shape: &Shape, sign: f32) -> candle_core::Result<Vec<f32>> {
        let (batch, len, w) = shape.dims3()?;
        let d = w / self.heads.max(1);
        let half = d / 2;
        let table = self.rows * len * half;
        if self.cos.len() != table
            || self.sin.len() != table
            || d == 0
            || !d.is_multiple_of(2)
            || !batch.is_multiple_of(self.rows)
        {
            candle_core::bail!("rope: tables of {} for {len} positions of width {d}", self.cos.len())
        }
        let mut y = vec![0f32; x.len()];
        // Row i of `head_dim` values is head i % heads of token i / heads.
        for (i, (row, out)) in x.chunks_exact(d).zip(y.chunks_exact_mut(d)).enumerate() {
            let token = i / self.heads;
            let b = if self.rows == 1 { 0 } else { token / len };
            let p = b * len + token % len;
            let (cos, sin) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
            let (lo, hi) = row.split_at(half);
            let (out_lo, out_hi) = out.split_at_mut(half);
            for k in 0..half {
                let s = sign * sin[k];
                out_lo[k] = lo[k] * cos[k] - hi[k] * s;
                out_hi[k] = hi[k] * cos[k] + lo[k] * s;
            }
        }
        Ok(y)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "wft-rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.rotate(slice(s, l, "rope")?, l.shape(), 1.0)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let g = g.contiguous()?;
        let back = RopeBack(Rope {
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            rows: self.rows,
            heads: self.heads,
        });
        Ok(Some(g.apply_op1_no_bwd(&back)?))
    }
}

/// The rotation by `−sin`: RoPE's backward.
struct RopeBack(Rope);

impl CustomOp1 for RopeBack {
    fn name(&self) -> &'static str {
        "wft-rope-backward"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.0.rotate(slice(s, l, "rope backward")?, l.shape(), -1.0)?;
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

/// Layer normalisation over the last axis with a weight and a bias.
#[derive(Debug)]
pub(crate) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// `weight` and `bias` (`h` each) at `vb`.
    pub(crate) fn load(vb: &VarPath<'_>, h: usize, eps: f64) -> Result<Self> {
        Ok(LayerNorm {
            weight: vb.get("weight", &[h])?,
            bias: vb.get("bias", &[h])?,
            eps,
        })
    }

    /// `(x − mean) / sqrt(var + eps) · weight + bias` over the last axis:
    /// one op, vectorised (`vmath`), whose backward recomputes each row's
    /// statistics from `x` (the composition kept five copies of the
    /// activations). The same kernel where no gradient will flow, so a
    /// model computes the same bits with and without a graph.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.contiguous()?;
        let op = LayerNormOp { eps: self.eps as f32 };
        if !x.track_op() && !self.weight.track_op() && !self.bias.track_op() {
            return Ok(x.apply_op3_no_bwd(&self.weight, &self.bias, &op)?);
        }
        Ok(x.apply_op3(&self.weight, &self.bias, op)?)
    }
}

/// LayerNorm over rows of `h`: forward `x̂·w + b` with `x̂ = (x − μ)/σ`,
/// backward `∂x = (ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))/σ` with `ĝ = g ⊙ w`,
/// `∂w = Σ_rows g ⊙ x̂`, `∂b = Σ_rows g`.
struct LayerNormOp {
    eps: f32,
}

/// Rows per parallel task of the LayerNorm kernels.
const NORM_ROWS: usize = 64;

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "wft-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        use rayon::prelude::*;
        let (x, w, b) = (
            slice(s1, l1, "layer norm")?,
            slice(s2, l2, "layer norm")?,
            slice(s3, l3, "layer norm")?,
        );
        let h = w.len();
        if h == 0 || b.len() != h || x.len() % h != 0 {
            candle_core::bail!(
                "layer norm: rows of {} against {h} weights, {} biases",
                x.len(),
                b.len()
            )
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(h * NORM_ROWS)
            .zip(x.par_chunks(h * NORM_ROWS))
            .for_each(|(y, x)| vmath::layer_norm_rows(x, w, b, self.eps, y));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        use rayon::prelude::*;
        let h = w.elem_count();
        let g = g.contiguous()?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (xv, wv, gv) = (
            crate::matmul::contiguous(&xs, xl, "layer norm backward")?,
            crate::matmul::contiguous(&ws, wl, "layer norm backward")?,
            crate::matmul::contiguous(&gs, gl, "layer norm backward")?,
        );
        if h == 0 || wv.len() != h || xv.len() % h != 0 || gv.len() != xv.len() {
            candle_core::bail!(
                "layer norm backward: {} inputs, {} gradients, {h} weights",
                xv.len(),
                gv.len()
            )
        }
        let params = w.track_op() || b.track_op();
        let mut dx = vec![0f32; xv.len()];
        // With trained parameters, each task's Σ g ⊙ x̂ and Σ g, summed
        // afterwards in task order (empty, and so adding nothing, without).
        let parts: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(h * NORM_ROWS)
            .zip(xv.par_chunks(h * NORM_ROWS).zip(gv.par_chunks(h * NORM_ROWS)))
            .map(|(dx, (x, g))| {
                let mut scratch = vmath::NormScratch::new(h);
                let (mut dw, mut db) = if params {
                    (vec![0f32; h], vec![0f32; h])
                } else {
                    (Vec::new(), Vec::new())
                };
                let sums = params.then_some((&mut dw[..], &mut db[..]));
                vmath::layer_norm_rows_backward(x, wv, g, self.eps, dx, &mut scratch, sums);
                (dw, db)
            })
            .collect();
        drop((xs, ws, gs));
        let (mut dw, mut db) = (vec![0f32; h], vec![0f32; h]);
        for (pw, pb) in parts {
            dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
            db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
        }
        let dx = Tensor::from_vec(dx, x.shape(), x.device())?;
        let tracked = |t: &Tensor, v: Vec<f32>| -> candle_core::Result<Option<Tensor>> {
            if t.track_op() {
                Ok(Some(Tensor::from_vec(v, h, t.device())?))
            } else {
                Ok(None)
            }
        };
        Ok((Some(dx), tracked(w, dw)?, tracked(b, db)?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use super::{rms_norm, rope, scaled_residual};

    use crate::models::test_util::{assert_grads_match, bits, max_diff, reference_nll};

    /// The custom ops (taken when a gradient flows) compute what candle-nn's
    /// fused kernels compute, and their gradients match candle's autodiff
    /// of the plain formulas.
    #[test]
    fn custom_ops_match_fused_kernels_and_autodiff() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let x0 = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev)?;
        let w0 = Tensor::randn(1f32, 0.1, 8, &dev)?;
        let freqs = Tensor::randn(0f32, 1.0, (5, 4), &dev)?;
        let (cos, sin) = (freqs.cos()?, freqs.sin()?);
        let (x, w) = (Var::from_tensor(&x0)?, Var::from_tensor(&w0)?);
        // Forward: custom (tracked) against fused (untracked).
        let y = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5)?;
        assert!(max_diff(&y, &rms_norm(&x0, &w0, 1e-5)?) < 1e-5);
        // RoPE takes token-major rows (batch × len × heads·d); candle-nn's
        // kernel, the reference, head-major ones.
        let tokens = |t: &Tensor| t.transpose(1, 2).and_then(|t| t.reshape((2, 5, 24)));
        let r = rope(&tokens(x.as_tensor())?, 3, &cos, &sin)?;
        let reference = tokens(&candle_nn::rotary_emb::rope(&x0, &cos, &sin)?)?;
        assert!(max_diff(&r, &reference) < 1e-6);
        assert!(max_diff(&rope(&tokens(&x0)?, 3, &cos, &sin)?, &reference) < 1e-6);
        // Backward: against autodiff of the composed formulas.
        let probe = Tensor::randn(0f32, 1.0, (2, 3, 5, 8), &dev)?;
        let g = (y * &probe)?.sum_all()?.backward()?;
        let ms = (x.as_tensor().sqr()?.mean_keepdim(3)? + 1e-5)?.sqrt()?;
        let plain = x.as_tensor().broadcast_div(&ms)?.broadcast_mul(w.as_tensor())?;
        let gp = (plain * &probe)?.sum_all()?.backward()?;
        for v in [&x, &w] {
            let (a, b) = (
                g.get(v.as_tensor()).ok_or("grad")?,
                gp.get(v.as_tensor()).ok_or("grad")?,
            );
            assert!(max_diff(a, b) < 1e-4, "rms_norm gradient off by {}", max_diff(a, b));
        }
        let g = (r * tokens(&probe)?)?.sum_all()?.backward()?;
        let (x1, x2) = (x.as_tensor().narrow(3, 0, 4)?, x.as_tensor().narrow(3, 4, 4)?);
        let (c, s) = (cos.unsqueeze(0)?.unsqueeze(0)?, sin.unsqueeze(0)?.unsqueeze(0)?);
        let lo = (x1.broadcast_mul(&c)? - x2.broadcast_mul(&s)?)?;
        let hi = (x2.broadcast_mul(&c)? + x1.broadcast_mul(&s)?)?;
        let gp = (Tensor::cat(&[lo, hi], 3)? * &probe)?.sum_all()?.backward()?;
        let (a, b) = (
            g.get(x.as_tensor()).ok_or("grad")?,
            gp.get(x.as_tensor()).ok_or("grad")?,
        );
        assert!(max_diff(a, b) < 1e-5, "rope gradient off by {}", max_diff(a, b));
        // One table per batch row.
        let f3 = Tensor::randn(0f32, 1.0, (2, 5, 4), &dev)?;
        let (c3, s3) = (f3.cos()?, f3.sin()?);
        let r3 = rope(&tokens(x.as_tensor())?, 3, &c3, &s3)?;
        let reference = tokens(&candle_nn::rotary_emb::rope(&x0, &c3, &s3)?)?;
        assert!(max_diff(&r3, &reference) < 1e-6);
        assert!(rope(&tokens(&x0)?, 5, &c3, &s3).is_err());
        Ok(())
    }

    /// The fused GELU's forward (tracked and untracked) is within 3e-7·|x|
    /// of the exact GELU in f64 and of candle's `gelu_erf` (libm's `erff`);
    /// its backward equals candle's autodiff of `gelu_erf` and central
    /// differences in f64 of the exact GELU.
    #[test]
    fn fused_gelu_matches_candle_and_central_differences() -> Result<(), Box<dyn std::error::Error>> {
        use super::gelu;
        let dev = Device::Cpu;
        // Over several parallel chunks, with the tails of erf's range.
        let x0 = (Tensor::randn(0f32, 1.0, (3, 50_000), &dev)? * 3.0)?;
        let x = Var::from_tensor(&x0)?;
        let fused = gelu(x.as_tensor())?;
        let xs = x0.flatten_all()?.to_vec1::<f32>()?;
        for (what, y) in [
            ("tracked", fused.clone()),
            ("untracked", gelu(&x0)?),
            ("candle's gelu_erf", x0.gelu_erf()?),
        ] {
            let worst = xs
                .iter()
                .zip(y.flatten_all()?.to_vec1::<f32>()?)
                .map(|(&v, y)| {
                    let v = f64::from(v);
                    let exact = 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2));
                    (f64::from(y) - exact).abs() / v.abs().max(1e-30)
                })
                .fold(0.0, f64::max);
            assert!(worst < 3e-7, "{what} GELU off the exact one by {worst}·|x|");
        }
        let probe = Tensor::randn(0f32, 1.0, (3, 50_000), &dev)?;
        let g = (fused * &probe)?.sum_all()?.backward()?;
        let gp = (x.as_tensor().gelu_erf()? * &probe)?.sum_all()?.backward()?;
        let (a, b) = (
            g.get(x.as_tensor()).ok_or("grad")?,
            gp.get(x.as_tensor()).ok_or("grad")?,
        );
        // candle's backward rounds 1/√(2π) to 0.398942 (7e-7 relative).
        assert!(
            max_diff(a, b) < 3e-6,
            "gelu gradient off candle's by {}",
            max_diff(a, b)
        );
        // Central differences of the exact GELU, x·Φ(x), in f64.
        let exact = |v: f64| 0.5 * v * (1.0 + erf64(v / std::f64::consts::SQRT_2));
        let (xs, gs, ps) = (
            x0.flatten_all()?.to_vec1::<f32>()?,
            a.flatten_all()?.to_vec1::<f32>()?,
            probe.flatten_all()?.to_vec1::<f32>()?,
        );
        let h = 1e-4;
        let worst = (0..xs.len())
            .step_by(97)
            .map(|i| {
                let v = f64::from(xs[i]);
                let fd = (exact(v + h) - exact(v - h)) / (2.0 * h) * f64::from(ps[i]);
                (fd - f64::from(gs[i])).abs() / f64::from(ps[i]).abs().max(1.0)
            })
            .fold(0.0, f64::max);
        assert!(worst < 2e-6, "gelu gradient off central differences by {worst}");
        Ok(())
    }

    /// The fused LayerNorm computes what the composition of tensor ops
    /// computes, with the gradients of candle's autodiff of it (input,
    /// weight and bias), over several parallel row blocks and a partial one.
    #[test]
    fn fused_layer_norm_matches_its_composition() -> Result<(), Box<dyn std::error::Error>> {
        use candle_core::D;
        let dev = Device::Cpu;
        let (rows, h) = (2 * 64 * 3 + 17, 48);
        let x0 = (Tensor::randn(0f32, 2.0, (rows, h), &dev)? + 0.7)?;
        let (w0, b0) = (Tensor::randn(1f32, 0.3, h, &dev)?, Tensor::randn(0f32, 0.3, h, &dev)?);
        let (x, w, b) = (Var::from_tensor(&x0)?, Var::from_tensor(&w0)?, Var::from_tensor(&b0)?);
        let norm = super::LayerNorm {
            weight: w.as_tensor().clone(),
            bias: b.as_tensor().clone(),
            eps: 1e-6,
        };
        let fused = norm.forward(x.as_tensor())?;
        let n = h as f64;
        let mean = (x.as_tensor().sum_keepdim(D::Minus1)? / n)?;
        let xc = x.as_tensor().broadcast_sub(&mean)?;
        let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / n)?;
        let plain = xc
            .broadcast_div(&(var + 1e-6)?.sqrt()?)?
            .broadcast_mul(w.as_tensor())?
            .broadcast_add(b.as_tensor())?;
        assert!(
            max_diff(&fused, &plain) < 1e-5,
            "forward off by {}",
            max_diff(&fused, &plain)
        );
        let probe = Tensor::randn(0f32, 1.0, (rows, h), &dev)?;
        let g = (fused * &probe)?.sum_all()?.backward()?;
        let gp = (plain * &probe)?.sum_all()?.backward()?;
        for (v, what) in [(&x, "input"), (&w, "weight"), (&b, "bias")] {
            let (a, c) = (
                g.get(v.as_tensor()).ok_or("grad")?,
                gp.get(v.as_tensor()).ok_or("grad")?,
            );
            let scale = c.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            assert!(
                max_diff(a, c) / scale < 1e-5,
                "layer norm {what} gradient off by {}",
                max_diff(a, c)
            );
        }
        // Constant weights get no gradient; the untracked path computes the
        // same bits as the tracked one, and what candle-nn's kernel computes.
        let frozen = super::LayerNorm {
            weight: w0.clone(),
            bias: b0.clone(),
            eps: 1e-6,
        };
        let y = frozen.forward(x.as_tensor())?;
        assert_eq!(bits(&y)?, bits(&frozen.forward(&x0)?)?);
        assert!(max_diff(&y, &candle_nn::ops::layer_norm(&x0, &w0, &b0, 1e-6)?) < 1e-5);
        let gf = (y * &probe)?.sum_all()?.backward()?;
        let (a, c) = (
            gf.get(x.as_tensor()).ok_or("grad")?,
            g.get(x.as_tensor()).ok_or("grad")?,
        );
        assert!(
            max_diff(a, c) < 1e-6,
            "input gradient with constant parameters off by {}",
            max_diff(a, c)
        );
        Ok(())
    }

    /// erf in f64 (candle's `erf_f64`): what is checked is the derivative
    /// formula and its f32 evaluation, far coarser than erf's f64 error.
    fn erf64(v: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(v)
    }

    /// The fused cross-entropy equals candle-nn's `log_softmax` then
    /// `gather` (tracked and untracked), with the same logits gradient;
    /// rows that span several parallel chunks and large logits included; a
    /// target out of range is an error.
    #[test]
    fn fused_cross_entropy_matches_log_softmax() -> Result<(), Box<dyn std::error::Error>> {
        use super::cross_entropy_rows;
        let dev = Device::Cpu;
        let (rows, classes) = (9, 1000);
        let x0 = (Tensor::randn(0f32, 1.0, (rows, classes), &dev)? * 20.0)?;
        let t: Vec<u32> = (0..rows as u32).map(|r| (r * 97 + 3) % classes as u32).collect();
        let t = Tensor::from_vec(t, rows, &dev)?;
        let x = Var::from_tensor(&x0)?;
        let fused = cross_entropy_rows(x.as_tensor(), &t)?;
        let plain = reference_nll(x.as_tensor(), &t)?;
        assert!(
            max_diff(&fused, &plain) < 1e-4,
            "forward off by {}",
            max_diff(&fused, &plain)
        );
        assert!(max_diff(&cross_entropy_rows(&x0, &t)?, &plain) < 1e-4);
        let probe = Tensor::randn(0f32, 1.0, rows, &dev)?;
        let g = (fused * &probe)?.sum_all()?.backward()?;
        let gp = (plain * &probe)?.sum_all()?.backward()?;
        // Logits of 20·N(0, 1) over 1000 classes reach about 75, where one
        // f32 ulp of logsumexp is 7.6e-6 of a probability times the probe
        // (|probe| up to about 3), on each side: 1e-5 failed about once in
        // 12 runs (1.2e-5), so the bound is four such ulps.
        assert_grads_match(&g, &gp, &[(&x, "logits")], 3e-5, "cross-entropy");
        let bad = Tensor::from_vec(vec![classes as u32; rows], rows, &dev)?;
        assert!(cross_entropy_rows(&x0, &bad).is_err());
        assert!(cross_entropy_rows(&x0, &t.narrow(0, 0, 3)?).is_err());
        Ok(())
    }

    /// The fused SwiGLU computes what its composition computes (tracked
    /// and untracked), with the gradients of candle's autodiff of it.
    #[test]
    fn fused_swiglu_matches_its_composition() -> Result<(), Box<dyn std::error::Error>> {
        use super::swiglu;
        let dev = Device::Cpu;
        let (a0, b0) = (
            Tensor::randn(0f32, 2.0, (3, 7), &dev)?,
            Tensor::randn(0f32, 1.0, (3, 7), &dev)?,
        );
        let (a, b) = (Var::from_tensor(&a0)?, Var::from_tensor(&b0)?);
        let y = swiglu(a.as_tensor(), b.as_tensor())?;
        let plain = (a0.silu()? * &b0)?;
        assert!(max_diff(&y, &plain) < 1e-6);
        assert!(max_diff(&swiglu(&a0, &b0)?, &plain) < 1e-6);
        let probe = Tensor::randn(0f32, 1.0, (3, 7), &dev)?;
        let g = (y * &probe)?.sum_all()?.backward()?;
        let gp = ((a.as_tensor().silu()? * b.as_tensor())? * &probe)?
            .sum_all()?
            .backward()?;
        for v in [&a, &b] {
            let (x, y) = (
                g.get(v.as_tensor()).ok_or("grad")?,
                gp.get(v.as_tensor()).ok_or("grad")?,
            );
            assert!(max_diff(x, y) < 1e-5, "swiglu gradient off by {}", max_diff(x, y));
        }
        Ok(())
    }

    /// The scaled residual is the composition bit for bit, forward and in
    /// both gradients; a trained scale takes the composition and gets its
    /// gradient; shapes that do not fit are errors.
    #[test]
    fn scaled_residual_is_the_composition() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        // More rows than one parallel chunk.
        let (x0, y0) = (
            Tensor::randn(0f32, 1.0, (3, 400, 48), &dev)?,
            Tensor::randn(0f32, 1.0, (3, 400, 48), &dev)?,
        );
        let l0 = Tensor::randn(0f32, 0.3, 48, &dev)?;
        let (x, y) = (Var::from_tensor(&x0)?, Var::from_tensor(&y0)?);
        let fused = scaled_residual(x.as_tensor(), y.as_tensor(), &l0)?;
        let plain = (x.as_tensor() + y.as_tensor().broadcast_mul(&l0)?)?;
        assert_eq!(bits(&fused)?, bits(&plain)?, "forward");
        assert_eq!(
            bits(&scaled_residual(&x0, &y0, &l0)?)?,
            bits(&plain)?,
            "untracked forward"
        );
        let probe = Tensor::randn(0f32, 1.0, fused.shape(), &dev)?;
        let g = (fused * &probe)?.sum_all()?.backward()?;
        let gp = (plain * &probe)?.sum_all()?.backward()?;
        for v in [&x, &y] {
            let (a, b) = (
                g.get(v.as_tensor()).ok_or("grad")?,
                gp.get(v.as_tensor()).ok_or("grad")?,
            );
            assert_eq!(bits(a)?, bits(b)?, "gradient");
        }
        let l = Var::from_tensor(&l0)?;
        let g = scaled_residual(x.as_tensor(), y.as_tensor(), l.as_tensor())?
            .sum_all()?
            .backward()?;
        assert!(g.get(l.as_tensor()).is_some(), "a trained scale gets no gradient");
        assert!(scaled_residual(x.as_tensor(), &y0.narrow(1, 0, 5)?, &l0).is_err());
        assert!(scaled_residual(x.as_tensor(), y.as_tensor(), &l0.narrow(0, 0, 5)?).is_err());
        Ok(())
    }
}
