//! Operations the models share: candle-nn's fused kernels where no gradient
//! will flow (they have no backward), plain tensor algebra where one will.

use candle_core::{D, Tensor};

use crate::error::Result;

/// Softmax over the last axis.
pub(crate) fn softmax(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    } else {
        Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
    }
}

/// RMS normalisation over the last axis, scaled by `weight`:
/// `x / sqrt(mean(x²) + eps) · weight`.
pub(crate) fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !weight.track_op() {
        return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, weight, eps as f32)?);
    }
    let h = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / h)?;
    Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(weight)?)
}

/// Rotary position embedding in the half-split ("rotate half") layout of
/// transformers' Llama: `x · cos + rotate_half(x) · sin`, with `x` of shape
/// `batch × heads × len × head_dim` and `cos`/`sin` of `len × head_dim/2`.
pub(crate) fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !x.track_op() {
        return Ok(candle_nn::rotary_emb::rope(&x.contiguous()?, cos, sin)?);
    }
    let half = x.dim(D::Minus1)? / 2;
    let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
    let (cos, sin) = (cos.unsqueeze(0)?.unsqueeze(0)?, sin.unsqueeze(0)?.unsqueeze(0)?);
    // [x1, x2]·cos + [-x2, x1]·sin, each half on its own.
    let lo = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let hi = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
    Ok(Tensor::cat(&[lo, hi], D::Minus1)?)
}
