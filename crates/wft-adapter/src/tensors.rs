//! Safetensors files: validated reading with dtype conversion, and atomic
//! writing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors, View};

use crate::{Error, Result};

/// A safetensors file read into memory, its header validated.
#[derive(Debug)]
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    meta: Metadata,
}

/// A tensor's dtype, shape and raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Shape.
    pub shape: Vec<usize>,
    /// Little-endian bytes.
    pub data: Cow<'a, [u8]>,
}

impl View for &RawTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

impl RawTensor<'static> {
    /// An f32 tensor.
    pub fn from_f32(shape: &[usize], values: &[f32]) -> Self {
        RawTensor {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }
    /// An i64 tensor.
    pub fn from_i64(shape: &[usize], values: &[i64]) -> Self {
        RawTensor {
            dtype: Dtype::I64,
            shape: shape.to_vec(),
            data: Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
        }
    }
    /// `values` stored as `dtype` (F32, F64, F16 or BF16; rounded to nearest).
    ///
    /// # Errors
    /// [`Error::Invalid`] for any other dtype.
    pub fn from_f32_as(dtype: Dtype, shape: &[usize], values: &[f32]) -> Result<Self> {
        let data: Vec<u8> = match dtype {
            Dtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Dtype::F64 => values.iter().flat_map(|&v| f64::from(v).to_le_bytes()).collect(),
            Dtype::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            Dtype::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            other => return Err(Error::invalid("dtype", format!("cannot store floats as {other:?}"))),
        };
        Ok(RawTensor {
            dtype,
            shape: shape.to_vec(),
            data: Cow::Owned(data),
        })
    }
}

impl TensorFile {
    /// Read and validate a safetensors file.
    ///
    /// # Errors
    /// [`Error::Io`] when it cannot be read, [`Error::Safetensors`] when it
    /// is truncated, corrupt or not safetensors.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_bytes(path, bytes)
    }

    /// Validate safetensors bytes; `path` names them in errors.
    ///
    /// # Errors
    /// [`Error::Safetensors`] when they are truncated or corrupt.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Safetensors {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(TensorFile {
            path,
            bytes,
            data_start: 8 + n,
            meta,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Size in bytes.
    pub fn size(&self) -> usize {
        self.bytes.len()
    }
    /// The header's `__metadata__`.
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.meta.metadata().as_ref()
    }
    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.meta.tensors().into_keys().collect();
        v.sort();
        v
    }
    /// Dtype and shape of a tensor.
    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        self.meta.info(name).map(|i: &TensorInfo| (i.dtype, &i.shape[..]))
    }

    /// A tensor's raw bytes.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when absent (`expected` says what for).
    pub fn raw(&self, name: &str, expected: &str) -> Result<RawTensor<'_>> {
        let info = self.meta.info(name).ok_or_else(|| Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            expected: expected.to_string(),
        })?;
        let (a, b) = info.data_offsets;
        // read_metadata checked that the offsets tile the buffer.
        let data = &self.bytes[self.data_start + a..self.data_start + b];
        Ok(RawTensor {
            dtype: info.dtype,
            shape: info.shape.clone(),
            data: Cow::Borrowed(data),
        })
    }

    /// A floating-point tensor as f32 (from F32, F64, F16 or BF16).
    ///
    /// # Errors
    /// [`Error::MissingTensor`], or [`Error::DtypeMismatch`] for other dtypes.
    pub fn f32(&self, name: &str, expected: &str) -> Result<ArrayD<f32>> {
        let raw = self.raw(name, expected)?;
        let values = to_f32(&raw).ok_or_else(|| Error::DtypeMismatch {
            path: self.path.clone(),
            tensor: name.to_string(),
            found: format!("{:?}", raw.dtype),
            expected: "F32, F64, F16 or BF16".into(),
        })?;
        ArrayD::from_shape_vec(IxDyn(&raw.shape), values).map_err(|e| Error::Safetensors {
            path: self.path.clone(),
            reason: format!("tensor {name:?}: {e}"),
        })
    }

    /// An integer tensor as i64 (from I64, I32, U32 or U8).
    ///
    /// # Errors
    /// [`Error::MissingTensor`], or [`Error::DtypeMismatch`] for other dtypes.
    pub fn i64(&self, name: &str, expected: &str) -> Result<ArrayD<i64>> {
        let raw = self.raw(name, expected)?;
        let d = &raw.data;
        let values: Vec<i64> = match raw.dtype {
            Dtype::I64 => d.chunks_exact(8).map(|c| i64::from_le_bytes(le(c))).collect(),
            Dtype::I32 => d
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes(le(c))))
                .collect(),
            Dtype::U32 => d
                .chunks_exact(4)
                .map(|c| i64::from(u32::from_le_bytes(le(c))))
                .collect(),
            Dtype::U8 => d.iter().map(|&b| i64::from(b)).collect(),
            other => {
                return Err(Error::DtypeMismatch {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    found: format!("{other:?}"),
                    expected: "I64, I32, U32 or U8".into(),
                });
            }
        };
        ArrayD::from_shape_vec(IxDyn(&raw.shape), values).map_err(|e| Error::Safetensors {
            path: self.path.clone(),
            reason: format!("tensor {name:?}: {e}"),
        })
    }
}

fn le<const N: usize>(c: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(c);
    a
}

/// Decode float bytes to f32; `None` for non-float dtypes.
pub(crate) fn to_f32(raw: &RawTensor<'_>) -> Option<Vec<f32>> {
    let d = &raw.data;
    Some(match raw.dtype {
        Dtype::F32 => d.chunks_exact(4).map(|c| f32::from_le_bytes(le(c))).collect(),
        Dtype::F64 => d.chunks_exact(8).map(|c| f64::from_le_bytes(le(c)) as f32).collect(),
        Dtype::F16 => d.chunks_exact(2).map(|c| f16::from_le_bytes(le(c)).to_f32()).collect(),
        Dtype::BF16 => d.chunks_exact(2).map(|c| bf16::from_le_bytes(le(c)).to_f32()).collect(),
        _ => return None,
    })
}

/// Write tensors to `path` atomically: a temporary file in the same folder,
/// synced, then renamed over `path`. A crash leaves either the old file or
/// the new one, never half of one.
///
/// # Errors
/// [`Error::Io`] or [`Error::Safetensors`] when writing fails; `path` is
/// then untouched.
pub fn write_atomic<'a>(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, &'a RawTensor<'a>)>,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".wft-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    safetensors::serialize_to_file(tensors, metadata, tmp.path()).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("while writing: {e}"),
    })?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Write a text file atomically (temporary file, sync, rename).
///
/// # Errors
/// [`Error::Io`] when writing fails; `path` is then untouched.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".wft-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
