//! Packing coefficients into one array and back: PyWavelets'
//! `coeffs_to_array` / `array_to_coeffs`.

use std::ops::Range;

use ndarray::{Array, ArrayView, AxisDescription, Dimension, Slice};

use crate::coeffs::CoeffSet;
use crate::{Error, Real, Result};

/// Where each subband sits in the packed array (PyWavelets' `coeff_slices`).
///
/// Every region is one range per array dimension. The untransformed
/// dimensions always span their full length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoeffSlices {
    shape: Vec<usize>,
    axes: Vec<usize>,
    approx: Vec<Range<usize>>,
    /// Per level (coarsest first), per subband in PyWavelets' order
    /// (`[cD]` in 1-D, `[cH, cV, cD]` in 2-D).
    details: Vec<Vec<Vec<Range<usize>>>>,
}

impl CoeffSlices {
    /// Shape of the packed array.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Region of the approximation.
    pub fn approx(&self) -> &[Range<usize>] {
        &self.approx
    }
    /// Regions of the details, coarsest level first, each level's subbands
    /// in PyWavelets' order (`[cD]` in 1-D, `[cH, cV, cD]` in 2-D).
    pub fn details(&self) -> &[Vec<Vec<Range<usize>>>] {
        &self.details
    }
}

/// Subband index in the engine's bit order (1..2^k) for each PyWavelets
/// position: 1-D `[d]`, 2-D `[da, ad, dd]`.
fn pywt_order(axes: usize) -> &'static [usize] {
    if axes == 1 { &[1] } else { &[2, 1, 3] }
}

fn axis_slice(region: &[Range<usize>]) -> impl Fn(AxisDescription) -> Slice + '_ {
    |ad| Slice::from(region[ad.axis.index()].clone())
}

/// Pack every coefficient into one array, PyWavelets' `coeffs_to_array` with
/// zero padding: `cA` top-left, then each level's details around it
/// (2-D: `cH` below, `cV` to the right, `cD` diagonally).
///
/// ```
/// use dwt_core::{array_to_coeffs, coeffs_to_array, wavedec2, Coeffs2, Mode, Wavelet};
/// use ndarray::Array2;
/// let x = Array2::from_shape_fn((8, 8), |(i, j)| (i + 2 * j) as f64);
/// let c = wavedec2(x.view(), &Wavelet::new("haar")?, Mode::Periodization, Some(2))?;
/// let (packed, slices) = coeffs_to_array(&c)?;
/// assert_eq!(packed.dim(), (8, 8));
/// let back: Coeffs2<f64> = array_to_coeffs(packed.view(), &slices)?;
/// assert_eq!(back, c);
/// # Ok::<(), dwt_core::Error>(())
/// ```
///
/// # Errors
/// [`Error::ShapeMismatch`] when the subbands of a level differ in shape or
/// the untransformed axes disagree.
pub fn coeffs_to_array<T: Real, D: Dimension, C: CoeffSet<T, D>>(c: &C) -> Result<(Array<T, D>, CoeffSlices)> {
    let axes = c.axis_indices().to_vec();
    let k = axes.len();
    let approx = c.approx_array();
    let mut shape = approx.shape().to_vec();
    let mut a_shape = shape.clone();
    let full = |s: &[usize]| s.iter().map(|&n| 0..n).collect::<Vec<_>>();
    let approx_region = full(approx.shape());
    let mut details = Vec::with_capacity(c.level_count());
    for lvl in 0..c.level_count() {
        let bands = c.detail_arrays(lvl);
        // Bit order: the all-detail band is last.
        let dd = bands
            .iter()
            .flatten()
            .last()
            .map(|a| a.shape().to_vec())
            .unwrap_or_default();
        let mut regions = Vec::with_capacity(pywt_order(k).len());
        for &s in pywt_order(k) {
            let Some(band) = bands[s - 1] else { continue };
            let bs = band.shape();
            if bs.len() != shape.len() || bs != dd.as_slice() {
                return Err(Error::ShapeMismatch {
                    what: "detail subbands of one level",
                    expected: dd.clone(),
                    found: bs.to_vec(),
                });
            }
            let mut region = full(bs);
            for (j, &ax) in axes.iter().enumerate() {
                if (s >> (k - 1 - j)) & 1 == 1 {
                    region[ax] = a_shape[ax]..a_shape[ax] + bs[ax];
                }
            }
            for (i, &n) in bs.iter().enumerate() {
                if !axes.contains(&i) && n != shape[i] {
                    return Err(Error::ShapeMismatch {
                        what: "untransformed axes of the details",
                        expected: shape.clone(),
                        found: bs.to_vec(),
                    });
                }
            }
            regions.push(region);
        }
        for &ax in &axes {
            a_shape[ax] += dd.get(ax).copied().unwrap_or(0);
        }
        details.push(regions);
    }
    for &ax in &axes {
        shape[ax] = a_shape[ax].max(shape[ax]);
    }
    let mut out: Array<T, D> = crate::coeffs::zeros(&shape);
    out.slice_each_axis_mut(axis_slice(&approx_region)).assign(approx);
    for (lvl, regions) in details.iter().enumerate() {
        let bands = c.detail_arrays(lvl);
        for (region, &s) in regions.iter().zip(pywt_order(k)) {
            if let Some(band) = bands[s - 1] {
                out.slice_each_axis_mut(axis_slice(region)).assign(band);
            }
        }
    }
    Ok((
        out,
        CoeffSlices {
            shape,
            axes,
            approx: approx_region,
            details,
        },
    ))
}

/// Unpack an array made by [`coeffs_to_array`], PyWavelets'
/// `array_to_coeffs`.
///
/// # Errors
/// [`Error::ShapeMismatch`] when `arr` or the container type does not match
/// `slices`.
pub fn array_to_coeffs<T: Real, D: Dimension, C: CoeffSet<T, D>>(
    arr: ArrayView<'_, T, D>,
    slices: &CoeffSlices,
) -> Result<C> {
    if arr.shape() != slices.shape.as_slice() || slices.axes.len() != C::AXES {
        return Err(Error::ShapeMismatch {
            what: "packed coefficient array",
            expected: slices.shape.clone(),
            found: arr.shape().to_vec(),
        });
    }
    let lens = |r: &[Range<usize>]| r.iter().map(|r| r.len()).collect::<Vec<_>>();
    let detail_shapes: Vec<Vec<usize>> = slices
        .details
        .iter()
        .map(|lvl| lvl.first().map(|r| lens(r)).unwrap_or_default())
        .collect();
    let mut c = C::zeros(&lens(&slices.approx), &detail_shapes, &slices.axes);
    c.approx_array_mut()
        .assign(&arr.slice_each_axis(axis_slice(&slices.approx)));
    let order = pywt_order(C::AXES);
    for (lvl, regions) in slices.details.iter().enumerate() {
        let (_, bands) = c.detail_arrays_mut(lvl);
        let mut bands = bands;
        for (region, &s) in regions.iter().zip(order) {
            if let Some(band) = bands[s - 1].as_mut() {
                band.assign(&arr.slice_each_axis(axis_slice(region)));
            }
        }
    }
    Ok(c)
}
