//! WaveletFT adapters for linear layers, with the LoRA and FourierFT
//! baselines under one trait, and files that Hugging Face PEFT reads and
//! writes.
//!
//! WaveletFT trains `n` wavelet coefficients `c` of a frozen `out × in`
//! weight `W` and adds `ΔW = α · IDWT2(S(c))`, where `S` scatters `c` into
//! an otherwise zero coefficient array. Every coefficient's contribution is a
//! rank-1 outer product of two short 1-D synthesis atoms, so this crate never
//! needs the dense ΔW to apply, merge or differentiate the adapter:
//!
//! * [`Adapter::merge_into`] adds the atoms in place (`O(n·support²)`);
//! * [`Adapter::forward_delta`] computes `x·ΔWᵀ` in `O(batch·n·support)`;
//! * [`Adapter::backward`] gives `∂L/∂c_k = α Σ_b (g_b·u_k)(x_b·v_k)` without
//!   forming `gᵀ·x`.
//!
//! Locations are PEFT's, bit for bit: `torch.randperm(out*in, seed)[:n]`
//! through MT19937 ([`randperm_prefix`]), in `O(n)`.
//!
//! ```
//! use ndarray::Array2;
//! use wft_adapter::dwt_core::Wavelet;
//! use wft_adapter::{Adapter, AdaptedLinear, WaveletFt, WaveletFtConfig};
//!
//! // PEFT's WaveFT defaults, db2, 64 coefficients on a 48×32 layer.
//! let config = WaveletFtConfig { wavelet: Wavelet::new("db2")?, n_frequency: 64, ..Default::default() };
//! let mut adapter = WaveletFt::<f64>::new(&config, (48, 32))?;
//! adapter.params_mut()[0] = 0.5;
//!
//! let w = Array2::from_shape_fn((48, 32), |(i, j)| ((i + 2 * j) % 5) as f64 * 0.1);
//! let mut layer = AdaptedLinear::new(w, None, adapter)?;
//! let x = Array2::from_shape_fn((4, 32), |(b, j)| (b as f64 - j as f64) * 0.01);
//! let y = layer.forward(x.view())?;
//!
//! // Merging gives the same outputs.
//! layer.merge_safe()?;
//! let merged = layer.forward(x.view())?;
//! assert!(y.iter().zip(&merged).all(|(a, b)| (a - b).abs() < 1e-12));
//! # Ok::<(), wft_adapter::Error>(())
//! ```
//!
//! # Files
//! [`AdapterModel`] loads and saves PEFT adapter folders (`WAVEFT`,
//! `FOURIERFT`, `LORA`) and a native `WAVELETFT` folder for what PEFT cannot
//! express (deeper levels, other layouts and strategies; locations stored
//! explicitly), and merges them into safetensors checkpoints.
//!
//! # Features
//! * `parallel` (default): batch rows run on rayon's thread pool.
//! * `gpu`: ΔW, merge ([`AdapterModel::merge_gpu`]) and the WaveletFT
//!   gradient on any GPU through `dwt-gpu` (wgpu): [`GpuAdapter`].
//! * `to-lora`: export any adapter to a PEFT LoRA folder by truncated SVD
//!   (`AdapterModel::to_lora`, through `faer`).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod adapter;
mod bank;
mod combine;
mod config;
mod conv;
mod error;
mod folder;
mod fourierft;
#[cfg(feature = "gpu")]
mod gpu;
mod layout;
mod lora;
mod merge;
mod mixed;
mod model;
mod rng;
mod shapes;
mod stream;
mod summary;
mod targets;
mod tensors;
#[cfg(feature = "to-lora")]
mod to_lora;
mod waveletft;

pub use adapter::{AdaptedLinear, Adapter, Coverage, Gradients, InputGrad, MergeRecord, Method};
pub use bank::{AdapterBank, BankReport, SharedShapes};
pub use combine::{CombineMethod, Weighted};
pub use config::{AdapterConfig, MethodConfig, ModulePlan, ModuleShapes, PEFT_VERSION, PeftType};
pub use conv::{AdaptedConv2d, Conv2dGeometry};
#[cfg(feature = "gpu")]
pub use dwt_gpu;
pub use error::{Error, Result};
pub use folder::{CONFIG_FILE, KEY_PREFIX, WEIGHTS_FILE};
pub use fourierft::{FourierFt, FourierFtConfig};
#[cfg(feature = "gpu")]
pub use gpu::{GpuAdapter, Separable, SeparableForm};
pub use layout::{BandInfo, Geometry, Layout};
pub use lora::{Lora, LoraConfig};
pub use merge::MergeReport;
pub use mixed::{Routes, forward_mixed};
pub use model::{AdapterModel, ModuleAdapter};
pub use rng::{Mt19937, RANDPERM_SMALL_LIMIT, randperm_prefix};
pub use shapes::{BaseShapes, ShapeMap, WeightLayout};
pub use stream::copy_and_patch;
pub use summary::{ModuleSummary, Summary};
pub use targets::{ModuleSpec, OneOrMany, Targets, pattern_value, proportional};
pub use tensors::{INDEX_FILE, MAX_JSON_BYTES, RawTensor, TensorFile, write_atomic, write_text_atomic};
#[cfg(feature = "to-lora")]
pub use to_lora::{LoraExport, LoraRank, Truncation, lora_factors};
pub use waveletft::{Init, Strategy, WaveletFt, WaveletFtConfig};

pub use dwt_core;
pub use dwt_core::{Location, Orientation, SeparableBasis, Subband};
pub use ndarray;
pub use safetensors::Dtype;

/// The element types adapters compute in: `f32` and `f64`.
pub trait Element: dwt_core::Real + ndarray::LinalgScalar {}
impl<T: dwt_core::Real + ndarray::LinalgScalar> Element for T {}

/// The README's examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The workspace README's examples run as doc tests too.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct RootReadmeDoctests;
