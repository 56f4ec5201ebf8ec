//! The crate's error type. Every variant that concerns a file names the file,
//! and every variant that concerns a tensor names the tensor and what was
//! expected of it.

use std::path::PathBuf;

/// Everything that can go wrong building, loading, applying or saving an
/// adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A wavelet transform error (unknown wavelet, level too deep, …).
    #[error(transparent)]
    Dwt(#[from] dwt_core::Error),
    /// A GPU error (no adapter, out of device memory, …); feature `gpu`.
    #[cfg(feature = "gpu")]
    #[error(transparent)]
    Gpu(#[from] dwt_gpu::Error),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A safetensors file is truncated, corrupt or not safetensors at all.
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What the parser found.
        reason: String,
    },
    /// A JSON file does not parse or lacks a field.
    #[error("{}: {reason}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// `peft_type` names a method this crate does not implement.
    #[error("{}: unknown peft_type {found:?} (expected WAVEFT, FOURIERFT, LORA or WAVELETFT)", path.display())]
    UnknownPeftType {
        /// The config file.
        path: PathBuf,
        /// The value found.
        found: String,
    },
    /// A config option this crate does not support (e.g. DoRA).
    #[error("{}: unsupported option {option}: {reason}", path.display())]
    Unsupported {
        /// The config file.
        path: PathBuf,
        /// The option.
        option: String,
        /// Why.
        reason: String,
    },
    /// A tensor that must exist is absent.
    #[error("{}: missing tensor {tensor:?} ({expected})", path.display())]
    MissingTensor {
        /// The file searched.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// What it was needed for.
        expected: String,
    },
    /// A tensor has the wrong shape.
    #[error("{}: tensor {tensor:?} has shape {found:?}, expected {expected}", path.display())]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected.
        expected: String,
    },
    /// A tensor has a dtype this operation cannot use.
    #[error("{}: tensor {tensor:?} has dtype {found}, expected {expected}", path.display())]
    DtypeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        tensor: String,
        /// Its dtype.
        found: String,
        /// The accepted dtypes.
        expected: String,
    },
    /// An adapted module has no weight in the base model.
    #[error(
        "{}: the adapter adapts {module:?}, but the base model has no tensor {tensor:?}; \
         is this an adapter for another model? (base tensors look like {example:?})",
        path.display()
    )]
    ModuleNotInBase {
        /// The base model file.
        path: PathBuf,
        /// The adapter's module path.
        module: String,
        /// The tensor looked for.
        tensor: String,
        /// A sample of the base model's tensor names.
        example: Vec<String>,
    },
    /// A module path matches several base tensors.
    #[error("{}: module {module:?} matches several tensors: {candidates:?}", path.display())]
    AmbiguousModule {
        /// The base model file.
        path: PathBuf,
        /// The adapter's module path.
        module: String,
        /// The matching tensors.
        candidates: Vec<String>,
    },
    /// A JSON object (a safetensors header, a shard index, an adapter
    /// config) repeats a key, or a tensor appears in two shards.
    #[error("{}: duplicate key {key}", path.display())]
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The repeated key.
        key: String,
    },
    /// A file name read from a file (a shard in an index) is not a plain
    /// file name: it has separators, `..`, or is absolute.
    #[error("{}: refusing file name {name:?}: only plain file names beside the index are allowed", path.display())]
    UnsafeName {
        /// The file that named it.
        path: PathBuf,
        /// The name.
        name: String,
    },
    /// A file is larger than this crate reads of its kind.
    #[error("{}: larger than the {limit}-byte limit for this kind of file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        limit: u64,
    },
    /// The adapter's parameters were asked for mutably while ΔW is merged
    /// into the weight.
    #[error("the adapter is merged into its weight: unmerge before changing its parameters")]
    Merged,
    /// An adapter larger than a whole [`crate::AdapterBank`]'s budget.
    #[error("adapter {name:?} takes {bytes} bytes, more than the bank's whole budget of {budget} bytes")]
    OverBudget {
        /// The adapter's name in the bank.
        name: String,
        /// Its size ([`crate::AdapterModel::memory_bytes`]).
        bytes: usize,
        /// The bank's budget.
        budget: usize,
    },
    /// Adapters that cannot be combined or swapped for one another: adapter
    /// `adapter` (by position) disagrees with adapter 0.
    #[error("adapter {adapter}{}: {reason}", module.as_ref().map(|m| format!(", module {m:?}")).unwrap_or_default())]
    Incompatible {
        /// The disagreeing adapter's position among the inputs.
        adapter: usize,
        /// The module where they disagree, when it is one module.
        module: Option<String>,
        /// How.
        reason: String,
    },
    /// An output path would overwrite the input it is made from, or a file
    /// that exists.
    #[error("{}: {reason}", path.display())]
    OutputExists {
        /// The output path.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// Values that must be finite are not.
    #[error("{what} contains NaN or infinity (at index {index})")]
    NonFinite {
        /// Which values.
        what: String,
        /// The first offending flat index.
        index: usize,
    },
    /// An invalid argument or configuration value.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: String,
        /// Why.
        reason: String,
    },
    /// Arrays passed to an operation have incompatible shapes.
    #[error("{what}: shape {found:?}, expected {expected:?}")]
    Shape {
        /// The argument.
        what: &'static str,
        /// Its shape.
        found: Vec<usize>,
        /// The shape required.
        expected: Vec<usize>,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Check that an array has `expected` shape.
pub(crate) fn check_shape(what: &'static str, found: &[usize], expected: &[usize]) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(Error::Shape {
            what,
            found: found.to_vec(),
            expected: expected.to_vec(),
        })
    }
}
