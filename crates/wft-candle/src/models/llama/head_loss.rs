//! The frozen output projection and the next-token cross-entropy in one op,
//! a slab of rows at a time, so the `rows × vocab` logits are never held
//! whole: 200 MB for SmolLM2 at batch 8 × 128, written, read back, and again
//! as their gradient. Where a gradient will flow, the forward pass also
//! forms each row's `∂nll/∂h = (softmax − onehot)·W` while its slab of
//! logits is at hand (the loss is the graph's end, so its upstream gradient
//! is one number per row), and the backward pass only scales those rows.
//! The products are the ones the unfused path runs, in the same number: one
//! `h·Wᵀ` forward, one `(softmax − onehot)·W` for the gradient.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::matmul::{product, weight_view};
use crate::models::vmath;

/// Rows per slab: 128 rows of 49,152 logits are 25 MB, under glibc's 32 MB
/// `mmap` threshold, so the slab's pages stay in the heap from call to call.
const SLAB: usize = 128;

/// Per row, `logsumexp(h·Wᵀ) − (h·Wᵀ)[target]` for `hidden` (`rows × H`),
/// a constant `weight` (`vocab × H`) and `targets` (`rows`, u32); tracked
/// for `∂L/∂hidden` when a gradient will flow to `hidden`.
///
/// # Errors
/// [`Error::Shape`] when the shapes disagree; candle's errors for a target
/// out of range or tensors that are not f32 on the CPU.
pub(crate) fn projected_cross_entropy(hidden: &Tensor, weight: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let (rows, width) = hidden.dims2()?;
    let (vocab, w_width) = weight.dims2()?;
    if w_width != width || vocab == 0 {
        return Err(Error::Shape {
            what: "output projection".into(),
            expected: vec![vocab.max(1), width],
            found: vec![vocab, w_width],
        });
    }
    if targets.dims() != [rows] {
        return Err(Error::Shape {
            what: "cross-entropy targets".into(),
            expected: vec![rows],
            found: targets.dims().to_vec(),
        });
    }
    let targets = targets.to_dtype(candle_core::DType::U32)?.to_vec1::<u32>()?;
    if let Some(bad) = targets.iter().find(|&&t| t as usize >= vocab) {
        return Err(candle_core::Error::Msg(format!("cross-entropy: target {bad} of {vocab} classes")).into());
    }
    let hidden = hidden.contiguous()?;
    let tracked = hidden.track_op();
    let op = HeadLoss {
        weight: weight.detach(),
        targets,
        gradient: if tracked {
            Gradient::Formed(Mutex::new(None))
        } else {
            Gradient::NotWanted
        },
    };
    if tracked {
        Ok(hidden.apply_op1(op)?)
    } else {
        Ok(hidden.apply_op1_no_bwd(&op)?)
    }
}

/// The op: its constant operands, and the per-row gradient it hands from
/// the forward pass to the backward pass.
struct HeadLoss {
    weight: Tensor,
    targets: Vec<u32>,
    gradient: Gradient,
}

/// Whether the forward pass forms `∂nll/∂h`.
enum Gradient {
    /// No gradient will flow.
    NotWanted,
    /// Formed in the forward pass (`rows × H`), for the backward pass.
    Formed(Mutex<Option<Vec<f32>>>),
}

impl CustomOp1 for HeadLoss {
    fn name(&self) -> &'static str {
        "wft-projected-cross-entropy"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let h = crate::models::slice(s, l, "projected cross-entropy")?;
        let (vocab, width) = self.weight.dims2()?;
        let rows = self.targets.len();
        if h.len() != rows * width {
            candle_core::bail!(
                "projected cross-entropy: {} hidden values for {rows} rows of {width}",
                h.len()
            )
        }
        let (ws, wl) = self.weight.storage_and_layout();
        let (w, rs, cs) = weight_view(&ws, wl, vocab, width)?;
        let mut nll = vec![0f32; rows];
        let want = matches!(self.gradient, Gradient::Formed(_));
        let mut unit = if want { vec![0f32; rows * width] } else { Vec::new() };
        let mut z = vec![0f32; SLAB.min(rows) * vocab];
        for start in (0..rows).step_by(SLAB) {
            let c = SLAB.min(rows - start);
            let z = &mut z[..c * vocab];
            // SAFETY: `h` holds rows × width values and `z` c × vocab;
            // `weight_view` checked that every addressed weight lies in `w`.
            unsafe {
                product(
                    (c, vocab, width),
                    (z.as_mut_ptr(), vocab, 1),
                    false,
                    (h[start * width..].as_ptr(), width, 1),
                    // Wᵀ: element (i, o) is w[o·rs + i·cs].
                    (w.as_ptr(), cs, rs),
                    true,
                );
            }
            z.par_chunks_mut(vocab)
                .zip(nll[start..start + c].par_iter_mut())
                .zip(self.targets[start..start + c].par_iter())
                .for_each(|((row, nll), &target)| {
                    let target = target as usize;
                    let picked = row[target];
                    let (max, sum) = vmath::exp_from_max(row);
                    *nll = max + sum.ln() - picked;
                    if want {
                        // softmax − onehot, in place.
                        let inv = 1.0 / sum;
                        row.iter_mut().for_each(|v| *v *= inv);
                        row[target] -= 1.0;
                    }
                });
            if want {
                // SAFETY: `z` holds c × vocab values, `unit` rows × width;
                // the weight as above.
                unsafe {
                    product(
                        (c, width, vocab),
                        (unit[start * width..].as_mut_ptr(), width, 1),
                        false,
                        (z.as_ptr(), vocab, 1),
                        (w.as_ptr(), rs, cs),
                        true,
                    );
                }
            }
        }
        if let Gradient::Formed(slot) = &self.gradient {
            *slot
                .lock()
                .map_err(|_| candle_core::Error::Msg("projected cross-entropy: a poisoned lock".into()))? = Some(unit);
        }
        Ok((CpuStorage::F32(nll), Shape::from(rows)))
    }

    fn bwd(&self, hidden: &Tensor, _nll: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Gradient::Formed(slot) = &self.gradient else {
            return Ok(None);
        };
        let (rows, width) = hidden.dims2()?;
        let gs = g.to_vec1::<f32>()?;
        let mut d = slot
            .lock()
            .map_err(|_| candle_core::Error::Msg("projected cross-entropy: a poisoned lock".into()))?
            .clone()
            .ok_or_else(|| candle_core::Error::Msg("projected cross-entropy: backward before forward".into()))?;
        if d.len() != rows * width || gs.len() != rows {
            candle_core::bail!(
                "projected cross-entropy: {} upstream gradients for {rows} rows",
                gs.len()
            )
        }
        d.par_chunks_mut(width.max(1))
            .zip(gs.par_iter())
            .for_each(|(row, &g)| row.iter_mut().for_each(|v| *v *= g));
        Ok(Some(Tensor::from_vec(d, (rows, width), hidden.device())?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor, Var};

    use crate::models::test_util::{assert_grads_match, max_diff, reference_nll};

    /// The fused op equals candle's `log_softmax(h·Wᵀ)` and `gather`, in
    /// value and in `∂L/∂h` for a random upstream gradient (as a masked
    /// loss weights its rows), over more rows than one slab and a
    /// transposed weight view; untracked it forms no gradient; shapes and
    /// targets that do not fit are errors.
    #[test]
    fn matches_the_projection_then_log_softmax() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let (rows, width, vocab) = (super::SLAB + 37, 24, 301);
        let h0 = Tensor::randn(0f32, 1.0, (rows, width), &dev)?;
        let dense = (Tensor::randn(0f32, 1.0, (vocab, width), &dev)? * 3.0)?;
        let view = (Tensor::randn(0f32, 1.0, (width, vocab), &dev)? * 3.0)?.t()?;
        let t: Vec<u32> = (0..rows as u32).map(|r| (r * 97 + 3) % vocab as u32).collect();
        let t = Tensor::from_vec(t, rows, &dev)?;
        let probe = Tensor::randn(0f32, 1.0, rows, &dev)?;
        for w in [&dense, &view] {
            let h = Var::from_tensor(&h0)?;
            let fused = super::projected_cross_entropy(h.as_tensor(), w, &t)?;
            let logits = h.as_tensor().matmul(&w.t()?)?;
            let plain = reference_nll(&logits, &t)?;
            assert!(
                max_diff(&fused, &plain) < 1e-4,
                "forward off by {}",
                max_diff(&fused, &plain)
            );
            let untracked = super::projected_cross_entropy(&h0, w, &t)?;
            assert!(max_diff(&untracked, &plain) < 1e-4);
            let g = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            assert_grads_match(&g, &gp, &[(&h, "h")], 1e-4, "projected cross-entropy");
        }
        let bad = Tensor::from_vec(vec![vocab as u32; rows], rows, &dev)?;
        assert!(super::projected_cross_entropy(&h0, &dense, &bad).is_err());
        assert!(super::projected_cross_entropy(&h0, &dense, &t.narrow(0, 0, 3)?).is_err());
        assert!(super::projected_cross_entropy(&h0, &dense.narrow(1, 0, 5)?, &t).is_err());
        Ok(())
    }
}
