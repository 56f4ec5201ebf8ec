//! Products with a weight that stays in its GGUF blocks: de-quantized a slab
//! of whole rows at a time, inside the product, so that no more than
//! [`SLAB_ELEMENTS`] `f32` values of it exist at once (a 49152 × 576 output
//! projection would otherwise be 113 MB of `f32` for every product).
//!
//! Each slab is de-quantized exactly as [`QTensor::dequantize`] would
//! de-quantize those rows, and the products are computed in `f32` on it: the
//! results are those of the whole de-quantized weight up to `f32` rounding
//! (`∂L/∂x` sums the slabs' shares in another order).

use std::borrow::Cow;

use candle_core::quantized::QTensor;
use candle_core::{CpuStorage, Device, Result, Tensor};

/// The most `f32` elements of a weight de-quantized at once (4 MiB).
pub(crate) const SLAB_ELEMENTS: usize = 1 << 20;

/// Call `f(first_row, slab)` on the de-quantized `out × in` weight, a slab
/// of whole rows (`rows × in`, `f32`) at a time, in order. A weight of at
/// most [`SLAB_ELEMENTS`] elements, or whose rows do not end on block
/// boundaries, comes as one slab.
///
/// # Errors
/// candle's errors for a weight that is not 2-D or not on the CPU.
fn for_each_slab(q: &QTensor, mut f: impl FnMut(usize, Tensor) -> Result<()>) -> Result<()> {
    let (out, inp) = q.shape().dims2()?;
    let dtype = q.dtype();
    let (block, size) = (dtype.block_size(), dtype.type_size());
    let data = q.data()?;
    let row_bytes = inp / block * size;
    if out * inp <= SLAB_ELEMENTS || !inp.is_multiple_of(block) || data.len() != out * row_bytes {
        return f(0, q.dequantize(&Device::Cpu)?);
    }
    let slab = (SLAB_ELEMENTS / inp).max(1);
    for first in (0..out).step_by(slab) {
        let rows = slab.min(out - first);
        // Whole rows of whole blocks: the slice starts on a block boundary,
        // so it is aligned as the blocks are.
        let bytes = &data[first * row_bytes..(first + rows) * row_bytes];
        let CpuStorage::F32(values) = dtype.from_data(Cow::Borrowed(bytes)).dequantize(rows * inp)? else {
            candle_core::bail!("de-quantizing {dtype:?} gave no f32 values")
        };
        f(first, Tensor::from_vec(values, (rows, inp), &Device::Cpu)?)?;
    }
    Ok(())
}

/// `x · Wᵀ` for `x` (`rows × in`) and the quantized `W` (`out × in`).
///
/// # Errors
/// candle's errors for mismatched shapes.
pub(crate) fn product(x: &Tensor, q: &QTensor) -> Result<Tensor> {
    let mut parts = Vec::new();
    for_each_slab(q, |_, w| {
        parts.push(x.matmul(&w.t()?)?);
        Ok(())
    })?;
    match parts.as_slice() {
        [one] => Ok(one.clone()),
        _ => Tensor::cat(&parts, 1),
    }
}

/// `g · W` for `g` (`rows × out`) and the quantized `W` (`out × in`): the
/// gradient to a frozen layer's input.
///
/// # Errors
/// candle's errors for mismatched shapes.
pub(crate) fn grad_input(g: &Tensor, q: &QTensor) -> Result<Tensor> {
    let mut sum: Option<Tensor> = None;
    for_each_slab(q, |first, w| {
        let rows = w.dim(0)?;
        let share = if rows == g.dim(1)? {
            g.matmul(&w)?
        } else {
            g.narrow(1, first, rows)?.contiguous()?.matmul(&w)?
        };
        sum = Some(match sum.take() {
            Some(s) => (s + share)?,
            None => share,
        });
        Ok(())
    })?;
    sum.ok_or_else(|| candle_core::Error::Msg("a weight with no rows".into()))
}

#[cfg(test)]
mod tests {
    use candle_core::quantized::GgmlDType;

    use super::*;

    /// A weight of several slabs gives what the whole de-quantized weight
    /// gives: the same forward product, and `∂L/∂x` within rounding.
    #[test]
    fn slabs_compute_what_the_whole_weight_computes() -> Result<()> {
        let (out, inp) = (3 * SLAB_ELEMENTS / 256 + 7, 256);
        let w = Tensor::randn(0f32, 1., (out, inp), &Device::Cpu)?;
        for dtype in [GgmlDType::Q4_1, GgmlDType::Q8_0] {
            let q = QTensor::quantize(&w, dtype)?;
            let dense = q.dequantize(&Device::Cpu)?;
            let mut slabs = 0;
            for_each_slab(&q, |_, _| {
                slabs += 1;
                Ok(())
            })?;
            assert_eq!(slabs, 4, "{dtype:?}");
            let x = Tensor::randn(0f32, 1., (5, inp), &Device::Cpu)?;
            let want = x.matmul(&dense.t()?)?;
            let got = product(&x, &q)?;
            let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{dtype:?}: forward {diff}");
            let g = Tensor::randn(0f32, 1., (5, out), &Device::Cpu)?;
            let want = g.matmul(&dense)?;
            let got = grad_input(&g, &q)?;
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = (want - got)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5 * scale, "{dtype:?}: input gradient {diff} of {scale}");
        }
        Ok(())
    }
}
