//! Matrix products through the `gemm` crate (candle's own CPU kernel) on
//! strided views: each head of an attention tensor, and a linear layer's
//! `x·Wᵀ + b` with the bias as the product's starting value (one pass
//! over the output instead of a product, a copy and a broadcast add).

use candle_core::{Layout, Storage, Tensor};
use gemm::Parallelism;

/// A matrix operand: its first element and its (row, column) strides.
pub(crate) type View<T> = (T, usize, usize);

/// `dst (m×n) := [dst +] lhs (m×k) · rhs (k×n)`, on the calling thread or
/// on rayon's pool (`parallel`).
///
/// # Safety
/// Every operand must cover the elements its strides address, and no
/// other thread may touch `dst`'s elements meanwhile.
pub(crate) unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: View<*mut f32>,
    accumulate: bool,
    lhs: View<*const f32>,
    rhs: View<*const f32>,
    parallel: bool,
) {
    // BLAS for the products of many rows; gemm's for the few-row products
    // of generation, where OpenBLAS's thread hand-off costs more than it
    // saves (batch-1 decoding measured 0.7× with it).
    #[cfg(feature = "openblas")]
    if parallel && m >= 32 {
        // SAFETY: the caller's guarantee, passed on.
        if unsafe { blas::product((m, n, k), dst, accumulate, lhs, rhs) } {
            return;
        }
    }
    // rayon's pool size (candle's `get_num_threads` reads /proc/cpuinfo on
    // every call).
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the caller's guarantee; gemm reads and writes only the
    // addressed elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.0,
            dst.2 as isize,
            dst.1 as isize,
            accumulate,
            lhs.0,
            lhs.2 as isize,
            lhs.1 as isize,
            rhs.0,
            rhs.2 as isize,
            rhs.1 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The system's OpenBLAS (feature `openblas`), for the operands BLAS can
/// describe: each with a unit stride along one axis.
#[cfg(feature = "openblas")]
mod blas {
    use super::View;

    /// One operand as BLAS sees it (row-major): transposed or not, and its
    /// leading dimension; `None` when neither stride is 1.
    fn operand(rs: usize, cs: usize, cols: usize, rows: usize) -> Option<(cblas_sys::CBLAS_TRANSPOSE, i32)> {
        if cs == 1 && rs >= cols.max(1) {
            Some((cblas_sys::CblasNoTrans, i32::try_from(rs).ok()?))
        } else if rs == 1 && cs >= rows.max(1) {
            Some((cblas_sys::CblasTrans, i32::try_from(cs).ok()?))
        } else {
            None
        }
    }

    /// `dst := [dst +] lhs · rhs` through `cblas_sgemm`; false (nothing
    /// done) when an operand's strides or a size do not fit BLAS.
    ///
    /// # Safety
    /// As [`super::product`].
    pub(super) unsafe fn product(
        (m, n, k): (usize, usize, usize),
        dst: View<*mut f32>,
        accumulate: bool,
        lhs: View<*const f32>,
        rhs: View<*const f32>,
    ) -> bool {
        let (Ok(mi), Ok(ni), Ok(ki)) = (i32::try_from(m), i32::try_from(n), i32::try_from(k)) else {
            return false;
        };
        let (Some((ta, lda)), Some((tb, ldb))) = (operand(lhs.1, lhs.2, k, m), operand(rhs.1, rhs.2, n, k)) else {
            return false;
        };
        if dst.2 != 1 || dst.1 < n.max(1) || m == 0 || n == 0 {
            return false;
        }
        let Ok(ldc) = i32::try_from(dst.1) else {
            return false;
        };
        // SAFETY: the caller's guarantee; the layout describes exactly the
        // elements the strides address.
        unsafe {
            cblas_sys::cblas_sgemm(
                cblas_sys::CblasRowMajor,
                ta,
                tb,
                mi,
                ni,
                ki,
                1.0,
                lhs.0,
                lda,
                rhs.0,
                ldb,
                if accumulate { 1.0 } else { 0.0 },
                dst.0,
                ldc,
            );
        }
        true
    }
}

/// The `f32` values of a CPU tensor's storage: from its layout's start
/// offset to the storage's end (for strided reads).
pub(crate) fn strided<'a>(s: &'a Storage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(candle_core::CpuStorage::F32(v)) => match v.get(l.start_offset()..) {
            Some(v) => Ok(v),
            None => candle_core::bail!("{what}: a layout past its storage"),
        },
        _ => candle_core::bail!("{what}: the fused ops take f32 tensors on the CPU"),
    }
}

/// The `f32` values of a contiguous CPU tensor.
pub(crate) fn contiguous<'a>(s: &'a Storage, l: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match s {
        Storage::Cpu(c) => crate::models::slice(c, l, what),
        _ => candle_core::bail!("{what}: the fused ops take f32 tensors on the CPU"),
    }
}

/// `x·Wᵀ + b` for contiguous rows `x` (`rows × in`), `w` (`out × in`, any
/// strides) and an optional `bias` (`out`).
///
/// # Errors
/// When the shapes disagree or a tensor is not f32 on the CPU.
pub(crate) fn linear(x: &[f32], rows: usize, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Vec<f32>> {
    let (out, inp) = w.dims2()?;
    if x.len() != rows * inp {
        candle_core::bail!("linear layer: {} inputs for {rows} rows of {inp}", x.len())
    }
    let mut y = match bias {
        Some(b) => {
            let b = b.to_vec1::<f32>()?;
            if b.len() != out {
                candle_core::bail!("linear layer: {} biases for {out} outputs", b.len())
            }
            b.repeat(rows)
        }
        None => vec![0f32; rows * out],
    };
    let (ws, wl) = w.storage_and_layout();
    let (wv, rs, cs) = weight_view(&ws, wl, out, inp)?;
    // SAFETY: `x` holds rows × in values, `y` rows × out, and
    // `weight_view` checked that every addressed weight lies in `wv`.
    unsafe {
        product(
            (rows, out, inp),
            (y.as_mut_ptr(), out, 1),
            bias.is_some(),
            (x.as_ptr(), inp, 1),
            // Wᵀ: element (i, o) is w[o·rs + i·cs].
            (wv.as_ptr(), cs, rs),
            true,
        );
    }
    Ok(y)
}

/// `g·W` for contiguous rows `g` (`rows × out`) and `w` (`out × in`, any
/// strides): a linear layer's input gradient.
///
/// # Errors
/// When the shapes disagree or `w` is not f32 on the CPU.
pub(crate) fn linear_input_grad(g: &[f32], rows: usize, w: &Tensor) -> candle_core::Result<Vec<f32>> {
    let (out, inp) = w.dims2()?;
    if g.len() != rows * out {
        candle_core::bail!("linear layer: {} gradients for {rows} rows of {out}", g.len())
    }
    let mut dx = vec![0f32; rows * inp];
    let (ws, wl) = w.storage_and_layout();
    let (wv, rs, cs) = weight_view(&ws, wl, out, inp)?;
    // SAFETY: `g` holds rows × out values, `dx` rows × in, and
    // `weight_view` checked that every addressed weight lies in `wv`.
    unsafe {
        product(
            (rows, inp, out),
            (dx.as_mut_ptr(), inp, 1),
            false,
            (g.as_ptr(), out, 1),
            (wv.as_ptr(), rs, cs),
            true,
        );
    }
    Ok(dx)
}

/// A weight's values from its start offset and its (row, column) strides,
/// checked to cover every element the strides address.
pub(crate) fn weight_view<'a>(
    s: &'a Storage,
    l: &Layout,
    out: usize,
    inp: usize,
) -> candle_core::Result<View<&'a [f32]>> {
    let wv = strided(s, l, "linear layer")?;
    let (rs, cs) = (l.stride()[0], l.stride()[1]);
    if out > 0 && inp > 0 && (out - 1) * rs + (inp - 1) * cs >= wv.len() {
        candle_core::bail!("linear layer: a weight layout past its storage")
    }
    Ok((wv, rs, cs))
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// `linear` equals candle's `x·Wᵀ + b` for a contiguous weight and for a
    /// transposed view of one, with and without a bias, over sizes that
    /// leave partial gemm tiles.
    #[test]
    fn linear_matches_candle_on_strided_weights() -> Result<(), Box<dyn std::error::Error>> {
        let dev = Device::Cpu;
        let (rows, inp, out) = (37, 29, 19);
        let x = Tensor::randn(0f32, 1.0, (rows, inp), &dev)?;
        let b = Tensor::randn(0f32, 1.0, out, &dev)?;
        let dense = Tensor::randn(0f32, 1.0, (out, inp), &dev)?;
        let view = Tensor::randn(0f32, 1.0, (inp, out), &dev)?.t()?;
        assert!(!view.is_contiguous());
        for w in [&dense, &view] {
            for bias in [None, Some(&b)] {
                let y = super::linear(&x.flatten_all()?.to_vec1::<f32>()?, rows, w, bias)?;
                let mut want = x.matmul(&w.t()?)?;
                if let Some(b) = bias {
                    want = want.broadcast_add(b)?;
                }
                let want = want.flatten_all()?.to_vec1::<f32>()?;
                let worst = y.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst < 1e-5, "off by {worst}");
            }
        }
        for w in [&dense, &view] {
            let g = Tensor::randn(0f32, 1.0, (rows, out), &dev)?;
            let dx = super::linear_input_grad(&g.flatten_all()?.to_vec1::<f32>()?, rows, w)?;
            let want = g.matmul(w)?.flatten_all()?.to_vec1::<f32>()?;
            let worst = dx.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-5, "input gradient off by {worst}");
        }
        let short = vec![0f32; rows * inp - 1];
        assert!(super::linear(&short, rows, &dense, None).is_err());
        Ok(())
    }
}
