//! Coefficient containers in PyWavelets' layout.

use ndarray::{Array, Axis, Dimension, Ix1, Ix2};

use crate::{Error, Real, Result};

/// Multilevel 1-D coefficients along one axis: `[cA_n, cD_n, …, cD_1]`,
/// PyWavelets' `wavedec` output.
///
/// `D` is the array dimension (1 for plain signals; higher for a transform
/// along one axis of an N-D array, whose axis is remembered).
#[derive(Debug, Clone, PartialEq)]
pub struct Coeffs1<T, D: Dimension = Ix1> {
    pub(crate) approx: Array<T, D>,
    pub(crate) details: Vec<Array<T, D>>,
    pub(crate) axis: usize,
}

/// Multilevel 2-D coefficients over two axes:
/// `[cA_n, (cH_n, cV_n, cD_n), …, (cH_1, cV_1, cD_1)]`, PyWavelets'
/// `wavedec2` output.
///
/// `cH` holds details along the first transformed axis (rows), `cV` along the
/// second (columns), and `cD` along both.
#[derive(Debug, Clone, PartialEq)]
pub struct Coeffs2<T, D: Dimension = Ix2> {
    pub(crate) approx: Array<T, D>,
    pub(crate) details: Vec<[Array<T, D>; 3]>,
    pub(crate) axes: [usize; 2],
}

impl<T, D: Dimension> Coeffs1<T, D> {
    /// Assemble coefficients from their parts (details coarsest first).
    /// Shapes are checked when the coefficients are used.
    pub fn from_parts(approx: Array<T, D>, details: Vec<Array<T, D>>, axis: Axis) -> Self {
        Coeffs1 {
            approx,
            details,
            axis: axis.index(),
        }
    }
    /// The coarsest approximation, `cA_n`.
    pub fn approx(&self) -> &Array<T, D> {
        &self.approx
    }
    /// Mutable access to `cA_n` (keep its shape).
    pub fn approx_mut(&mut self) -> &mut Array<T, D> {
        &mut self.approx
    }
    /// The details `cD_n … cD_1`, coarsest first.
    pub fn details(&self) -> &[Array<T, D>] {
        &self.details
    }
    /// Mutable access to the details (keep their shapes).
    pub fn details_mut(&mut self) -> &mut [Array<T, D>] {
        &mut self.details
    }
    /// The transformed axis.
    pub fn axis(&self) -> Axis {
        Axis(self.axis)
    }
    /// Number of decomposition levels.
    pub fn levels(&self) -> usize {
        self.details.len()
    }
    /// Take the parts apart: `(approx, details)`.
    pub fn into_parts(self) -> (Array<T, D>, Vec<Array<T, D>>) {
        (self.approx, self.details)
    }
    /// Total number of coefficients.
    pub fn len(&self) -> usize {
        self.approx.len() + self.details.iter().map(Array::len).sum::<usize>()
    }
    /// Whether there are no coefficients at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T, D: Dimension> Coeffs2<T, D> {
    /// Assemble coefficients from their parts (details coarsest first, each
    /// `[cH, cV, cD]`). Shapes are checked when the coefficients are used.
    pub fn from_parts(approx: Array<T, D>, details: Vec<[Array<T, D>; 3]>, axes: [Axis; 2]) -> Self {
        Coeffs2 {
            approx,
            details,
            axes: axes.map(|a| a.index()),
        }
    }
    /// The coarsest approximation, `cA_n`.
    pub fn approx(&self) -> &Array<T, D> {
        &self.approx
    }
    /// Mutable access to `cA_n` (keep its shape).
    pub fn approx_mut(&mut self) -> &mut Array<T, D> {
        &mut self.approx
    }
    /// The details `[cH, cV, cD]`, coarsest level first.
    pub fn details(&self) -> &[[Array<T, D>; 3]] {
        &self.details
    }
    /// Mutable access to the details (keep their shapes).
    pub fn details_mut(&mut self) -> &mut [[Array<T, D>; 3]] {
        &mut self.details
    }
    /// The two transformed axes, in transform order.
    pub fn axes(&self) -> [Axis; 2] {
        self.axes.map(Axis)
    }
    /// Number of decomposition levels.
    pub fn levels(&self) -> usize {
        self.details.len()
    }
    /// Take the parts apart: `(approx, details)`.
    #[allow(clippy::type_complexity)]
    pub fn into_parts(self) -> (Array<T, D>, Vec<[Array<T, D>; 3]>) {
        (self.approx, self.details)
    }
    /// Total number of coefficients.
    pub fn len(&self) -> usize {
        self.approx.len() + self.details.iter().flatten().map(Array::len).sum::<usize>()
    }
    /// Whether there are no coefficients at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

mod sealed {
    pub trait Sealed {}
    impl<T, D: ndarray::Dimension> Sealed for super::Coeffs1<T, D> {}
    impl<T, D: ndarray::Dimension> Sealed for super::Coeffs2<T, D> {}
}

/// The approximation and one level's detail arrays, borrowed mutably.
#[doc(hidden)]
pub type LevelMut<'a, T, D> = (&'a mut Array<T, D>, [Option<&'a mut Array<T, D>>; 3]);

/// What a plan needs from a coefficient container: [`Coeffs1`] or
/// [`Coeffs2`]. Sealed; the plans are generic over it.
pub trait CoeffSet<T, D: Dimension>: sealed::Sealed + Sized {
    /// Number of transformed axes (1 or 2).
    const AXES: usize;
    /// The transformed axes.
    fn axis_indices(&self) -> &[usize];
    /// Number of levels.
    fn level_count(&self) -> usize;
    /// Zero coefficients: every detail subband of a level shares one shape
    /// (`detail_shapes`, coarsest first).
    #[doc(hidden)]
    fn zeros(approx_shape: &[usize], detail_shapes: &[Vec<usize>], axes: &[usize]) -> Self
    where
        T: Real;
    /// The approximation.
    #[doc(hidden)]
    fn approx_array(&self) -> &Array<T, D>;
    /// Mutable approximation.
    #[doc(hidden)]
    fn approx_array_mut(&mut self) -> &mut Array<T, D>;
    /// Detail arrays of level `lvl` (0 = coarsest), in subband order.
    #[doc(hidden)]
    fn detail_arrays(&self, lvl: usize) -> [Option<&Array<T, D>>; 3];
    /// The approximation and the detail arrays of level `lvl` mutably.
    #[doc(hidden)]
    fn detail_arrays_mut(&mut self, lvl: usize) -> LevelMut<'_, T, D>;
}

impl<T, D: Dimension> CoeffSet<T, D> for Coeffs1<T, D> {
    const AXES: usize = 1;
    fn axis_indices(&self) -> &[usize] {
        std::slice::from_ref(&self.axis)
    }
    fn level_count(&self) -> usize {
        self.details.len()
    }
    fn zeros(approx_shape: &[usize], detail_shapes: &[Vec<usize>], axes: &[usize]) -> Self
    where
        T: Real,
    {
        Coeffs1 {
            approx: zeros(approx_shape),
            details: detail_shapes.iter().map(|s| zeros(s)).collect(),
            axis: axes[0],
        }
    }
    fn approx_array(&self) -> &Array<T, D> {
        &self.approx
    }
    fn approx_array_mut(&mut self) -> &mut Array<T, D> {
        &mut self.approx
    }
    fn detail_arrays(&self, lvl: usize) -> [Option<&Array<T, D>>; 3] {
        [Some(&self.details[lvl]), None, None]
    }
    fn detail_arrays_mut(&mut self, lvl: usize) -> LevelMut<'_, T, D> {
        (&mut self.approx, [Some(&mut self.details[lvl]), None, None])
    }
}

/// Subband order inside the engine is by bit pattern, first axis most
/// significant: `ad` (cV) = 1, `da` (cH) = 2, `dd` (cD) = 3. PyWavelets'
/// tuple order is `(cH, cV, cD)`.
impl<T, D: Dimension> CoeffSet<T, D> for Coeffs2<T, D> {
    const AXES: usize = 2;
    fn axis_indices(&self) -> &[usize] {
        &self.axes
    }
    fn level_count(&self) -> usize {
        self.details.len()
    }
    fn zeros(approx_shape: &[usize], detail_shapes: &[Vec<usize>], axes: &[usize]) -> Self
    where
        T: Real,
    {
        Coeffs2 {
            approx: zeros(approx_shape),
            details: detail_shapes.iter().map(|s| [zeros(s), zeros(s), zeros(s)]).collect(),
            axes: [axes[0], axes[1]],
        }
    }
    fn approx_array(&self) -> &Array<T, D> {
        &self.approx
    }
    fn approx_array_mut(&mut self) -> &mut Array<T, D> {
        &mut self.approx
    }
    fn detail_arrays(&self, lvl: usize) -> [Option<&Array<T, D>>; 3] {
        let [h, v, d] = &self.details[lvl];
        [Some(v), Some(h), Some(d)]
    }
    fn detail_arrays_mut(&mut self, lvl: usize) -> LevelMut<'_, T, D> {
        let [h, v, d] = &mut self.details[lvl];
        (&mut self.approx, [Some(v), Some(h), Some(d)])
    }
}

pub(crate) fn standard_slice<'a, T, D: Dimension>(a: &'a Array<T, D>, what: &'static str) -> Result<&'a [T]> {
    a.as_slice().ok_or(Error::NonContiguous { what })
}

pub(crate) fn standard_slice_mut<'a, T, D: Dimension>(
    a: &'a mut Array<T, D>,
    what: &'static str,
) -> Result<&'a mut [T]> {
    a.as_slice_mut().ok_or(Error::NonContiguous { what })
}

pub(crate) fn zeros<T: Real, D: Dimension>(shape: &[usize]) -> Array<T, D> {
    let mut dim = D::zeros(shape.len());
    dim.slice_mut().copy_from_slice(shape);
    Array::zeros(dim)
}
