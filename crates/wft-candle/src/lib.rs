//! WaveletFT, FourierFT and LoRA layers for [candle](https://github.com/huggingface/candle),
//! and a BERT encoder to put them in.
//!
//! An adapted [`AdaptedLinear`] keeps its frozen weight `W` and trains only the
//! adapter's parameters `c`, a candle [`Var`](candle_core::Var). Gradients
//! are exact and flow through candle's autodiff; the expensive parts run in
//! `wft-adapter`:
//!
//! * the forward pass is one matmul with the merged weight `W + ΔW(c)`,
//!   rebuilt in place (sparse wavelet atoms for WaveletFT) only after the
//!   optimizer changed `c`;
//! * `∂L/∂c` comes from the adapter's factored backward, never from a
//!   dense `gᵀx`; `∂L/∂x` is one matmul, as for a frozen layer.
//!
//! So a training step costs about what the frozen model's forward and
//! backward cost.
//!
//! ```
//! use candle_core::{Device, Module, Tensor};
//! use candle_nn::{AdamW, Optimizer, ParamsAdamW};
//! use wft_adapter::{Adapter, WaveletFt, WaveletFtConfig};
//! use wft_candle::AdaptedLinear;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A frozen 24×16 layer, adapted with 40 db1 coefficients (PEFT's layout).
//! let w = Tensor::randn(0f32, 0.1, (24, 16), &Device::Cpu)?;
//! let config = WaveletFtConfig { n_frequency: 40, scaling: 1.0, ..Default::default() };
//! let adapter = WaveletFt::new(&config, (24, 16))?;
//! let layer = AdaptedLinear::adapted(w, None, adapter)?;
//!
//! // Fit a target output: only the 40 coefficients train.
//! let x = Tensor::randn(0f32, 1.0, (32, 16), &Device::Cpu)?;
//! let target = Tensor::randn(0f32, 1.0, (32, 24), &Device::Cpu)?;
//! let mut opt = AdamW::new(layer.vars(), ParamsAdamW { lr: 0.01, weight_decay: 0.0, ..Default::default() })?;
//! let loss = |l: &AdaptedLinear| -> candle_core::Result<f32> { (l.forward(&x)? - &target)?.sqr()?.mean_all()?.to_scalar() };
//! let before = loss(&layer)?;
//! for _ in 0..20 {
//!     let l = (layer.forward(&x)? - &target)?.sqr()?.mean_all()?;
//!     opt.backward_step(&l)?;
//! }
//! assert!(loss(&layer)? < before);
//! // The trained adapter, ready for wft-adapter's PEFT-compatible files.
//! let trained = layer.adapter()?.expect("adapted");
//! assert_eq!(trained.as_adapter().num_params(), 40);
//! # Ok(()) }
//! ```
//!
//! Models live in [`models`], each built from a [`VarPath`] (candle's
//! `VarBuilder` idiom, over a [`VarStore`]) with one table of its
//! linear paths. [`models::bert`] has the encoder (frozen, fully trainable, or adapted where an
//! [`AdapterModel`](wft_adapter::AdapterModel) says) and [`Classifier`] a
//! sequence classifier on it, whose adapters save to PEFT-compatible
//! folders and merge into the checkpoint with `wft-adapter`.
//!
//! Everything runs on candle's CPU device in `f32`, where `wft-adapter`
//! computes.

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classifier;
mod error;
pub mod gguf;
mod linear;
mod matmul;
pub mod models;
mod quantized;
mod weights;

pub use classifier::{Classifier, HEAD_BIAS, HEAD_WEIGHT, Head, ImageClassifier, Pooling};
pub use error::{Error, Result};
pub use linear::{AdaptedLinear, Bias};
pub use models::{Adaptable, AdapterMix};
pub use weights::{Tuning, VarPath, VarStore, Weights};

pub use candle_core;
pub use candle_nn;
pub use wft_adapter;

/// The README's examples run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
