//! Discrete wavelet transforms on [`ndarray`] that agree with
//! [PyWavelets](https://pywavelets.readthedocs.io) to rounding error.
//!
//! * **Wavelets**: every discrete wavelet PyWavelets ships — `haar`,
//!   `db1`–`db38`, `sym2`–`sym20`, `coif1`–`coif17`, `biorN.M`, `rbioN.M`,
//!   `dmey` — looked up by name ([`Wavelet::new`]), filter banks bit-identical
//!   to PyWavelets'.
//! * **Modes**: all nine extension modes ([`Mode`]), with PyWavelets' output
//!   lengths ([`dwt_coeff_len`], [`idwt_len`], [`dwt_max_level`]).
//! * **Transforms**: [`dwt`]/[`idwt`], [`wavedec`]/[`waverec`],
//!   [`dwt2`]/[`idwt2`], [`wavedec2`]/[`waverec2`], on `f32` or `f64`, along
//!   any axis (or pair of axes) of an N-D array, for any size including sizes
//!   shorter than the filter. Coefficients come in PyWavelets' layout
//!   ([`Coeffs1`], [`Coeffs2`], [`coeffs_to_array`]).
//! * **Adjoints**: the exact transposes of every synthesis transform
//!   ([`idwt_adjoint`], [`idwt2_adjoint`], [`waverec_adjoint`],
//!   [`waverec2_adjoint`], [`Plan::inverse_adjoint`]) in every mode, the
//!   building block of gradient computation through an inverse DWT.
//! * **Atoms**: [`AtomBasis`] gives the reconstruction of one unit
//!   coefficient in `O(support)` work, the building block of sparse
//!   (few-coefficient) synthesis and its gradient.
//! * **Separable atoms**: [`SeparableBasis`] holds the rank-1 atoms of a
//!   few 2-D coefficients ([`Location`], [`Subband`]) as interned factor
//!   runs, with the products that never form the reconstruction; the one
//!   model that wft-adapter's CPU kernels run on and dwt-gpu uploads.
//! * **Plans**: [`Plan1`]/[`Plan2`] precompute everything that depends on the
//!   shape and then transform into caller-provided buffers without
//!   allocating, RustFFT style.
//!
//! ```
//! use dwt_core::{wavedec2, waverec2, Mode, Wavelet};
//! use ndarray::Array2;
//!
//! let w = Wavelet::new("sym4")?;
//! let x = Array2::from_shape_fn((37, 50), |(i, j)| ((i * 3 + j) % 7) as f64);
//! let coeffs = wavedec2(x.view(), &w, Mode::Symmetric, Some(2))?;
//! println!("cA {:?}, {} detail levels", coeffs.approx().dim(), coeffs.levels());
//!
//! // PyWavelets' waverec2 returns one extra row/column for odd sizes.
//! let y = waverec2(&coeffs, &w, Mode::Symmetric)?;
//! let y = y.slice(ndarray::s![..37, ..50]);
//! assert!(y.iter().zip(&x).all(|(a, b)| (a - b).abs() < 1e-10));
//! # Ok::<(), dwt_core::Error>(())
//! ```
//!
//! # Conventions
//! Everything follows PyWavelets 1.9: `dwt2` transforms axis 0 first, then
//! axis 1; `cH` is the detail along the first transformed axis, `cV` along the
//! second; details are stored coarsest first. Where PyWavelets warns (a level
//! deeper than `dwt_max_level`), this crate returns
//! [`Error::LevelTooDeep`] unless asked for [`Level::Unchecked`] through a
//! plan. NaN and infinities propagate through the arithmetic as in
//! PyWavelets.
//!
//! # Features
//! * `parallel` (default): large steps run on rayon's thread pool. Turn it
//!   off, or call [`Plan::set_parallel`], for single-threaded transforms.
//! * `serde`: [`Wavelet`] and [`Mode`] serialise as their names
//!   (`"db2"`, `"periodization"`) and deserialise through [`Wavelet::new`]
//!   and [`Mode`]'s `FromStr`, so unknown names are errors.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod array;
mod atoms;
mod coeffs;
mod error;
mod filters;
mod isa;
mod kernels;
mod mode;
mod plan;
mod real;
mod scratch;
mod separable;
#[cfg(feature = "serde")]
mod serde_impls;
mod transform;
mod wavelet;

pub use array::{CoeffSlices, array_to_coeffs, coeffs_to_array};
pub use atoms::{Atom, AtomBasis, Band};
pub use coeffs::{CoeffSet, Coeffs1, Coeffs2};
pub use error::{Error, Result};
pub use mode::{Mode, dwt_coeff_len, dwt_max_level, idwt_len};
pub use plan::{Level, Plan, Plan1, Plan2};
pub use real::Real;
pub use separable::{BackwardBlock, Crop, FactorSet, Location, Orientation, SeparableBasis, Subband};
pub use transform::{
    dwt, dwt_axis, dwt2, dwt2_axes, idwt, idwt_adjoint, idwt_axis, idwt2, idwt2_adjoint, idwt2_axes, last_axis,
    last_two_axes, wavedec, wavedec_axis, wavedec2, wavedec2_axes, waverec, waverec_adjoint, waverec2,
    waverec2_adjoint,
};
pub use wavelet::{Family, Wavelet};

pub use ndarray;

/// The README's example, compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc(hidden)]
pub use isa::portable_only as __portable_only;
#[doc(hidden)]
pub use isa::set_portable_only as __set_portable_kernels_only;
