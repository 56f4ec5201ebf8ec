//! The PyWavelets-style functions: `dwt`, `wavedec`, `dwt2`, `wavedec2`, their
//! inverses and the inverses' adjoints. Each builds a [`Plan`] and runs it
//! once; build the plan yourself to transform many arrays of one shape.

use ndarray::{Array, Array1, Array2, ArrayView, ArrayView1, ArrayView2, Axis, Dimension};

use crate::coeffs::{CoeffSet, Coeffs1, Coeffs2, zeros};
use crate::plan::{Level, Plan};
use crate::{Error, Mode, Real, Result, Wavelet};

fn run_forward<T: Real, D: Dimension, C: CoeffSet<T, D>>(plan: &Plan<T, D, C>, x: ArrayView<'_, T, D>) -> Result<C> {
    let mut out = plan.coeffs_zeros();
    T::with_scratch(plan.scratch_len(), |s| plan.forward(x, &mut out, s))?;
    Ok(out)
}

fn run_inverse<T: Real, D: Dimension, C: CoeffSet<T, D>>(c: &C, w: &Wavelet, mode: Mode) -> Result<Array<T, D>> {
    let plan = Plan::<T, D, C>::from_coeffs(c, w, mode)?;
    let mut y = zeros(plan.reconstruction_shape());
    T::with_scratch(plan.scratch_len(), |s| plan.inverse(c, y.view_mut(), s))?;
    Ok(y)
}

fn run_adjoint<T: Real, D: Dimension, C: CoeffSet<T, D>>(
    y: ArrayView<'_, T, D>,
    like: &C,
    w: &Wavelet,
    mode: Mode,
) -> Result<C> {
    let plan = Plan::<T, D, C>::from_coeffs(like, w, mode)?;
    let mut out = plan.coeffs_zeros();
    T::with_scratch(plan.scratch_len(), |s| plan.inverse_adjoint(y, &mut out, s))?;
    Ok(out)
}

fn last_axes<const K: usize>(ndim: usize) -> Result<[Axis; K]> {
    if ndim < K {
        return Err(Error::AxisOutOfRange { axis: K - 1, ndim });
    }
    Ok(std::array::from_fn(|i| Axis(ndim - K + i)))
}

/// Coefficient length along `axis` that a single synthesis level turns into
/// `len` samples (the adjoint's output length).
fn synthesis_input_len(len: usize, filter_len: usize, mode: Mode) -> Result<usize> {
    if len == 0 || !len.is_multiple_of(2) {
        return Err(Error::NotASynthesisLength {
            len,
            reason: "inverse transforms always produce an even, non-zero number of samples",
        });
    }
    Ok(match mode {
        Mode::Periodization => len / 2,
        _ => (len + filter_len - 2) / 2,
    })
}

// ---------------------------------------------------------------- 1-D

/// Single-level 1-D DWT: `(cA, cD)`, PyWavelets' `pywt.dwt(x, w, mode)`.
///
/// Works for any length ≥ 1 (≥ 2 for `reflect`/`antireflect`), including
/// signals shorter than the filter.
///
/// ```
/// use dwt_core::{dwt, Mode, Wavelet};
/// use ndarray::array;
/// let (a, d) = dwt(array![1.0, 2.0, 3.0, 4.0].view(), &Wavelet::new("haar")?, Mode::Symmetric)?;
/// assert!((a[0] - 3.0 / 2f64.sqrt()).abs() < 1e-12);
/// assert!((d[0] + 1.0 / 2f64.sqrt()).abs() < 1e-12);
/// # Ok::<(), dwt_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::Empty`], [`Error::TooShortForMode`].
pub fn dwt<T: Real>(x: ArrayView1<'_, T>, wavelet: &Wavelet, mode: Mode) -> Result<(Array1<T>, Array1<T>)> {
    dwt_axis(x, wavelet, mode, Axis(0))
}

/// [`dwt`] along `axis` of an N-D array (PyWavelets' `axis=`).
///
/// # Errors
/// As [`dwt`], plus [`Error::AxisOutOfRange`].
pub fn dwt_axis<T: Real, D: Dimension>(
    x: ArrayView<'_, T, D>,
    wavelet: &Wavelet,
    mode: Mode,
    axis: Axis,
) -> Result<(Array<T, D>, Array<T, D>)> {
    let plan = Plan::<T, D, Coeffs1<T, D>>::with_axes(x.raw_dim(), &[axis], wavelet, mode, Level::Unchecked(1))?;
    let (a, mut d) = run_forward(&plan, x)?.into_parts();
    let d = d.pop().ok_or(Error::LevelCountMismatch { expected: 1, found: 0 })?;
    Ok((a, d))
}

/// Single-level 1-D inverse DWT, PyWavelets' `pywt.idwt(a, d, w, mode)`.
/// `a` and `d` must have the same length; the output has `2n − L + 2`
/// samples (`2n` for periodization).
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::InvalidCoeffLength`].
pub fn idwt<T: Real>(a: ArrayView1<'_, T>, d: ArrayView1<'_, T>, wavelet: &Wavelet, mode: Mode) -> Result<Array1<T>> {
    idwt_axis(a, d, wavelet, mode, Axis(0))
}

/// [`idwt`] along `axis` of N-D coefficient arrays.
///
/// # Errors
/// As [`idwt`], plus [`Error::AxisOutOfRange`].
pub fn idwt_axis<T: Real, D: Dimension>(
    a: ArrayView<'_, T, D>,
    d: ArrayView<'_, T, D>,
    wavelet: &Wavelet,
    mode: Mode,
    axis: Axis,
) -> Result<Array<T, D>> {
    if a.shape() != d.shape() {
        return Err(Error::ShapeMismatch {
            what: "detail coefficients (must match the approximation)",
            expected: a.shape().to_vec(),
            found: d.shape().to_vec(),
        });
    }
    let c = Coeffs1::from_parts(a.to_owned(), vec![d.to_owned()], axis);
    run_inverse(&c, wavelet, mode)
}

/// The transpose of [`idwt`]: `⟨idwt(a, d), y⟩ = ⟨a, a'⟩ + ⟨d, d'⟩` for
/// `(a', d') = idwt_adjoint(y)`. `y` must have an inverse-transform length.
///
/// # Errors
/// [`Error::NotASynthesisLength`] for an odd or empty `y`.
pub fn idwt_adjoint<T: Real>(y: ArrayView1<'_, T>, wavelet: &Wavelet, mode: Mode) -> Result<(Array1<T>, Array1<T>)> {
    let m = synthesis_input_len(y.len(), wavelet.filter_len(), mode)?;
    let like = Coeffs1::from_parts(Array1::zeros(m), vec![Array1::zeros(m)], Axis(0));
    let (a, mut d) = run_adjoint(y, &like, wavelet, mode)?.into_parts();
    let d = d.pop().ok_or(Error::LevelCountMismatch { expected: 1, found: 0 })?;
    Ok((a, d))
}

/// Multilevel 1-D DWT, PyWavelets' `pywt.wavedec(x, w, mode, level)`.
/// `level = None` means [`crate::dwt_max_level`].
///
/// # Errors
/// [`Error::Empty`], [`Error::LevelTooDeep`] (use a [`Plan`] with
/// [`Level::Unchecked`] to go deeper, as PyWavelets does with a warning),
/// [`Error::TooShortForMode`].
pub fn wavedec<T: Real>(
    x: ArrayView1<'_, T>,
    wavelet: &Wavelet,
    mode: Mode,
    level: Option<usize>,
) -> Result<Coeffs1<T>> {
    wavedec_axis(x, wavelet, mode, level, Axis(0))
}

/// [`wavedec`] along `axis` of an N-D array.
///
/// # Errors
/// As [`wavedec`], plus [`Error::AxisOutOfRange`].
pub fn wavedec_axis<T: Real, D: Dimension>(
    x: ArrayView<'_, T, D>,
    wavelet: &Wavelet,
    mode: Mode,
    level: Option<usize>,
    axis: Axis,
) -> Result<Coeffs1<T, D>> {
    let plan = Plan::<T, D, Coeffs1<T, D>>::with_axes(x.raw_dim(), &[axis], wavelet, mode, level.into())?;
    run_forward(&plan, x)
}

/// Multilevel 1-D inverse DWT, PyWavelets' `pywt.waverec(c, w, mode)`, along
/// the axis stored in `c`. An approximation one sample longer than the next
/// details is cropped, as in PyWavelets.
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::InvalidCoeffLength`].
pub fn waverec<T: Real, D: Dimension>(c: &Coeffs1<T, D>, wavelet: &Wavelet, mode: Mode) -> Result<Array<T, D>> {
    run_inverse(c, wavelet, mode)
}

/// The transpose of [`waverec`] for coefficients shaped like `like`: `y` has
/// `waverec`'s output shape and the result has `like`'s shapes.
///
/// # Errors
/// As [`waverec`], and [`Error::ShapeMismatch`] when `y` has the wrong shape.
pub fn waverec_adjoint<T: Real, D: Dimension>(
    y: ArrayView<'_, T, D>,
    like: &Coeffs1<T, D>,
    wavelet: &Wavelet,
    mode: Mode,
) -> Result<Coeffs1<T, D>> {
    run_adjoint(y, like, wavelet, mode)
}

// ---------------------------------------------------------------- 2-D

/// Single-level 2-D DWT, PyWavelets' `pywt.dwt2`: `(cA, [cH, cV, cD])`.
/// Axis 0 is transformed first, then axis 1.
///
/// ```
/// use dwt_core::{dwt2, Mode, Wavelet};
/// use ndarray::Array2;
/// let x = Array2::from_shape_fn((4, 4), |(i, j)| (4 * i + j + 1) as f64);
/// let (ca, [ch, cv, cd]) = dwt2(x.view(), &Wavelet::new("haar")?, Mode::Symmetric)?;
/// assert!((ca[[0, 0]] - 7.0).abs() < 1e-12 && (ca[[1, 1]] - 27.0).abs() < 1e-12);
/// assert!((ch[[0, 0]] + 4.0).abs() < 1e-12 && (cv[[0, 0]] + 1.0).abs() < 1e-12);
/// assert!(cd[[0, 0]].abs() < 1e-12);
/// # Ok::<(), dwt_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::Empty`], [`Error::TooShortForMode`].
pub fn dwt2<T: Real>(x: ArrayView2<'_, T>, wavelet: &Wavelet, mode: Mode) -> Result<(Array2<T>, [Array2<T>; 3])> {
    dwt2_axes(x, wavelet, mode, [Axis(0), Axis(1)])
}

/// [`dwt2`] over two axes of an N-D array (PyWavelets' `axes=`).
///
/// # Errors
/// As [`dwt2`], plus [`Error::AxisOutOfRange`] and [`Error::RepeatedAxis`].
#[allow(clippy::type_complexity)]
pub fn dwt2_axes<T: Real, D: Dimension>(
    x: ArrayView<'_, T, D>,
    wavelet: &Wavelet,
    mode: Mode,
    axes: [Axis; 2],
) -> Result<(Array<T, D>, [Array<T, D>; 3])> {
    let plan = Plan::<T, D, Coeffs2<T, D>>::with_axes(x.raw_dim(), &axes, wavelet, mode, Level::Unchecked(1))?;
    let (a, mut d) = run_forward(&plan, x)?.into_parts();
    let d = d.pop().ok_or(Error::LevelCountMismatch { expected: 1, found: 0 })?;
    Ok((a, d))
}

/// Single-level 2-D inverse DWT, PyWavelets' `pywt.idwt2((cA, (cH, cV, cD)))`.
/// All four arrays must have the same shape.
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::InvalidCoeffLength`].
pub fn idwt2<T: Real>(
    approx: ArrayView2<'_, T>,
    details: [ArrayView2<'_, T>; 3],
    wavelet: &Wavelet,
    mode: Mode,
) -> Result<Array2<T>> {
    idwt2_axes(approx, details, wavelet, mode, [Axis(0), Axis(1)])
}

/// [`idwt2`] over two axes of N-D coefficient arrays.
///
/// # Errors
/// As [`idwt2`], plus [`Error::AxisOutOfRange`] and [`Error::RepeatedAxis`].
pub fn idwt2_axes<T: Real, D: Dimension>(
    approx: ArrayView<'_, T, D>,
    details: [ArrayView<'_, T, D>; 3],
    wavelet: &Wavelet,
    mode: Mode,
    axes: [Axis; 2],
) -> Result<Array<T, D>> {
    if let Some(bad) = details.iter().find(|d| d.shape() != approx.shape()) {
        return Err(Error::ShapeMismatch {
            what: "detail coefficients (must match the approximation)",
            expected: approx.shape().to_vec(),
            found: bad.shape().to_vec(),
        });
    }
    let c = Coeffs2::from_parts(approx.to_owned(), vec![details.map(|d| d.to_owned())], axes);
    run_inverse(&c, wavelet, mode)
}

/// The transpose of [`idwt2`]: `y` (an inverse-transform shape) to
/// `(cA', [cH', cV', cD'])`.
///
/// # Errors
/// [`Error::NotASynthesisLength`] when a side of `y` is odd or zero.
pub fn idwt2_adjoint<T: Real>(
    y: ArrayView2<'_, T>,
    wavelet: &Wavelet,
    mode: Mode,
) -> Result<(Array2<T>, [Array2<T>; 3])> {
    let l = wavelet.filter_len();
    let (r0, r1) = y.dim();
    let shape = (synthesis_input_len(r0, l, mode)?, synthesis_input_len(r1, l, mode)?);
    let z = || Array2::zeros(shape);
    let like = Coeffs2::from_parts(z(), vec![[z(), z(), z()]], [Axis(0), Axis(1)]);
    let (a, mut d) = run_adjoint(y, &like, wavelet, mode)?.into_parts();
    let d = d.pop().ok_or(Error::LevelCountMismatch { expected: 1, found: 0 })?;
    Ok((a, d))
}

/// Multilevel 2-D DWT, PyWavelets' `pywt.wavedec2(x, w, mode, level)`.
/// `level = None` means the smaller axis' [`crate::dwt_max_level`].
///
/// ```
/// use dwt_core::{wavedec2, waverec2, Mode, Wavelet};
/// use ndarray::Array2;
/// let w = Wavelet::new("db2")?;
/// let x = Array2::from_shape_fn((64, 48), |(i, j)| ((i * 7 + j * 3) % 11) as f64);
/// let c = wavedec2(x.view(), &w, Mode::Periodization, Some(3))?;
/// let shapes: Vec<_> = c.details().iter().map(|d| d[0].dim()).collect();
/// assert_eq!(c.approx().dim(), (8, 6));
/// assert_eq!(shapes, [(8, 6), (16, 12), (32, 24)]);
/// let y = waverec2(&c, &w, Mode::Periodization)?;
/// assert!((&y - &x).iter().all(|e| e.abs() < 1e-10));
/// # Ok::<(), dwt_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::Empty`], [`Error::LevelTooDeep`], [`Error::TooShortForMode`].
pub fn wavedec2<T: Real>(
    x: ArrayView2<'_, T>,
    wavelet: &Wavelet,
    mode: Mode,
    level: Option<usize>,
) -> Result<Coeffs2<T>> {
    wavedec2_axes(x, wavelet, mode, level, [Axis(0), Axis(1)])
}

/// [`wavedec2`] over two axes of an N-D array.
///
/// # Errors
/// As [`wavedec2`], plus [`Error::AxisOutOfRange`] and [`Error::RepeatedAxis`].
pub fn wavedec2_axes<T: Real, D: Dimension>(
    x: ArrayView<'_, T, D>,
    wavelet: &Wavelet,
    mode: Mode,
    level: Option<usize>,
    axes: [Axis; 2],
) -> Result<Coeffs2<T, D>> {
    let plan = Plan::<T, D, Coeffs2<T, D>>::with_axes(x.raw_dim(), &axes, wavelet, mode, level.into())?;
    run_forward(&plan, x)
}

/// Multilevel 2-D inverse DWT, PyWavelets' `pywt.waverec2(c, w, mode)`, over
/// the axes stored in `c`.
///
/// # Errors
/// [`Error::ShapeMismatch`], [`Error::InvalidCoeffLength`].
pub fn waverec2<T: Real, D: Dimension>(c: &Coeffs2<T, D>, wavelet: &Wavelet, mode: Mode) -> Result<Array<T, D>> {
    run_inverse(c, wavelet, mode)
}

/// The transpose of [`waverec2`] for coefficients shaped like `like`.
///
/// # Errors
/// As [`waverec2`], and [`Error::ShapeMismatch`] when `y` has the wrong shape.
pub fn waverec2_adjoint<T: Real, D: Dimension>(
    y: ArrayView<'_, T, D>,
    like: &Coeffs2<T, D>,
    wavelet: &Wavelet,
    mode: Mode,
) -> Result<Coeffs2<T, D>> {
    run_adjoint(y, like, wavelet, mode)
}

/// Default axes helpers for callers with N-D arrays: PyWavelets' `axis=-1`.
///
/// # Errors
/// [`Error::AxisOutOfRange`] for a 0-D array.
pub fn last_axis(ndim: usize) -> Result<Axis> {
    last_axes::<1>(ndim).map(|[a]| a)
}

/// PyWavelets' `axes=(-2, -1)`.
///
/// # Errors
/// [`Error::AxisOutOfRange`] for arrays with fewer than two dimensions.
pub fn last_two_axes(ndim: usize) -> Result<[Axis; 2]> {
    last_axes::<2>(ndim)
}
