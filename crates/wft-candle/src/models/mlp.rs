//! The encoders' feed-forward block `fc2(gelu(fc1(x)))` as one op when both
//! layers are frozen (every adapter on attention only, as the paper's
//! encoder runs are): BERT's `intermediate`/`output` and the ViT's
//! `fc1`/`fc2`.
//!
//! The composition leaves two `rows × 4H` tensors in the graph (the first
//! layer's output, GELU's output) and, in the backward pass, candle
//! accumulates a gradient of that size into each: a zeroed tensor and an
//! add apiece. The fused op keeps one tensor of that size, GELU's slope,
//! formed in the forward pass beside the activation (`Φ(x)` once for both),
//! so the backward pass is two products and one multiply:
//!
//! ```text
//! forward:  h = x·W₁ᵀ + b₁,  s = gelu'(h),  a = gelu(h),  y = a·W₂ᵀ + b₂
//! backward: ∂x = ((∂y·W₂) ⊙ s)·W₁
//! ```
//!
//! The products and the elementwise formulas are the ones the composition
//! runs, so values and gradients are the composition's, bit for bit.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp1, Layout, Module, Shape, Tensor};
use rayon::prelude::*;

use super::ops::{CHUNK, gelu};
use super::vmath;
use crate::error::{Error, Result};
use crate::linear::AdaptedLinear;
use crate::matmul::{linear, linear_input_grad};

/// [`gelu_mlp`], or with `routing` its composition through the mixed-adapter
/// forward of each layer (given with its module path).
///
/// # Errors
/// As [`gelu_mlp`].
pub(crate) fn gelu_mlp_routed(
    x: &Tensor,
    (fc1, path1): (&AdaptedLinear, &str),
    (fc2, path2): (&AdaptedLinear, &str),
    routing: Option<super::Routing<'_>>,
) -> Result<Tensor> {
    if routing.is_none() {
        return gelu_mlp(x, fc1, fc2);
    }
    let h = super::project(fc1, path1, x, routing)?;
    super::project(fc2, path2, &gelu(&h)?, routing)
}

/// `fc2(gelu(fc1(x)))` over the last axis of `x`: one fused op when both
/// layers are frozen dense layers with constant biases, the composition of
/// the layers otherwise (an adapted, quantized or fully trained layer).
///
/// # Errors
/// candle's errors when `x` does not fit `fc1`, or `fc1`'s outputs do not
/// fit `fc2`.
pub(crate) fn gelu_mlp(x: &Tensor, fc1: &AdaptedLinear, fc2: &AdaptedLinear) -> Result<Tensor> {
    let (Some((w1, b1)), Some((w2, b2))) = (fc1.frozen_parts(), fc2.frozen_parts()) else {
        return Ok(fc2.forward(&gelu(&fc1.forward(x)?)?)?);
    };
    let ((hidden, inp), (out, w2_in)) = (w1.dims2()?, w2.dims2()?);
    let dims = x.dims().to_vec();
    let (x_in, lead) = dims.split_last().map_or((0, &[][..]), |(&n, lead)| (n, lead));
    if x_in != inp || w2_in != hidden {
        return Err(Error::Shape {
            what: "feed-forward block (input features; the second layer's inputs)".into(),
            expected: vec![inp, hidden],
            found: vec![x_in, w2_in],
        });
    }
    let rows: usize = lead.iter().product();
    let x2 = x.reshape((rows, inp))?.contiguous()?;
    let tracked = x2.track_op();
    let op = Mlp {
        fc1: (w1.clone(), b1.cloned()),
        fc2: (w2.clone(), b2.cloned()),
        rows,
        slope: if tracked {
            Slope::Kept(Mutex::new(None))
        } else {
            Slope::NotWanted
        },
    };
    let y = if tracked {
        x2.apply_op1(op)?
    } else {
        x2.apply_op1_no_bwd(&op)?
    };
    let mut shape = lead.to_vec();
    shape.push(out);
    Ok(y.reshape(shape)?)
}

/// The op: both layers' constant weights and biases, and GELU's slope from
/// the forward pass for the backward pass.
struct Mlp {
    fc1: (Tensor, Option<Tensor>),
    fc2: (Tensor, Option<Tensor>),
    rows: usize,
    slope: Slope,
}

/// Whether the forward pass keeps GELU's slope.
enum Slope {
    /// No gradient will flow.
    NotWanted,
    /// `gelu'(h)` (`rows × hidden`), once the forward pass ran.
    Kept(Mutex<Option<Vec<f32>>>),
}

fn poisoned<T>(_: T) -> candle_core::Error {
    candle_core::Error::Msg("feed-forward block: a poisoned lock".into())
}

impl CustomOp1 for Mlp {
    fn name(&self) -> &'static str {
        "wft-gelu-mlp"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = super::slice(s, l, "feed-forward block")?;
        let (w1, b1) = &self.fc1;
        let (w2, b2) = &self.fc2;
        let mut h = linear(x, self.rows, w1, b1.as_ref())?;
        match &self.slope {
            Slope::NotWanted => h.par_chunks_mut(CHUNK).for_each(vmath::gelu_in_place),
            Slope::Kept(slot) => {
                let mut slope = vec![0f32; h.len()];
                h.par_chunks_mut(CHUNK)
                    .zip(slope.par_chunks_mut(CHUNK))
                    .for_each(|(h, s)| vmath::gelu_with_slope(h, s));
                *slot.lock().map_err(poisoned)? = Some(slope);
            }
        }
        let y = linear(&h, self.rows, w2, b2.as_ref())?;
        let out = w2.dims2()?.0;
        Ok((CpuStorage::F32(y), Shape::from((self.rows, out))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let Slope::Kept(slot) = &self.slope else {
            return Ok(None);
        };
        let g = g.contiguous()?;
        let (gs, gl) = g.storage_and_layout();
        let gv = crate::matmul::contiguous(&gs, gl, "feed-forward block gradient")?;
        let mut dh = linear_input_grad(gv, self.rows, &self.fc2.0)?;
        {
            let guard = slot.lock().map_err(poisoned)?;
            let slope = guard
                .as_ref()
                .ok_or_else(|| candle_core::Error::Msg("feed-forward block: backward before forward".into()))?;
            if slope.len() != dh.len() {
                candle_core::bail!("feed-forward block: {} slopes for {} gradients", slope.len(), dh.len())
            }
            dh.par_chunks_mut(CHUNK)
                .zip(slope.par_chunks(CHUNK))
                .for_each(|(d, s)| d.iter_mut().zip(s).for_each(|(d, &s)| *d *= s));
        }
        let dx = linear_input_grad(&dh, self.rows, &self.fc1.0)?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Module, Tensor, Var};

    use super::gelu_mlp;
    use crate::linear::AdaptedLinear;
    use crate::models::ops::gelu;
    use crate::models::test_util::bits;

    /// The fused block against the composition of the same frozen layers:
    /// the same bits forward, tracked and untracked, and in `∂L/∂x` for a
    /// random upstream gradient; a 3-D input, more rows than one parallel
    /// chunk of the hidden width, with and without biases, and a
    /// transposed weight view.
    #[test]
    fn fused_block_is_the_composition_bit_for_bit() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        for (batch, len, inp, hidden, biased) in [(3, 17, 24, 96, true), (2, 5, 7, 13, false), (1, 200, 16, 160, true)]
        {
            let w1 = Tensor::randn(0f32, 0.5, (hidden, inp), &dev)?;
            // fc2's weight as the transpose of a stored `hidden × inp`.
            let w2 = Tensor::randn(0f32, 0.5, (hidden, inp), &dev)?.t()?;
            let bias = |n| -> candle_core::Result<Option<Tensor>> {
                biased.then(|| Tensor::randn(0f32, 1.0, n, &dev)).transpose()
            };
            let fc1 = AdaptedLinear::frozen(w1, bias(hidden)?)?;
            let fc2 = AdaptedLinear::frozen(w2, bias(inp)?)?;
            assert!(fc1.frozen_parts().is_some() && fc2.frozen_parts().is_some());
            let x0 = Tensor::randn(0f32, 2.0, (batch, len, inp), &dev)?;
            let x = Var::from_tensor(&x0)?;
            let fused = gelu_mlp(x.as_tensor(), &fc1, &fc2)?;
            let plain = fc2.forward(&gelu(&fc1.forward(x.as_tensor())?)?)?;
            let case = format!("{batch}×{len}×{inp} → {hidden}, biases {biased}");
            assert_eq!(fused.dims(), plain.dims(), "{case}");
            assert_eq!(bits(&fused)?, bits(&plain)?, "{case}: forward");
            assert_eq!(bits(&gelu_mlp(&x0, &fc1, &fc2)?)?, bits(&plain)?, "{case}: untracked");
            let probe = Tensor::randn(0f32, 1.0, fused.shape(), &dev)?;
            let g = (fused * &probe)?.sum_all()?.backward()?;
            let gp = (plain * &probe)?.sum_all()?.backward()?;
            let (gf, gc) = (
                g.get(x.as_tensor()).ok_or("no fused gradient")?,
                gp.get(x.as_tensor()).ok_or("no gradient")?,
            );
            assert_eq!(bits(gf)?, bits(gc)?, "{case}: ∂L/∂x");
            assert!(
                gf.abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
                "{case}: a zero gradient"
            );
        }
        Ok(())
    }

    /// A layer that is not frozen (trained fully here) takes the
    /// composition, and its weights get their gradients; an input of the
    /// wrong width is an error, not a panic.
    #[test]
    fn other_layers_compose_and_misfits_are_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let w1 = Var::from_tensor(&Tensor::randn(0f32, 0.5, (12, 6), &dev)?)?;
        let fc1 = AdaptedLinear::plain(w1.as_tensor().clone(), None)?;
        let fc2 = AdaptedLinear::frozen(Tensor::randn(0f32, 0.5, (6, 12), &dev)?, None)?;
        assert!(fc1.frozen_parts().is_none());
        let x = Tensor::randn(0f32, 1.0, (4, 6), &dev)?;
        let y = gelu_mlp(&x, &fc1, &fc2)?;
        let g = y.sum_all()?.backward()?;
        assert!(
            g.get(w1.as_tensor()).is_some(),
            "the trained layer's weight gets no gradient"
        );
        let frozen1 = AdaptedLinear::frozen(Tensor::randn(0f32, 0.5, (12, 6), &dev)?, None)?;
        assert!(gelu_mlp(&Tensor::zeros((4, 5), candle_core::DType::F32, &dev)?, &frozen1, &fc2).is_err());
        assert!(gelu_mlp(&x, &frozen1, &frozen1).is_err(), "fc2 of the wrong width");
        Ok(())
    }
}
