//! The crate's error type.

use crate::Mode;

/// Everything that can go wrong in `dwt-core`. Every public fallible function
/// returns this type; nothing in the crate panics on user data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The wavelet name is not one that PyWavelets' discrete families know.
    #[error(
        "unknown wavelet {name:?}; valid names are haar, db1-db38, sym2-sym20, coif1-coif17, \
         bior1.1/1.3/1.5/2.2/2.4/2.6/2.8/3.1/3.3/3.5/3.7/3.9/4.4/5.5/6.8, the same rbio orders, and dmey"
    )]
    UnknownWavelet {
        /// The name that was asked for.
        name: String,
    },
    /// The extension mode name is not one of PyWavelets' nine modes.
    #[error(
        "unknown extension mode {name:?}; valid modes are zero, constant, symmetric, reflect, \
         periodic, smooth, antisymmetric, antireflect and periodization"
    )]
    UnknownMode {
        /// The name that was asked for.
        name: String,
    },
    /// A user-defined filter bank is unusable.
    #[error("invalid filter bank: {reason}")]
    InvalidFilter {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An input array (or the transformed axis of one) has no samples.
    #[error("{what} is empty")]
    Empty {
        /// Which input.
        what: &'static str,
    },
    /// `reflect` and `antireflect` need at least two samples, as in PyWavelets.
    #[error("mode {mode} needs at least 2 samples along the transformed axis, got {len}")]
    TooShortForMode {
        /// The mode.
        mode: Mode,
        /// The length that was given.
        len: usize,
    },
    /// The requested decomposition level exceeds `dwt_max_level` for the input.
    #[error(
        "level {level} is too deep for length {len} with a {filter_len}-tap filter \
         (dwt_max_level is {max_level}); every coefficient would be dominated by the boundary"
    )]
    LevelTooDeep {
        /// The requested level.
        level: usize,
        /// The deepest level PyWavelets allows without a warning.
        max_level: usize,
        /// The shortest transformed axis.
        len: usize,
        /// The filter length.
        filter_len: usize,
    },
    /// An axis index is not smaller than the array's number of dimensions.
    #[error("axis {axis} is out of range for an array with {ndim} dimensions")]
    AxisOutOfRange {
        /// The axis.
        axis: usize,
        /// The number of dimensions.
        ndim: usize,
    },
    /// A plan got the wrong number of axes.
    #[error("expected {expected} transform axes, got {found}")]
    WrongAxisCount {
        /// Axes the transform needs.
        expected: usize,
        /// Axes given.
        found: usize,
    },
    /// The forward transform was asked of a plan built from coefficient shapes.
    #[error("this plan was built from coefficient shapes and has no forward transform")]
    NoSignalShape,
    /// The same axis was named twice in a multi-axis transform.
    #[error("axes must be distinct, got {axes:?}")]
    RepeatedAxis {
        /// The axes that were given.
        axes: Vec<usize>,
    },
    /// Arrays that must agree in shape do not.
    #[error("shape mismatch for {what}: expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Which array.
        what: &'static str,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was given.
        found: Vec<usize>,
    },
    /// Coefficients too short for this filter: the inverse transform would be empty.
    #[error(
        "{len} coefficients cannot be reconstructed with a {filter_len}-tap filter in mode {mode} \
         (use the wavelet and mode of the decomposition)"
    )]
    InvalidCoeffLength {
        /// Coefficient length along the axis.
        len: usize,
        /// The filter length.
        filter_len: usize,
        /// The mode.
        mode: Mode,
    },
    /// A length given to an adjoint does not come from a synthesis transform.
    #[error("length {len} is not an output length of the inverse transform ({reason})")]
    NotASynthesisLength {
        /// The length.
        len: usize,
        /// Why not.
        reason: &'static str,
    },
    /// A caller-provided scratch buffer is too small.
    #[error("scratch buffer too small: need {needed} elements, got {got}")]
    ScratchTooSmall {
        /// Required length (see the plan's `scratch_len`).
        needed: usize,
        /// Given length.
        got: usize,
    },
    /// An output array given to a plan is not in standard (C-contiguous) layout.
    #[error("{what} must be in standard (C-contiguous) layout")]
    NonContiguous {
        /// Which array.
        what: &'static str,
    },
    /// The coefficient set has a different number of levels than expected.
    #[error("expected {expected} decomposition levels, found {found}")]
    LevelCountMismatch {
        /// Expected.
        expected: usize,
        /// Found.
        found: usize,
    },
    /// A factor, location or crop of a separable basis lies outside it.
    #[error("{what} out of range: {detail}")]
    OutOfRange {
        /// What was out of range.
        what: &'static str,
        /// Where, and the bounds.
        detail: String,
    },
}

/// Shorthand for `Result<T, dwt_core::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
