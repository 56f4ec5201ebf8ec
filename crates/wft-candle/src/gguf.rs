//! GGUF files, checked before candle reads them.
//!
//! candle's reader ([`Content`]) parses metadata and tensor
//! infos, but it keeps them in hash maps (the file's order is lost), and a
//! hostile header can still make it allocate for a tensor that is not there.
//! [`Gguf::open`] first walks the header itself, reading nothing it has not
//! bounded by the file's length:
//!
//! * the magic and version (2 and 3; version 1 is refused);
//! * every metadata value, skipped without allocating (strings and arrays are
//!   checked against the bytes left, arrays nest at most [`MAX_DEPTH`] deep);
//! * every tensor info: 1–4 dimensions, none zero, at most [`MAX_ELEMENTS`]
//!   elements, a known type, whole blocks, an aligned offset, and its data
//!   inside the file;
//!
//! and records the tensors in file order with their byte ranges, and where
//! the metadata lies, so that a merge can copy both byte for byte. Only then
//! does candle parse the header and read tensors.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// The largest tensor accepted, in elements (2⁴⁰).
pub const MAX_ELEMENTS: u64 = 1 << 40;
/// How deep metadata arrays may nest.
pub const MAX_DEPTH: usize = 4;
/// The alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
const MAGIC: u32 = 0x4655_4747; // "GGUF", little-endian

/// GGUF's tensor type ids for the types candle can read.
const TYPES: [(u32, GgmlDType); 15] = [
    (0, GgmlDType::F32),
    (1, GgmlDType::F16),
    (2, GgmlDType::Q4_0),
    (3, GgmlDType::Q4_1),
    (6, GgmlDType::Q5_0),
    (7, GgmlDType::Q5_1),
    (8, GgmlDType::Q8_0),
    (9, GgmlDType::Q8_1),
    (10, GgmlDType::Q2K),
    (11, GgmlDType::Q3K),
    (12, GgmlDType::Q4K),
    (13, GgmlDType::Q5K),
    (14, GgmlDType::Q6K),
    (15, GgmlDType::Q8K),
    (30, GgmlDType::BF16),
];

/// GPT-2's byte alphabet, in which byte-level BPE vocabularies
/// (`tokenizer.ggml.model = gpt2`) spell their tokens: printable bytes stand
/// for themselves, the others for U+0100 onwards, in byte order.
pub fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        map[b as usize] = if printable {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or('\u{FFFD}');
            next += 1;
            c
        };
    }
    map
}

/// GGUF's id for a tensor type.
pub fn type_id(dtype: GgmlDType) -> u32 {
    TYPES.iter().find(|(_, t)| *t == dtype).map_or(0, |(id, _)| *id)
}

fn dtype_of(id: u32) -> Option<GgmlDType> {
    TYPES.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
}

/// Why a GGUF file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a GGUF file.
    #[error("not a GGUF file (magic 0x{0:08x})")]
    Magic(u32),
    /// A GGUF version other than 2 or 3.
    #[error("GGUF version {0} is not supported (only 2 and 3)")]
    Version(u32),
    /// The header runs past the end of the file.
    #[error("the file ends inside its header: {what} needs {need} bytes at offset {at}, the file has {len}")]
    Truncated {
        /// What was being read.
        what: String,
        /// Bytes needed.
        need: u64,
        /// Where.
        at: u64,
        /// The file's length.
        len: u64,
    },
    /// A metadata entry is malformed.
    #[error("metadata `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor info is malformed or its data lies outside the file.
    #[error("tensor `{name}`: {reason}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// candle's reader refused the (already checked) file.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// One tensor of a GGUF file, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Its name (`blk.0.attn_q.weight`).
    pub name: String,
    /// Dimensions as GGUF lists them, innermost first (`ne[0]` = columns).
    pub ne: Vec<u64>,
    /// Its type.
    pub dtype: GgmlDType,
    /// Offset of its data from the start of the data section.
    pub offset: u64,
    /// Bytes of data.
    pub nbytes: u64,
}

impl TensorEntry {
    /// The row-major shape (`[rows, cols]` for a matrix): `ne` reversed.
    pub fn shape(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// Bytes a tensor of `elements` takes in `dtype`, or `None` when the
/// elements do not fill whole blocks.
pub fn tensor_bytes(dtype: GgmlDType, elements: u64) -> Option<u64> {
    let block = dtype.block_size() as u64;
    elements
        .is_multiple_of(block)
        .then(|| elements / block * dtype.type_size() as u64)
}

/// A checked GGUF header: its layout, and candle's parse of it.
#[derive(Debug)]
pub struct Gguf {
    path: PathBuf,
    version: u32,
    /// Byte range of the metadata key/value entries (after the counts).
    metadata: (u64, u64),
    metadata_count: u64,
    alignment: u64,
    data_start: u64,
    len: u64,
    tensors: Vec<TensorEntry>,
    /// Name → place in `tensors`: lookups and the duplicate check stay
    /// linear in a hostile file's millions of tensor infos.
    by_name: HashMap<String, usize>,
    content: Content,
}

impl Gguf {
    /// Check the header of the GGUF file at `path` (nothing past the header
    /// is read), then parse it with candle.
    ///
    /// # Errors
    /// A [`GgufError`] naming what is wrong: I/O, magic, version, a header
    /// that runs past the end, malformed metadata, or a tensor whose info is
    /// absurd or whose data lies outside the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, GgufError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| GgufError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut r = Walker {
            r: BufReader::new(&mut file),
            at: 0,
            len,
            path: &path,
        };
        let magic = r.u32("the magic")?;
        if magic != MAGIC {
            return Err(GgufError::Magic(magic));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensor_count = r.u64("the tensor count")?;
        let metadata_count = r.u64("the metadata count")?;
        let meta_start = r.at;
        let mut alignment = DEFAULT_ALIGNMENT;
        for _ in 0..metadata_count {
            let key = r.string("a metadata key")?;
            let ty = r.u32(&format!("the type of `{key}`"))?;
            if key == "general.alignment" {
                if ty != 4 {
                    return Err(meta_err(&key, "must be a u32"));
                }
                alignment = u64::from(r.u32(&key)?);
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(meta_err(&key, &format!("{alignment} is not a power of two")));
                }
            } else {
                r.skip_value(&key, ty, 0)?;
            }
        }
        let meta_end = r.at;
        // Each tensor info takes at least 24 bytes: refuse a count the file
        // cannot hold before reserving anything for it.
        if tensor_count.saturating_mul(24) > len - r.at {
            return Err(GgufError::Truncated {
                what: format!("{tensor_count} tensor infos"),
                need: tensor_count.saturating_mul(24),
                at: r.at,
                len,
            });
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        let mut by_name = HashMap::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            let name = r.string("a tensor name")?;
            let tensor_err = |reason: String| GgufError::Tensor {
                name: name.clone(),
                reason,
            };
            let n_dims = r.u32(&name)?;
            if !(1..=4).contains(&n_dims) {
                return Err(tensor_err(format!("{n_dims} dimensions (1 to 4 are allowed)")));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            let mut elements = 1u64;
            for _ in 0..n_dims {
                let d = r.u64(&name)?;
                elements = elements
                    .checked_mul(d)
                    .filter(|&e| e <= MAX_ELEMENTS && d > 0)
                    .ok_or_else(|| {
                        tensor_err(format!(
                            "dimension {d} makes it empty or larger than {MAX_ELEMENTS} elements"
                        ))
                    })?;
                ne.push(d);
            }
            let id = r.u32(&name)?;
            let dtype = dtype_of(id).ok_or_else(|| tensor_err(format!("unknown tensor type {id}")))?;
            let nbytes = tensor_bytes(dtype, elements).ok_or_else(|| {
                tensor_err(format!(
                    "{elements} elements do not fill whole {dtype:?} blocks of {}",
                    dtype.block_size()
                ))
            })?;
            let offset = r.u64(&name)?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(tensor_err("appears twice".into()));
            }
            tensors.push(TensorEntry {
                name,
                ne,
                dtype,
                offset,
                nbytes,
            });
        }
        let data_start = r.at.div_ceil(alignment) * alignment;
        for t in &tensors {
            let end = data_start.checked_add(t.offset).and_then(|s| s.checked_add(t.nbytes));
            if !t.offset.is_multiple_of(alignment) {
                return Err(GgufError::Tensor {
                    name: t.name.clone(),
                    reason: format!("offset {} is not a multiple of the alignment {alignment}", t.offset),
                });
            }
            if end.is_none_or(|e| e > len) {
                return Err(GgufError::Tensor {
                    name: t.name.clone(),
                    reason: format!(
                        "its {} bytes at offset {} run past the end of the file ({len} bytes, data from {data_start})",
                        t.nbytes, t.offset
                    ),
                });
            }
        }
        drop(r);
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = Content::read(&mut BufReader::new(&mut file))?;
        Ok(Gguf {
            path,
            version,
            metadata: (meta_start, meta_end),
            metadata_count,
            alignment,
            data_start,
            len,
            tensors,
            by_name,
            content,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.tensors
    }

    /// The tensor `name`.
    pub fn entry(&self, name: &str) -> Option<&TensorEntry> {
        self.by_name.get(name).and_then(|&i| self.tensors.get(i))
    }

    /// The alignment of tensor data.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts.
    pub fn data_start(&self) -> u64 {
        self.data_start
    }

    /// The file's length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The byte range of the metadata entries and how many there are.
    pub fn metadata_range(&self) -> ((u64, u64), u64) {
        (self.metadata, self.metadata_count)
    }

    /// The metadata value `key`.
    pub fn value(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// The metadata string `key`.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is absent or not a string.
    pub fn string(&self, key: &str) -> Result<&str, GgufError> {
        match self.value(key) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(meta_err(key, "is not a string")),
            None => Err(meta_err(key, "is missing")),
        }
    }

    /// The metadata number `key` as `u64` (any unsigned or non-negative
    /// integer type), or `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is not a non-negative integer.
    pub fn uint(&self, key: &str) -> Result<Option<u64>, GgufError> {
        let v = match self.value(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let n = match v {
            Value::U8(x) => Some(u64::from(*x)),
            Value::U16(x) => Some(u64::from(*x)),
            Value::U32(x) => Some(u64::from(*x)),
            Value::U64(x) => Some(*x),
            Value::I8(x) => u64::try_from(*x).ok(),
            Value::I16(x) => u64::try_from(*x).ok(),
            Value::I32(x) => u64::try_from(*x).ok(),
            Value::I64(x) => u64::try_from(*x).ok(),
            _ => None,
        };
        n.map(Some)
            .ok_or_else(|| meta_err(key, "is not a non-negative integer"))
    }

    /// The metadata float `key` (f32 or f64), or `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is not a finite float.
    pub fn float(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::F32(x)) if x.is_finite() => Ok(Some(f64::from(*x))),
            Some(Value::F64(x)) if x.is_finite() => Ok(Some(*x)),
            Some(_) => Err(meta_err(key, "is not a finite float")),
        }
    }

    /// The metadata boolean `key`, or `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is not a boolean.
    pub fn bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(meta_err(key, "is not a boolean")),
        }
    }

    /// The metadata array of strings `key`.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is absent or not an array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        match self.value(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.as_str()),
                    _ => Err(meta_err(key, "holds something other than strings")),
                })
                .collect(),
            Some(_) => Err(meta_err(key, "is not an array")),
            None => Err(meta_err(key, "is missing")),
        }
    }

    /// The metadata array of integers `key`, or `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is not an array of integers.
    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::I32(x) => Ok(i64::from(*x)),
                    Value::U32(x) => Ok(i64::from(*x)),
                    Value::I8(x) => Ok(i64::from(*x)),
                    Value::U8(x) => Ok(i64::from(*x)),
                    _ => Err(meta_err(key, "holds something other than 32-bit integers")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(meta_err(key, "is not an array")),
        }
    }

    /// The metadata array of numbers `key` as `f32` (sentencepiece
    /// scores), or `None` when absent.
    ///
    /// # Errors
    /// [`GgufError::Metadata`] when it is not an array of floats.
    pub fn floats(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    Value::F64(x) => Ok(*x as f32),
                    _ => Err(meta_err(key, "holds something other than floats")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(meta_err(key, "is not an array")),
        }
    }

    /// The tensor `name` as candle reads it, still quantized.
    ///
    /// # Errors
    /// I/O errors, and [`GgufError::Tensor`] when there is no such tensor.
    pub fn qtensor(&self, name: &str) -> Result<QTensor, GgufError> {
        if self.entry(name).is_none() {
            return Err(GgufError::Tensor {
                name: name.into(),
                reason: "is not in the file".into(),
            });
        }
        let mut file = BufReader::new(File::open(&self.path).map_err(|source| GgufError::Io {
            path: self.path.clone(),
            source,
        })?);
        Ok(self.content.tensor(&mut file, name, &Device::Cpu)?)
    }

    /// The tensor `name`, de-quantized to `f32`, in its row-major shape.
    ///
    /// # Errors
    /// As [`Gguf::qtensor`].
    pub fn dequantize(&self, name: &str) -> Result<Tensor, GgufError> {
        Ok(self.qtensor(name)?.dequantize(&Device::Cpu)?)
    }
}

fn meta_err(key: &str, reason: &str) -> GgufError {
    GgufError::Metadata {
        key: key.into(),
        reason: reason.into(),
    }
}

/// A reader that knows how many bytes are left and refuses to read past
/// them.
struct Walker<'p, R> {
    r: R,
    at: u64,
    len: u64,
    path: &'p Path,
}

impl<R: Read + Seek> Walker<'_, R> {
    fn io(&self, source: std::io::Error) -> GgufError {
        GgufError::Io {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn need(&self, what: &str, need: u64) -> Result<(), GgufError> {
        if need > self.len - self.at {
            return Err(GgufError::Truncated {
                what: what.into(),
                need,
                at: self.at,
                len: self.len,
            });
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        self.need(what, N as u64)?;
        let mut b = [0u8; N];
        self.r.read_exact(&mut b).map_err(|e| self.io(e))?;
        self.at += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn skip(&mut self, what: &str, n: u64) -> Result<(), GgufError> {
        self.need(what, n)?;
        let step = i64::try_from(n).map_err(|_| meta_err(what, "a length past i64"))?;
        self.r.seek_relative(step).map_err(|e| self.io(e))?;
        self.at += n;
        Ok(())
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let n = self.u64(what)?;
        // Names and keys are short; anything past 64 KiB is hostile.
        if n > 1 << 16 {
            return Err(GgufError::Metadata {
                key: what.into(),
                reason: format!("a {n}-byte name"),
            });
        }
        self.need(what, n)?;
        let mut b = vec![0u8; n as usize];
        self.r.read_exact(&mut b).map_err(|e| self.io(e))?;
        self.at += n;
        String::from_utf8(b).map_err(|_| GgufError::Metadata {
            key: what.into(),
            reason: "a name that is not UTF-8".into(),
        })
    }

    /// Skip one value of type `ty`, checking every length against the bytes
    /// left.
    fn skip_value(&mut self, key: &str, ty: u32, depth: usize) -> Result<(), GgufError> {
        match ty {
            0 | 1 | 7 => self.skip(key, 1),
            2 | 3 => self.skip(key, 2),
            4..=6 => self.skip(key, 4),
            10..=12 => self.skip(key, 8),
            8 => {
                let n = self.u64(key)?;
                self.skip(key, n)
            }
            9 => {
                if depth >= MAX_DEPTH {
                    return Err(meta_err(key, &format!("arrays nest deeper than {MAX_DEPTH}")));
                }
                let item = self.u32(key)?;
                let n = self.u64(key)?;
                match item {
                    0 | 1 | 7 => self.skip(key, n),
                    2 | 3 => self.skip(key, n.saturating_mul(2)),
                    4..=6 => self.skip(key, n.saturating_mul(4)),
                    10..=12 => self.skip(key, n.saturating_mul(8)),
                    8 | 9 => {
                        // Each item takes at least 8 bytes.
                        self.need(key, n.saturating_mul(8))?;
                        (0..n).try_for_each(|_| self.skip_value(key, item, depth + 1))
                    }
                    _ => Err(meta_err(key, &format!("unknown array item type {item}"))),
                }
            }
            _ => Err(meta_err(key, &format!("unknown value type {ty}"))),
        }
    }
}

/// What [`Gguf::rewrite`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RewriteReport {
    /// Tensors replaced.
    pub replaced: Vec<String>,
    /// Tensors copied byte for byte.
    pub copied: usize,
    /// Bytes written.
    pub bytes: u64,
}

impl Gguf {
    /// Write a copy of this file to `out` in which the tensors `plan` names
    /// are replaced by what `replace` returns for them (of the type the plan
    /// gives, and the tensor's shape), streaming one tensor at a time. The
    /// version, the metadata (byte for byte), the tensor order and every
    /// other tensor's bytes are kept; offsets are repacked at the file's
    /// alignment. The output appears atomically (a temporary file beside it,
    /// synced, then renamed over it); on error it is untouched.
    ///
    /// # Errors
    /// [`GgufError::Tensor`] for a planned tensor that is not in the file or
    /// a replacement of another type or shape, `replace`'s own errors, and
    /// I/O errors.
    pub fn rewrite<E: From<GgufError>>(
        &self,
        out: &Path,
        plan: &HashMap<String, GgmlDType>,
        mut replace: impl FnMut(&TensorEntry, GgmlDType) -> Result<QTensor, E>,
    ) -> Result<RewriteReport, E> {
        use std::io::Write;
        let io = |path: &Path, source| GgufError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(name) = plan.keys().find(|n| self.entry(n).is_none()) {
            return Err(GgufError::Tensor {
                name: name.clone(),
                reason: "is not in the file".into(),
            }
            .into());
        }
        // The new tensor infos: types from the plan, offsets repacked.
        let mut layout = Vec::with_capacity(self.tensors.len());
        let mut offset = 0u64;
        for t in &self.tensors {
            let dtype = plan.get(&t.name).copied().unwrap_or(t.dtype);
            let elements = t.ne.iter().product();
            let nbytes = tensor_bytes(dtype, elements).ok_or_else(|| GgufError::Tensor {
                name: t.name.clone(),
                reason: format!("{elements} elements do not fill whole {dtype:?} blocks"),
            })?;
            layout.push((dtype, offset, nbytes));
            offset = (offset + nbytes).div_ceil(self.alignment) * self.alignment;
        }
        let dir = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut tmp = tempfile::Builder::new()
            .prefix(".wft-gguf-")
            .tempfile_in(dir)
            .map_err(|e| io(dir, e))?;
        let mut src = File::open(&self.path).map_err(|e| io(&self.path, e))?;
        let mut report = RewriteReport::default();
        {
            let mut w = std::io::BufWriter::new(tmp.as_file_mut());
            let put = |w: &mut std::io::BufWriter<&mut File>, bytes: &[u8]| -> Result<(), GgufError> {
                w.write_all(bytes).map_err(|e| io(out, e))
            };
            // The header up to the metadata, and the metadata, verbatim.
            let mut head = vec![0u8; self.metadata.1 as usize];
            src.read_exact(&mut head).map_err(|e| io(&self.path, e))?;
            put(&mut w, &head)?;
            let mut at = head.len() as u64;
            for (t, (dtype, offset, _)) in self.tensors.iter().zip(&layout) {
                let mut info = Vec::new();
                info.extend((t.name.len() as u64).to_le_bytes());
                info.extend(t.name.as_bytes());
                info.extend((t.ne.len() as u32).to_le_bytes());
                for d in &t.ne {
                    info.extend(d.to_le_bytes());
                }
                info.extend(type_id(*dtype).to_le_bytes());
                info.extend(offset.to_le_bytes());
                put(&mut w, &info)?;
                at += info.len() as u64;
            }
            let pad = |w: &mut std::io::BufWriter<&mut File>, at: &mut u64, align: u64| -> Result<(), GgufError> {
                let n = at.div_ceil(align) * align - *at;
                w.write_all(&vec![0u8; n as usize]).map_err(|e| io(out, e))?;
                *at += n;
                Ok(())
            };
            pad(&mut w, &mut at, self.alignment)?;
            let data_start = at;
            for (t, (dtype, offset, nbytes)) in self.tensors.iter().zip(&layout) {
                pad(&mut w, &mut at, self.alignment)?;
                debug_assert_eq!(at, data_start + offset);
                if plan.contains_key(&t.name) {
                    let q = replace(t, *dtype)?;
                    if q.dtype() != *dtype || q.shape().dims() != t.shape().as_slice() {
                        return Err(GgufError::Tensor {
                            name: t.name.clone(),
                            reason: format!(
                                "the replacement is {:?} {:?}, not {dtype:?} {:?}",
                                q.dtype(),
                                q.shape().dims(),
                                t.shape()
                            ),
                        }
                        .into());
                    }
                    let data = q.data().map_err(GgufError::from)?;
                    put(&mut w, &data)?;
                    report.replaced.push(t.name.clone());
                } else {
                    src.seek(SeekFrom::Start(self.data_start + t.offset))
                        .map_err(|e| io(&self.path, e))?;
                    let copied =
                        std::io::copy(&mut (&mut src).take(t.nbytes), &mut w).map_err(|e| io(&self.path, e))?;
                    if copied != t.nbytes {
                        return Err(GgufError::Truncated {
                            what: format!("tensor `{}`", t.name),
                            need: t.nbytes,
                            at: self.data_start + t.offset,
                            len: self.len,
                        }
                        .into());
                    }
                    report.copied += 1;
                }
                at += nbytes;
            }
            w.flush().map_err(|e| io(out, e))?;
            report.bytes = at;
        }
        tmp.as_file().sync_all().map_err(|e| io(out, e))?;
        tmp.persist(out).map_err(|e| io(out, e.error))?;
        Ok(report)
    }
}

impl Gguf {
    /// Write a copy of this file to `out` in which `patch` may rewrite the
    /// bytes of any tensor in place, keeping its type and length: the file
    /// is copied by the kernel ([`wft_adapter::copy_and_patch`]: a reflink
    /// where the filesystem shares extents), then each tensor's bytes in
    /// the copy are offered to `patch` in file order, which returns whether
    /// it changed them. The header and every byte `patch` leaves alone are
    /// the input's. The output appears atomically; on error it is untouched.
    ///
    /// # Errors
    /// `patch`'s own errors, I/O errors, and [`wft_adapter::Error::OutputExists`]
    /// when `out` is this file.
    pub fn patch<E: From<GgufError> + From<wft_adapter::Error>>(
        &self,
        out: &Path,
        mut patch: impl FnMut(&TensorEntry, &mut [u8]) -> Result<bool, E>,
    ) -> Result<RewriteReport, E> {
        let mut report = RewriteReport::default();
        wft_adapter::copy_and_patch(&self.path, out, |bytes: &mut [u8]| -> Result<(), E> {
            if bytes.len() as u64 != self.len {
                return Err(GgufError::Truncated {
                    what: "the copy".into(),
                    need: self.len,
                    at: 0,
                    len: bytes.len() as u64,
                }
                .into());
            }
            for t in &self.tensors {
                // Bounded by `open`: every tensor's data lies inside the file.
                let start = (self.data_start + t.offset) as usize;
                let range = start..start + t.nbytes as usize;
                if patch(t, &mut bytes[range])? {
                    report.replaced.push(t.name.clone());
                } else {
                    report.copied += 1;
                }
            }
            Ok(())
        })?;
        report.bytes = self.len;
        Ok(report)
    }
}
