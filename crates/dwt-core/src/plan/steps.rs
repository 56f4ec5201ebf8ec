//! The geometry a plan precomputes: each step's kernel and buffer sizes,
//! the scratch regions, and the shape helpers.

use crate::kernels::{Analysis, Synthesis};
use crate::{Error, Real, Result};

/// A kernel with the buffer geometry it runs on.
#[derive(Debug, Clone)]
pub(super) struct Step<K> {
    pub(super) kernel: K,
    pub(super) outer: usize,
    pub(super) inner: usize,
    /// Elements of one input buffer.
    pub(super) in_len: usize,
    /// Elements of one output buffer.
    pub(super) out_len: usize,
}

impl<K> Step<K> {
    /// `kernel` along `axis`, turning a buffer of shape `from` into one of
    /// shape `to`.
    pub(super) fn new(kernel: K, from: &[usize], to: &[usize], axis: usize) -> Self {
        Step {
            outer: prod(&from[..axis]),
            inner: prod(&from[axis + 1..]),
            in_len: prod(from),
            out_len: prod(to),
            kernel,
        }
    }
}

#[derive(Debug, Clone)]
pub(super) struct LevelSteps<T> {
    /// Shape of every subband of this level.
    pub(super) coeff: Vec<usize>,
    /// Shape the inverse produces from `coeff`.
    pub(super) recon: Vec<usize>,
    pub(super) analysis: Vec<Step<Analysis<T>>>,
    pub(super) synthesis: Vec<Step<Synthesis<T>>>,
    pub(super) adjoint: Vec<Step<Analysis<T>>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Regions {
    pub(super) approx: usize,
    pub(super) stage: usize,
    pub(super) kernel: usize,
}

impl Regions {
    pub(super) fn total(&self) -> usize {
        2 * self.approx + self.stage + self.kernel
    }
}

pub(super) fn prod(shape: &[usize]) -> usize {
    shape.iter().product()
}

pub(super) fn with(shape: &[usize], axis: usize, len: usize) -> Vec<usize> {
    let mut s = shape.to_vec();
    s[axis] = len;
    s
}

pub(super) fn check_axes(ndim: usize, axes: &[usize], expected: usize) -> Result<()> {
    if axes.len() != expected {
        return Err(Error::WrongAxisCount {
            expected,
            found: axes.len(),
        });
    }
    if let Some(&axis) = axes.iter().find(|&&a| a >= ndim) {
        return Err(Error::AxisOutOfRange { axis, ndim });
    }
    if axes.len() == 2 && axes[0] == axes[1] {
        return Err(Error::RepeatedAxis { axes: axes.to_vec() });
    }
    Ok(())
}

/// Copy the top-left block shared by two shapes from `src` into `dst` and
/// zero the rest of `dst`: a zero-padding embed or a crop, both C-contiguous.
pub(super) fn embed<T: Real>(src: &[T], ss: &[usize], dst: &mut [T], ds: &[usize]) {
    let (rows, srows) = (ds[0], ss[0]);
    if ds.len() == 1 {
        let n = rows.min(srows);
        dst[..n].copy_from_slice(&src[..n]);
        dst[n..rows].fill(T::zero());
        return;
    }
    let (sin, din) = (prod(&ss[1..]), prod(&ds[1..]));
    for (i, d) in dst.chunks_exact_mut(din).take(rows).enumerate() {
        if i < srows {
            embed(&src[i * sin..(i + 1) * sin], &ss[1..], d, &ds[1..]);
        } else {
            d.fill(T::zero());
        }
    }
}
