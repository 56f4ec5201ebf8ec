//! The error type.

/// What can go wrong building, running or saving an adapted model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A candle operation failed (shapes, dtypes, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The adapter library refused (unknown wavelet, bad file, wrong shape…).
    #[error(transparent)]
    Adapter(#[from] wft_adapter::Error),
    /// A weight the model needs is not in the checkpoint.
    #[error("the checkpoint has no tensor `{0}`")]
    MissingTensor(String),
    /// A tensor or adapter has the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// What was checked.
        what: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape found.
        found: Vec<usize>,
    },
    /// A GGUF file was refused.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A model file of an architecture this crate does not implement.
    #[error("architecture `{0}` is not supported (this decoder reads `llama` GGUF files)")]
    Architecture(String),
    /// A model config (`config.json`) is unusable.
    #[error("model config: {0}")]
    Config(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A shape check: `Ok` when `found == expected`.
pub(crate) fn check_shape(what: &str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            what: what.to_string(),
            expected: expected.to_vec(),
            found: found.to_vec(),
        })
    }
}
