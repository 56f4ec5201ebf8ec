//! The floating-point element types the transforms run on.

use std::fmt::{Debug, Display};
use std::iter::Sum;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// A real floating-point element type: `f32` or `f64`.
///
/// Sealed: the kernels are tuned and tested for exactly these two types.
pub trait Real:
    num_traits::Float
    + num_traits::FloatConst
    + ndarray::ScalarOperand
    + std::ops::AddAssign
    + std::ops::SubAssign
    + std::ops::MulAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
    + sealed::Sealed
    + crate::scratch::WithScratch
{
    /// Convert from `f64`, rounding to nearest.
    fn from_f64(v: f64) -> Self;
    /// Convert to `f64` exactly.
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline]
    fn as_f64(self) -> f64 {
        f64::from(self)
    }
}

impl Real for f64 {
    #[inline]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline]
    fn as_f64(self) -> f64 {
        self
    }
}
