//! Wavelet transforms and sparse wavelet reconstruction on any GPU, through
//! [wgpu](https://wgpu.rs) compute shaders (WGSL): Vulkan, Metal, DX12 and
//! GL, and Mesa's software rasterisers where there is no GPU. Results match
//! [`dwt_core`] (and so PyWavelets) to `f32` rounding.
//!
//! * [`Context`] opens the adapter the environment picks (`WGPU_BACKEND`,
//!   `WGPU_ADAPTER_NAME`) with its real limits, and caches the compiled
//!   pipelines.
//! * [`Dwt2`]: multilevel `wavedec2` / `waverec2` in zero, constant,
//!   symmetric, reflect, periodic and periodization modes, for every
//!   wavelet of `dwt_core` (taps in a buffer; pipelines specialised per
//!   filter length and mode).
//! * [`SeparableBasis`] (dwt-core's, re-exported) / [`SparsePlan`]: ΔW = α·Σ c_k·atom_k from a few
//!   coefficients without a dense coefficient array; cropped transforms
//!   (PEFT's WaveFT layout) included.
//! * [`Batch`]: fused in-place merge and unmerge, ΔW, and the gradient with
//!   respect to the coefficients (from `∂L/∂ΔW` or from the batch factors of
//!   a linear layer), for many matrices in one submission.
//!
//! ```
//! use dwt_core::{Level, Mode, Wavelet};
//! use dwt_gpu::{Context, Location, Orientation, SeparableBasis, SparsePlan, Subband};
//! use ndarray::Array2;
//!
//! # if let Err(e) = Context::new() { eprintln!("skipped: {e}"); return Ok(()); }
//! let ctx = Context::new()?; // Err(Error::NoAdapter) without any adapter
//! println!("running on {}", ctx.describe());
//!
//! // Two coefficients of a one-level db2 decomposition of a 256×128 weight.
//! let locs = [
//!     Location { level: 1, band: Subband::Approx, row: 10, col: 3 },
//!     Location { level: 1, band: Subband::Diagonal, row: 60, col: 31 },
//! ];
//! let w = Wavelet::new("db2")?;
//! let basis = SeparableBasis::wavedec2(&w, Mode::Periodization, (256, 128), Level::Exactly(1), None, &locs)?;
//! let plan = SparsePlan::new(&ctx, &basis)?;
//!
//! // W += 0.5 · ΔW on the device, then back to the host.
//! let weight = ctx.upload(Array2::<f32>::ones((256, 128)).view())?;
//! let coeffs = ctx.upload_vec(&[1.0, -2.0])?;
//! ctx.batch().merge(&plan, &coeffs, 0.5, &weight, Orientation::Normal)?.submit()?;
//! let merged = ctx.download(&weight)?;
//! assert_eq!(merged.dim(), (256, 128));
//! # Ok::<(), dwt_gpu::Error>(())
//! ```
//!
//! # Without a GPU
//! Install Mesa's Vulkan driver (`apt-get install mesa-vulkan-drivers
//! libvulkan1`) for lavapipe, or use GL through llvmpipe
//! (`WGPU_BACKEND=gl`). Both are slow; they prove the kernels, not speed.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod buffer;
mod context;
mod error;
mod sparse;
mod transform;

pub use buffer::{GpuMatrix, GpuVector};
pub use context::Context;
pub use dwt_core::{Crop, Location, Orientation, SeparableBasis, Subband};
pub use error::{Error, Result};
pub use sparse::{Batch, SparsePlan};
pub use transform::Dwt2;

/// The README's example runs as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
