//! Fused multi-head scaled dot-product attention on token-major
//! projections: `q` of shape `batch × len × (heads·d)`, `k` and `v` of
//! `batch × total × (kv_heads·d)`, straight from the linear layers. Each
//! head's products run as strided views into those tensors (the `gemm`
//! crate, candle's own CPU matmul kernel), so no transposed copy is made
//! in either direction, and the backward pass is one op instead of the
//! dozen nodes (each with its own gradient buffer) of the composition.
//!
//! Forward, per head: `P = softmax(scale·Q·Kᵀ + mask)`, `O = P·V`.
//! Backward recomputes `P` (a `len × total` tile per head) and forms
//! `∂V = Pᵀ·∂O`, `∂S = scale · P ⊙ (∂O·Vᵀ − rowsum(P ⊙ ∂O·Vᵀ))`,
//! `∂Q = ∂S·K`, `∂K = ∂Sᵀ·Q`. Query heads that share a key/value head
//! (grouped-query attention) run in one task that sums their `∂K`, `∂V`.
//! Tasks are independent and sequential inside, so results do not depend
//! on the thread count.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::ops::AttentionMask;
use super::vmath;
use crate::error::{Error, Result};
use crate::matmul::{contiguous, product};

/// Attention of `q` over `k`, `v` (shapes in the module docs), with `heads`
/// query heads, `kv_heads` key/value heads and an optional additive `mask`
/// (`len × total` per batch row, or one for all); `batch × len ×
/// (heads·d)`, the heads side by side as the output projection takes them.
///
/// # Errors
/// [`Error::Shape`] when the shapes or the mask do not fit the heads.
pub(crate) fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    mask: Option<&AttentionMask>,
) -> Result<Tensor> {
    let (batch, len, _) = q.dims3()?;
    let (_, total, _) = k.dims3()?;
    let head_dim = head_dim(q, k, v, heads, kv_heads)?;
    if let Some(m) = mask
        && (m.len != len || m.total != total || (m.batches != 1 && m.batches != batch))
    {
        return Err(Error::Shape {
            what: "attention mask".into(),
            expected: vec![batch, len, total],
            found: vec![m.batches, m.len, m.total],
        });
    }
    let geometry = Geometry {
        sequences: Sequences::Uniform { batch, len, total },
        heads,
        kv_heads,
        head_dim,
    };
    apply(q, k, v, geometry, mask.cloned())
}

/// Self-attention over sequences packed row after row (no padding): `x`
/// rows `starts[s]..starts[s + 1]` are sequence `s`, in `q` (`rows ×
/// (heads·d)`) as in `k` and `v` (`rows × (kv_heads·d)`); the output is
/// `rows × (heads·d)`. With no padding there is no mask, and the linear
/// layers around it compute no padded rows either.
///
/// # Errors
/// [`Error::Shape`] when the shapes do not fit the heads or the starts do
/// not rise from 0 to the row count.
pub(crate) fn packed_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    kv_heads: usize,
    starts: &std::sync::Arc<[usize]>,
) -> Result<Tensor> {
    let (rows, _) = q.dims2()?;
    k.dims2()?;
    let head_dim = head_dim(q, k, v, heads, kv_heads)?;
    if starts.first() != Some(&0) || starts.last() != Some(&rows) || starts.windows(2).any(|w| w[0] > w[1]) {
        return Err(Error::Shape {
            what: "packed sequence starts (rising from 0 to the row count)".into(),
            expected: vec![0, rows],
            found: starts.to_vec(),
        });
    }
    let geometry = Geometry {
        sequences: Sequences::Packed(starts.clone()),
        heads,
        kv_heads,
        head_dim,
    };
    apply(q, k, v, geometry, None)
}

/// The head width of `q`'s rows split into `heads` query heads that share
/// `kv_heads` key/value heads, checked against `k` and `v`: the same
/// leading (batch or row) size as `q`, rows of `kv_heads` heads of that
/// width, and one shape for both. The callers have fixed the rank.
fn head_dim(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, kv_heads: usize) -> Result<usize> {
    let (qd, kd) = (q.dims(), k.dims());
    let qw = qd.last().copied().unwrap_or(0);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) || !qw.is_multiple_of(heads) {
        return Err(Error::Shape {
            what: format!("queries split into {heads} heads sharing {kv_heads} key/value heads"),
            expected: vec![qd.first().copied().unwrap_or(0), heads],
            found: qd.to_vec(),
        });
    }
    let head_dim = qw / heads;
    if kd.first() != qd.first() || kd.last() != Some(&(kv_heads * head_dim)) || v.dims() != kd {
        // `k`'s shape with `q`'s leading size and the key/value width.
        let lead = qd.first().copied().unwrap_or(0);
        let expected = (0..kd.len())
            .map(|i| match i {
                0 => lead,
                i if i + 1 == kd.len() => kv_heads * head_dim,
                i => kd[i],
            })
            .collect();
        return Err(Error::Shape {
            what: "attention keys and values".into(),
            expected,
            found: v.dims().to_vec(),
        });
    }
    Ok(head_dim)
}

/// The op on `q`, `k`, `v`, tracked when a gradient will flow.
fn apply(q: &Tensor, k: &Tensor, v: &Tensor, geometry: Geometry, mask: Option<AttentionMask>) -> Result<Tensor> {
    let blocks = mask.as_ref().map(query_blocks).unwrap_or_default();
    let op = Attention {
        scale: 1.0 / (geometry.head_dim as f32).sqrt(),
        geometry,
        mask,
        blocks,
    };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    if q.track_op() || k.track_op() || v.track_op() {
        Ok(q.apply_op3(&k, &v, op)?)
    } else {
        Ok(q.apply_op3_no_bwd(&k, &v, &op)?)
    }
}

/// The sequences the rows hold.
#[derive(Debug, Clone)]
enum Sequences {
    /// `batch` sequences of `len` queries over `total` keys each.
    Uniform { batch: usize, len: usize, total: usize },
    /// Packed self-attention: sequence `s` is rows `starts[s]..starts[s + 1]`.
    Packed(std::sync::Arc<[usize]>),
}

/// One sequence's rows: the first query row, the query count, the first
/// key row, the key count.
#[derive(Debug, Clone, Copy)]
struct Span {
    q_row: usize,
    len: usize,
    kv_row: usize,
    total: usize,
}

impl Sequences {
    fn count(&self) -> usize {
        match self {
            Sequences::Uniform { batch, .. } => *batch,
            Sequences::Packed(starts) => starts.len() - 1,
        }
    }

    fn span(&self, s: usize) -> Span {
        match self {
            Sequences::Uniform { len, total, .. } => Span {
                q_row: s * len,
                len: *len,
                kv_row: s * total,
                total: *total,
            },
            Sequences::Packed(starts) => Span {
                q_row: starts[s],
                len: starts[s + 1] - starts[s],
                kv_row: starts[s],
                total: starts[s + 1] - starts[s],
            },
        }
    }

    /// Rows of `q` and of `k`.
    fn rows(&self) -> (usize, usize) {
        match self {
            Sequences::Uniform { batch, len, total } => (batch * len, batch * total),
            Sequences::Packed(starts) => (starts[starts.len() - 1], starts[starts.len() - 1]),
        }
    }
}

/// Where each head's rows sit in the token-major tensors.
#[derive(Debug, Clone)]
struct Geometry {
    sequences: Sequences,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl Geometry {
    /// Row stride of `q` (and of the output and `∂Q`).
    fn q_stride(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Row stride of `k` and `v`.
    fn kv_stride(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Offset of query head `h` of the sequence at `span`.
    fn q_at(&self, span: Span, h: usize) -> usize {
        span.q_row * self.q_stride() + h * self.head_dim
    }

    /// Offset of key/value head `g` of the sequence at `span`.
    fn kv_at(&self, span: Span, g: usize) -> usize {
        span.kv_row * self.kv_stride() + g * self.head_dim
    }

    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// A raw pointer the tasks share; each writes a region no other task
/// touches (its own head's columns).
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: the tasks write disjoint regions (see the call sites).
unsafe impl Send for Shared {}
// SAFETY: as above.
unsafe impl Sync for Shared {}

impl Shared {
    /// The element `i` places on.
    fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// The attention op; backward recomputes the probabilities.
struct Attention {
    geometry: Geometry,
    scale: f32,
    mask: Option<AttentionMask>,
    /// With a mask: per mask batch, its query blocks and the keys each sees.
    blocks: Vec<Vec<QueryBlock>>,
}

/// Query rows `first..first + rows` of a sequence, whose products run over
/// its first `keys` keys only: the keys after them are hidden from every row
/// of the block (the upper triangle of a causal mask, most of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct QueryBlock {
    first: usize,
    rows: usize,
    keys: usize,
}

/// Query rows per block of a masked sequence.
const QUERY_BLOCK: usize = 32;

/// How far below its row's largest mask value a key's value hides it
/// exactly: that key's `exp(score − max)` is below `exp(−104)` and rounds
/// to 0 in `f32` for any scaled score under 4.9e5 in magnitude. The
/// decoder's masks are 0 and −1e9.
const HIDDEN_BELOW: f32 = 1e6;

/// The query blocks of each batch of `mask` and how many leading keys each
/// block's rows can see (a NaN counts as seen, so that it propagates).
fn query_blocks(mask: &AttentionMask) -> Vec<Vec<QueryBlock>> {
    let (len, total) = (mask.len, mask.total.max(1));
    (0..mask.batches)
        .map(|mb| {
            let rows = &mask.values[mb * len * mask.total..(mb + 1) * len * mask.total];
            let reach = |row: &[f32]| {
                let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                row.iter()
                    .rposition(|&m| m >= top - HIDDEN_BELOW || m.is_nan())
                    .map_or(row.len(), |j| j + 1)
            };
            (0..len)
                .step_by(QUERY_BLOCK)
                .map(|first| {
                    let n = QUERY_BLOCK.min(len - first);
                    let keys = rows[first * mask.total..(first + n) * mask.total]
                        .chunks_exact(total)
                        .map(reach)
                        .max()
                        .unwrap_or(mask.total);
                    QueryBlock { first, rows: n, keys }
                })
                .collect()
        })
        .collect()
}

impl Attention {
    /// The query blocks of sequence `b` at `span`: one block seeing every
    /// key without a mask.
    fn blocks(&self, b: usize, span: Span) -> std::borrow::Cow<'_, [QueryBlock]> {
        match &self.mask {
            Some(m) => std::borrow::Cow::Borrowed(&self.blocks[if m.batches > 1 { b } else { 0 }]),
            None => std::borrow::Cow::Owned(vec![QueryBlock {
                first: 0,
                rows: span.len,
                keys: span.total,
            }]),
        }
    }

    /// `P` of query head `h` of sequence `b` into `p` (`len × total`; of
    /// each block's rows, the columns of the keys it sees).
    fn probs(&self, q: &[f32], k: &[f32], b: usize, h: usize, p: &mut Vec<f32>) {
        let g = &self.geometry;
        let span = g.sequences.span(b);
        p.resize(span.len * span.total, 0.0);
        let (qo, ko) = (g.q_at(span, h), g.kv_at(span, h / g.group()));
        let mb = match &self.mask {
            Some(m) if m.batches > 1 => b,
            _ => 0,
        };
        for blk in self.blocks(b, span).iter() {
            let at = blk.first * span.total;
            // SAFETY: the operands lie inside `q`, `k` and `p`, whose
            // lengths the op checked against the geometry.
            unsafe {
                product(
                    (blk.rows, blk.keys, g.head_dim),
                    (p[at..].as_mut_ptr(), span.total, 1),
                    false,
                    (q[qo + blk.first * g.q_stride()..].as_ptr(), g.q_stride(), 1),
                    // Kᵀ: element (d, j) is k[j·stride + d].
                    (k[ko..].as_ptr(), 1, g.kv_stride()),
                    false,
                );
            }
            for i in blk.first..blk.first + blk.rows {
                let row = &mut p[i * span.total..i * span.total + blk.keys];
                match &self.mask {
                    Some(m) => {
                        let at = (mb * span.len + i) * span.total;
                        for (s, &m) in row.iter_mut().zip(&m.values[at..at + blk.keys]) {
                            *s = *s * self.scale + m;
                        }
                    }
                    None => row.iter_mut().for_each(|s| *s *= self.scale),
                }
                let (_, sum) = vmath::exp_from_max(row);
                row.iter_mut().for_each(|s| *s /= sum);
            }
        }
    }

    /// The lengths the geometry needs of `q`, `k` (= `v`).
    fn check(&self, q: usize, k: usize, v: usize) -> candle_core::Result<()> {
        let g = &self.geometry;
        let (rq, rk) = g.sequences.rows();
        let (wq, wk) = (rq * g.q_stride(), rk * g.kv_stride());
        if q != wq || k != wk || v != wk {
            candle_core::bail!("attention: {q}, {k}, {v} values against {wq}, {wk}, {wk}")
        }
        Ok(())
    }

    /// `∂Q`, `∂K`, `∂V` from the inputs and the output's gradient `go`.
    fn backward(&self, q: &[f32], k: &[f32], v: &[f32], go: &[f32]) -> candle_core::Result<[Vec<f32>; 3]> {
        use rayon::prelude::*;
        self.check(q.len(), k.len(), v.len())?;
        if go.len() != q.len() {
            candle_core::bail!("attention backward: a gradient of {} values for {}", go.len(), q.len())
        }
        let g = &self.geometry;
        let (mut dq, mut dk, mut dv) = (vec![0f32; q.len()], vec![0f32; k.len()], vec![0f32; v.len()]);
        let (dqp, dkp, dvp) = (
            Shared(dq.as_mut_ptr()),
            Shared(dk.as_mut_ptr()),
            Shared(dv.as_mut_ptr()),
        );
        // One task per (batch row, key/value head): it alone writes that
        // head's ∂K, ∂V and its query heads' ∂Q.
        (0..g.sequences.count() * g.kv_heads).into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(p, dp), t| {
                let (b, kvh) = (t / g.kv_heads, t % g.kv_heads);
                let span = g.sequences.span(b);
                let ko = g.kv_at(span, kvh);
                for r in 0..g.group() {
                    let h = kvh * g.group() + r;
                    let qo = g.q_at(span, h);
                    self.probs(q, k, b, h, p);
                    dp.resize(span.len * span.total, 0.0);
                    for blk in self.blocks(b, span).iter() {
                        let (at, keys, qs) = (blk.first * span.total, blk.keys, g.q_stride());
                        let qb = qo + blk.first * qs;
                        // SAFETY: every operand lies inside its buffer (the
                        // lengths are checked above); this task is the only
                        // writer of the ∂Q, ∂K, ∂V regions it addresses,
                        // and ∂K, ∂V start at zero for its sums.
                        unsafe {
                            // ∂V += Pᵀ·∂O.
                            product(
                                (keys, g.head_dim, blk.rows),
                                (dvp.at(ko), g.kv_stride(), 1),
                                true,
                                (p[at..].as_ptr(), 1, span.total),
                                (go[qb..].as_ptr(), qs, 1),
                                false,
                            );
                            // ∂P = ∂O·Vᵀ.
                            product(
                                (blk.rows, keys, g.head_dim),
                                (dp[at..].as_mut_ptr(), span.total, 1),
                                false,
                                (go[qb..].as_ptr(), qs, 1),
                                (v[ko..].as_ptr(), 1, g.kv_stride()),
                                false,
                            );
                        }
                        // ∂S = scale · P ⊙ (∂P − rowsum(P ⊙ ∂P)), in place.
                        for i in blk.first..blk.first + blk.rows {
                            let row = i * span.total..i * span.total + keys;
                            let (dp, p) = (&mut dp[row.clone()], &p[row]);
                            let dot: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
                            for (d, &p) in dp.iter_mut().zip(p) {
                                *d = self.scale * p * (*d - dot);
                            }
                        }
                        // SAFETY: as above.
                        unsafe {
                            // ∂Q = ∂S·K.
                            product(
                                (blk.rows, g.head_dim, keys),
                                (dqp.at(qb), qs, 1),
                                false,
                                (dp[at..].as_ptr(), span.total, 1),
                                (k[ko..].as_ptr(), g.kv_stride(), 1),
                                false,
                            );
                            // ∂K += ∂Sᵀ·Q.
                            product(
                                (keys, g.head_dim, blk.rows),
                                (dkp.at(ko), g.kv_stride(), 1),
                                true,
                                (dp[at..].as_ptr(), 1, span.total),
                                (q[qb..].as_ptr(), qs, 1),
                                false,
                            );
                        }
                    }
                }
            },
        );
        Ok([dq, dk, dv])
    }
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "wft-attention"
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
        let (q, k, v) = (
            super::slice(s1, l1, "attention")?,
            super::slice(s2, l2, "attention")?,
            super::slice(s3, l3, "attention")?,
        );
        self.check(q.len(), k.len(), v.len())?;
        let g = &self.geometry;
        let mut out = vec![0f32; q.len()];
        let op = Shared(out.as_mut_ptr());
        (0..g.sequences.count() * g.heads)
            .into_par_iter()
            .for_each_init(Vec::new, |p, t| {
                let (b, h) = (t / g.heads, t % g.heads);
                let span = g.sequences.span(b);
                self.probs(q, k, b, h, p);
                for blk in self.blocks(b, span).iter() {
                    // SAFETY: the operands lie inside their buffers (checked
                    // above); this task alone writes head h's columns of
                    // sequence b.
                    unsafe {
                        product(
                            (blk.rows, g.head_dim, blk.keys),
                            (op.at(g.q_at(span, h) + blk.first * g.q_stride()), g.q_stride(), 1),
                            false,
                            (p[blk.first * span.total..].as_ptr(), span.total, 1),
                            (v[g.kv_at(span, h / g.group())..].as_ptr(), g.kv_stride(), 1),
                            false,
                        );
                    }
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let [dq, dk, dv] = {
            let ((sq, lq), (sk, lk), (sv, lv), (sg, lg)) = (
                q.storage_and_layout(),
                k.storage_and_layout(),
                v.storage_and_layout(),
                grad.storage_and_layout(),
            );
            self.backward(
                contiguous(&sq, lq, "attention backward")?,
                contiguous(&sk, lk, "attention backward")?,
                contiguous(&sv, lv, "attention backward")?,
                contiguous(&sg, lg, "attention backward")?,
            )?
        };
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{D, Device, Tensor, Var};

    use super::attention;
    use crate::models::ops::AttentionMask;

    use crate::models::test_util::{assert_grads_match, max_diff};

    /// The composition of candle ops the fused op replaces: heads split by
    /// transposes, key/value heads repeated for their query heads, the
    /// mask broadcast over the heads.
    fn composed(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        heads: usize,
        kv: usize,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, len, w) = q.dims3()?;
        let total = k.dim(1)?;
        let d = w / heads;
        let split = |t: &Tensor, n: usize, l: usize| t.reshape((b, l, n, d))?.transpose(1, 2)?.contiguous();
        let repeat = |t: Tensor| {
            t.unsqueeze(2)?
                .broadcast_as((b, kv, heads / kv, total, d))?
                .reshape((b, heads, total, d))
        };
        let (q, k, v) = (
            split(q, heads, len)?,
            repeat(split(k, kv, total)?)?,
            repeat(split(v, kv, total)?)?,
        );
        let mut s = (q.matmul(&k.t()?)? / (d as f64).sqrt())?;
        if let Some(m) = mask {
            // batches × 1 × 1 × len × total → batches × 1 × len × total.
            s = s.broadcast_add(&m.squeeze(1)?)?;
        }
        candle_nn::ops::softmax(&s, D::Minus1)?
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((b, len, w))
    }

    /// Forward (tracked and untracked) and the gradients of q, k and v
    /// against candle's autodiff of the composition: multi-head and
    /// grouped-query heads, no mask, one mask for the batch and one per
    /// row, queries shorter than the keys (a cache), sizes that leave
    /// partial tiles in gemm.
    #[test]
    fn fused_attention_matches_the_composition_and_its_autodiff() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        for (batch, len, total, heads, kv, d, masked) in [
            (2, 5, 5, 3, 3, 8, 0),
            (3, 7, 7, 4, 4, 6, 2),
            (2, 3, 9, 4, 2, 5, 1),
            (1, 17, 17, 2, 1, 16, 2),
            (2, 4, 6, 6, 3, 4, 2),
        ] {
            let q0 = Tensor::randn(0f32, 1.0, (batch, len, heads * d), &dev)?;
            let k0 = Tensor::randn(0f32, 1.0, (batch, total, kv * d), &dev)?;
            let v0 = Tensor::randn(0f32, 1.0, (batch, total, kv * d), &dev)?;
            let m = match masked {
                0 => None,
                1 => Some(Tensor::randn(0f32, 2.0, (1, 1, 1, len, total), &dev)?),
                _ => Some(Tensor::randn(0f32, 2.0, (batch, 1, 1, len, total), &dev)?),
            };
            let mask = m.as_ref().map(AttentionMask::new).transpose()?;
            let (q, k, v) = (Var::from_tensor(&q0)?, Var::from_tensor(&k0)?, Var::from_tensor(&v0)?);
            let fused = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, kv, mask.as_ref())?;
            let plain = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, kv, m.as_ref())?;
            let untracked = attention(&q0, &k0, &v0, heads, kv, mask.as_ref())?;
            let case = format!("batch {batch}, len {len}, total {total}, heads {heads}/{kv}, d {d}, mask {masked}");
            assert!(
                max_diff(&fused, &plain) < 1e-5,
                "{case}: forward off by {}",
                max_diff(&fused, &plain)
            );
            assert!(max_diff(&untracked, &plain) < 1e-5, "{case}: untracked forward off");
            let probe = Tensor::randn(0f32, 1.0, fused.shape(), &dev)?;
            let g = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            assert_grads_match(&g, &gp, &[(&q, "q"), (&k, "k"), (&v, "v")], 1e-5, &case);
        }
        Ok(())
    }

    /// A causal mask (the decoder's −1e9 above the diagonal, with a cache
    /// in front and left padding in one batch row) over several query
    /// blocks: the blocks skip the hidden keys, and forward and gradients
    /// still match the composition over every key.
    #[test]
    fn causal_blocks_skip_hidden_keys_and_match_the_composition() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let (batch, heads, kv, d) = (2, 4, 2, 8);
        for (past, len) in [(0, 70), (5, 40)] {
            let total = past + len;
            let values: Vec<f32> = (0..batch)
                .flat_map(|b| {
                    (0..len).flat_map(move |i| {
                        (0..total).map(move |j| {
                            let pad = if b == 1 && j < 3 { -1e9 } else { 0.0 };
                            pad + if j <= past + i { 0.0 } else { -1e9 }
                        })
                    })
                })
                .collect();
            let m = Tensor::from_vec(values, (batch, 1, 1, len, total), &dev)?;
            let mask = AttentionMask::new(&m)?;
            let blocks = super::query_blocks(&mask);
            assert_eq!(blocks[0].len(), len.div_ceil(super::QUERY_BLOCK));
            assert_eq!(
                blocks[0][0].keys,
                past + super::QUERY_BLOCK,
                "the first block sees its keys only"
            );
            assert_eq!(blocks[0].last().map(|b| b.keys), Some(total));
            let q0 = Tensor::randn(0f32, 1.0, (batch, len, heads * d), &dev)?;
            let k0 = Tensor::randn(0f32, 1.0, (batch, total, kv * d), &dev)?;
            let v0 = Tensor::randn(0f32, 1.0, (batch, total, kv * d), &dev)?;
            let (q, k, v) = (Var::from_tensor(&q0)?, Var::from_tensor(&k0)?, Var::from_tensor(&v0)?);
            let fused = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, kv, Some(&mask))?;
            let plain = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, kv, Some(&m))?;
            let case = format!("past {past}, len {len}");
            assert!(
                max_diff(&fused, &plain) < 1e-5,
                "{case}: forward off by {}",
                max_diff(&fused, &plain)
            );
            let untracked = attention(&q0, &k0, &v0, heads, kv, Some(&mask))?;
            assert!(max_diff(&untracked, &plain) < 1e-5, "{case}: untracked forward off");
            let probe = Tensor::randn(0f32, 1.0, fused.shape(), &dev)?;
            let g = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            assert_grads_match(&g, &gp, &[(&q, "q"), (&k, "k"), (&v, "v")], 1e-5, &case);
        }
        Ok(())
    }

    /// Packed sequences (one empty) compute what each sequence computes
    /// alone through the composition, forward and backward, with
    /// multi-head and grouped-query heads.
    #[test]
    fn packed_sequences_match_separate_runs() -> Result<(), Box<dyn std::error::Error>> {
        use super::packed_attention;
        let dev = Device::Cpu;
        let lens = [5usize, 1, 0, 9, 3];
        let mut starts = vec![0];
        for l in lens {
            starts.push(starts[starts.len() - 1] + l);
        }
        let rows = starts[lens.len()];
        let starts: std::sync::Arc<[usize]> = starts.into();
        for (heads, kv, d) in [(3, 3, 8), (4, 2, 5)] {
            let q0 = Tensor::randn(0f32, 1.0, (rows, heads * d), &dev)?;
            let k0 = Tensor::randn(0f32, 1.0, (rows, kv * d), &dev)?;
            let v0 = Tensor::randn(0f32, 1.0, (rows, kv * d), &dev)?;
            let probe = Tensor::randn(0f32, 1.0, (rows, heads * d), &dev)?;
            let (q, k, v) = (Var::from_tensor(&q0)?, Var::from_tensor(&k0)?, Var::from_tensor(&v0)?);
            let fused = packed_attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, kv, &starts)?;
            let g = (&fused * &probe)?.sum_all()?.backward()?;
            let mut total = Tensor::zeros((), candle_core::DType::F32, &dev)?;
            let mut parts = Vec::new();
            for (s, &l) in lens.iter().enumerate() {
                if l == 0 {
                    continue;
                }
                let at = |t: &Tensor| t.narrow(0, starts[s], l)?.unsqueeze(0);
                let o = composed(
                    &at(q.as_tensor())?,
                    &at(k.as_tensor())?,
                    &at(v.as_tensor())?,
                    heads,
                    kv,
                    None,
                )?
                .squeeze(0)?;
                total = (total + (&o * probe.narrow(0, starts[s], l)?)?.sum_all()?)?;
                parts.push(o);
            }
            let plain = Tensor::cat(&parts, 0)?;
            assert!(
                max_diff(&fused, &plain) < 1e-5,
                "forward off by {}",
                max_diff(&fused, &plain)
            );
            let gp = total.backward()?;
            let case = format!("heads {heads}/{kv}");
            assert_grads_match(&g, &gp, &[(&q, "q"), (&k, "k"), (&v, "v")], 1e-5, &case);
        }
        let q = Tensor::zeros((4, 6), candle_core::DType::F32, &dev)?;
        for bad in [vec![0, 5], vec![1, 4], vec![0, 3, 2, 4]] {
            assert!(packed_attention(&q, &q, &q, 2, 2, &bad.into()).is_err());
        }
        Ok(())
    }

    /// Shapes that do not fit the heads, and a mask of the wrong size, are
    /// typed errors.
    #[test]
    fn misfitting_shapes_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let q = Tensor::zeros((2, 4, 12), candle_core::DType::F32, &dev)?;
        let k = Tensor::zeros((2, 5, 6), candle_core::DType::F32, &dev)?;
        assert!(attention(&q, &k, &k, 5, 5, None).is_err());
        assert!(attention(&q, &k, &k, 4, 3, None).is_err());
        assert!(attention(&q, &k, &k, 4, 4, None).is_err());
        assert!(attention(&q, &k, &k, 4, 2, None).is_ok());
        let wrong = AttentionMask::new(&Tensor::zeros((2, 1, 1, 4, 4), candle_core::DType::F32, &dev)?)?;
        assert!(attention(&q, &k, &k, 4, 2, Some(&wrong)).is_err());
        Ok(())
    }
}
