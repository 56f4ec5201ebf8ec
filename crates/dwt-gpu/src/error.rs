//! The error type of every fallible operation in this crate.

use thiserror::Error;

/// What can go wrong on the GPU path. Every variant names what was wrong;
/// none of them leaves a caller's buffer half-written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// No adapter matched (none installed, or `WGPU_BACKEND` /
    /// `WGPU_ADAPTER_NAME` excluded every one).
    #[error(
        "no GPU adapter found ({reason}); install a Vulkan/Metal/DX12/GL driver, or Mesa's lavapipe \
         (`apt-get install mesa-vulkan-drivers libvulkan1`), and check WGPU_BACKEND / WGPU_ADAPTER_NAME"
    )]
    NoAdapter {
        /// wgpu's reason.
        reason: String,
    },
    /// The adapter refused to open a device.
    #[error("the GPU adapter refused a device: {0}")]
    RequestDevice(#[from] wgpu::RequestDeviceError),
    /// The wavelet math refused the request (bad level, empty shape, …).
    #[error(transparent)]
    Dwt(#[from] dwt_core::Error),
    /// A buffer would exceed what the device can bind or allocate.
    #[error("{what} needs {bytes} bytes, more than this device allows in one buffer ({limit} bytes)")]
    TooLarge {
        /// The buffer.
        what: &'static str,
        /// Bytes it needs.
        bytes: u64,
        /// The device's limit.
        limit: u64,
    },
    /// The device ran out of memory.
    #[error("the GPU is out of memory allocating {what} ({bytes} bytes)")]
    OutOfMemory {
        /// The buffer.
        what: &'static str,
        /// Bytes requested.
        bytes: u64,
    },
    /// A shape or length does not match what the plan or operation expects.
    #[error("{what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which argument.
        what: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A coefficient location or factor run lies outside its array.
    #[error("{what} out of range: {detail}")]
    OutOfRange {
        /// Which argument.
        what: &'static str,
        /// Where and why.
        detail: String,
    },
    /// An extension mode the GPU kernels do not implement.
    #[error(
        "mode `{0}` is not implemented on the GPU (zero, constant, symmetric, reflect, periodic and periodization are)"
    )]
    UnsupportedMode(dwt_core::Mode),
    /// The driver reported an error (a validation failure here is a bug in
    /// this crate; please report it).
    #[error("GPU error: {0}")]
    Device(String),
}

/// `Result` with this crate's [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
