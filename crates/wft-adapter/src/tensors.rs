//! Safetensors files: validated reading with dtype conversion, and atomic
//! writing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};
use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::{Dtype, SafeTensors, View};

use crate::{Error, Result};

/// A safetensors checkpoint: one file, or the shards a
/// `model.safetensors.index.json` names. Files are memory-mapped
/// (memmap2), never read whole: opening a 70B checkpoint costs its headers.
///
/// Every header is validated when the file is opened: the header length,
/// UTF-8, JSON, duplicate keys, dtypes, shapes against byte lengths, and
/// offsets that tile the data exactly (no gaps, overlaps or bytes out of
/// bounds). An index must name plain file names beside it (no paths), and
/// agree with the shards tensor by tensor.
///
/// A mapped file must not be truncated by another process while it is
/// open (the usual caveat of memory maps: a read of a vanished page is a
/// SIGBUS, not an error).
#[derive(Debug)]
pub struct TensorFile {
    /// The file, or the index of a sharded checkpoint.
    path: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    owner: HashMap<String, usize>,
    /// The index file's text, verbatim (sharded checkpoints only).
    index_text: Option<String>,
}

/// One safetensors file.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) path: PathBuf,
    pub(crate) bytes: Bytes,
    /// 8 + the header's length: where the data starts.
    pub(crate) data_start: usize,
    pub(crate) meta: Metadata,
}

/// A file's bytes: mapped, or owned (from memory, or a file too short to map).
#[derive(Debug)]
pub(crate) enum Bytes {
    Mapped(memmap2::Mmap, File),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m, _) => m,
            Bytes::Owned(v) => v,
        }
    }
}

impl Bytes {
    /// Drop the mapped pages of `range` from this process (they stay in the
    /// page cache and are read back if touched again), so that streaming
    /// through a file larger than memory does not grow the resident set.
    pub(crate) fn release(&self, range: std::ops::Range<usize>) {
        if let Bytes::Mapped(m, _) = self
            && !range.is_empty()
        {
            // SAFETY: the map is read-only and shared, so MADV_DONTNEED only
            // drops page-table entries; later reads fault the same file
            // contents back in. No reference into the range is invalidated.
            // Failure (e.g. an unsupported platform) only costs memory.
            let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, range.start, range.len()) };
        }
    }
}

/// The index file of a sharded checkpoint, as Hugging Face writes it.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The largest JSON file (adapter config, shard index) this crate reads:
/// real ones are kilobytes; anything near this is hostile.
pub const MAX_JSON_BYTES: u64 = 16 << 20;

/// Read a text file of at most [`MAX_JSON_BYTES`] that must be UTF-8.
pub(crate) fn read_text_capped(path: &Path) -> Result<String> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(text_capped(&bytes, path)?.to_string())
}

/// `bytes` as UTF-8 text of at most [`MAX_JSON_BYTES`]; errors name `path`.
pub(crate) fn text_capped<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_JSON_BYTES,
        });
    }
    std::str::from_utf8(bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        reason: format!("not UTF-8: {e}"),
    })
}

/// [`read_text_capped`], refusing duplicate keys.
pub(crate) fn read_json_text(path: &Path) -> Result<String> {
    let text = read_text_capped(path)?;
    check_json_keys(&text, path)?;
    Ok(text)
}

/// Refuse JSON whose objects repeat a key (serde would keep the last one
/// silently). Syntax errors are left to the real parse.
pub(crate) fn check_json_keys(text: &str, path: &Path) -> Result<()> {
    match serde_json::from_str::<NoDuplicates>(text) {
        Err(e) if e.is_data() => {
            let msg = e.to_string();
            let key = msg
                .strip_prefix("duplicate key ")
                .and_then(|k| k.split(" at line").next())
                .unwrap_or(&msg);
            Err(Error::DuplicateKey {
                path: path.to_path_buf(),
                key: key.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Any JSON value; deserializing it fails on the first repeated key.
struct NoDuplicates;

impl<'de> serde::Deserialize<'de> for NoDuplicates {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(NoDuplicates)
    }
}

impl<'de> serde::de::Visitor<'de> for NoDuplicates {
    type Value = NoDuplicates;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_unit<E>(self) -> std::result::Result<Self, E> {
        Ok(NoDuplicates)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Self, A::Error> {
        while seq.next_element::<NoDuplicates>()?.is_some() {}
        Ok(NoDuplicates)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!("duplicate key {key:?}")));
            }
            map.next_value::<NoDuplicates>()?;
        }
        Ok(NoDuplicates)
    }
}

/// A shard name from an index must be a plain file name beside the index:
/// no separators, no `..`, not absolute.
pub(crate) fn check_file_name(name: &str, path: &Path) -> Result<()> {
    let plain = !name.is_empty()
        && !name.contains(['/', '\\', '\0'])
        && name != "."
        && name != ".."
        && matches!(
            Path::new(name).components().collect::<Vec<_>>()[..],
            [std::path::Component::Normal(_)]
        );
    if plain {
        Ok(())
    } else {
        Err(Error::UnsafeName {
            path: path.to_path_buf(),
            name: name.to_string(),
        })
    }
}

impl Shard {
    fn open(path: PathBuf) -> Result<Shard> {
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let bytes = if len < 8 {
            let mut v = Vec::new();
            (&file).read_to_end(&mut v).map_err(|e| Error::io(&path, e))?;
            Bytes::Owned(v)
        } else {
            // SAFETY: a read-only map of a file we opened; see the type's
            // docs for the one caveat (truncation by another process).
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            Bytes::Mapped(map, file)
        };
        Shard::from_bytes(path, bytes)
    }

    fn from_bytes(path: PathBuf, bytes: Bytes) -> Result<Shard> {
        let bad = |reason: String| Error::Safetensors {
            path: path.clone(),
            reason,
        };
        // Duplicate keys first: safetensors' own parse keeps the last one.
        if let Some(n) = bytes.get(..8).map(|b| u64::from_le_bytes(le(b)))
            && let Some(header) = usize::try_from(n).ok().and_then(|n| bytes.get(8..n.checked_add(8)?))
            && let Ok(text) = std::str::from_utf8(header)
        {
            check_json_keys(text, &path)?;
        }
        let (n, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
        Ok(Shard {
            path,
            bytes,
            data_start: 8 + n,
            meta,
        })
    }

    /// The byte range of a tensor in the file.
    pub(crate) fn range(&self, info: &TensorInfo) -> std::ops::Range<usize> {
        // read_metadata checked that the offsets tile the buffer.
        self.data_start + info.data_offsets.0..self.data_start + info.data_offsets.1
    }
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
        let mut data = Vec::with_capacity(values.len() * (dtype.bitsize() / 8));
        if !encode_chunk(dtype, values, &mut data) {
            return Err(Error::invalid("dtype", format!("cannot store floats as {dtype:?}")));
        }
        Ok(RawTensor {
            dtype,
            shape: shape.to_vec(),
            data: Cow::Owned(data),
        })
    }
}

/// Append `values` as `dtype` (F32, F64, F16 or BF16; rounded to nearest)
/// to `out`; `false` for any other dtype.
fn encode_chunk(dtype: Dtype, values: &[f32], out: &mut Vec<u8>) -> bool {
    let start = out.len();
    out.resize(start + values.len() * (dtype.bitsize() / 8), 0);
    encode_to(dtype, values, &mut out[start..])
}

/// `values` as `dtype`'s little-endian bytes into `out` (its exact length);
/// `false` for a dtype floats cannot be stored as.
pub(crate) fn encode_to(dtype: Dtype, values: &[f32], out: &mut [u8]) -> bool {
    // Generic, so each dtype's loop is compiled (and vectorised) on its own.
    fn put<const N: usize>(values: &[f32], out: &mut [u8], f: impl Fn(f32) -> [u8; N]) {
        values
            .iter()
            .zip(out.chunks_exact_mut(N))
            .for_each(|(&v, c)| c.copy_from_slice(&f(v)));
    }
    match dtype {
        Dtype::F32 => put(values, out, f32::to_le_bytes),
        Dtype::F64 => put(values, out, |v| f64::from(v).to_le_bytes()),
        Dtype::F16 => put(values, out, |v| f16::from_f32(v).to_le_bytes()),
        Dtype::BF16 => put(values, out, |v| bf16::from_f32(v).to_le_bytes()),
        _ => return false,
    }
    true
}

/// Write `values` as `dtype` in 64 Ki-element chunks; `Ok(None)` for a
/// dtype floats cannot be stored as.
pub(crate) fn encode_f32(dtype: Dtype, values: &[f32], w: &mut dyn Write) -> std::io::Result<Option<()>> {
    let mut buf = Vec::with_capacity((1 << 16) * (dtype.bitsize() / 8));
    for chunk in values.chunks(1 << 16) {
        buf.clear();
        if !encode_chunk(dtype, chunk, &mut buf) {
            return Ok(None);
        }
        w.write_all(&buf)?;
    }
    Ok(Some(()))
}

impl TensorFile {
    /// Open a checkpoint: a `.safetensors` file, a sharded checkpoint's
    /// `model.safetensors.index.json`, or a folder holding either.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be read, [`Error::Safetensors`] when
    /// one is truncated, corrupt or not safetensors, [`Error::DuplicateKey`],
    /// [`Error::Json`] for a bad index, [`Error::UnsafeName`] for an index
    /// that names files outside its folder, [`Error::TooLarge`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE);
            let single = path.join("model.safetensors");
            return if index.is_file() {
                Self::open_sharded(&index)
            } else if single.is_file() {
                Self::open(single)
            } else {
                Err(Error::invalid(
                    format!("checkpoint folder {}", path.display()),
                    format!("it holds neither {INDEX_FILE} nor model.safetensors"),
                ))
            };
        }
        if path.extension().is_some_and(|e| e == "json") {
            return Self::open_sharded(path);
        }
        Ok(Self::from_shard(Shard::open(path.to_path_buf())?))
    }

    /// Validate safetensors bytes held in memory; `path` names them in errors.
    ///
    /// # Errors
    /// [`Error::Safetensors`] when they are truncated or corrupt,
    /// [`Error::DuplicateKey`] when the header repeats a key.
    pub fn from_bytes(path: PathBuf, bytes: Vec<u8>) -> Result<Self> {
        Ok(Self::from_shard(Shard::from_bytes(path, Bytes::Owned(bytes))?))
    }

    fn from_shard(shard: Shard) -> Self {
        let owner = shard.meta.tensors().into_keys().map(|k| (k, 0)).collect();
        TensorFile {
            path: shard.path.clone(),
            shards: vec![shard],
            owner,
            index_text: None,
        }
    }

    fn open_sharded(index: &Path) -> Result<Self> {
        let text = read_json_text(index)?;
        let json_err = |reason: String| Error::Json {
            path: index.to_path_buf(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| json_err(e.to_string()))?;
        let map = value
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| json_err("no \"weight_map\" object (tensor name → shard file)".into()))?;
        let dir = index.parent().unwrap_or(Path::new("."));
        // Shards in name order, each opened once.
        let mut files: Vec<&str> = Vec::new();
        for (tensor, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| json_err(format!("weight_map[{tensor:?}] is not a file name")))?;
            check_file_name(file, index)?;
            files.push(file);
        }
        files.sort_unstable();
        files.dedup();
        let mut shards = Vec::with_capacity(files.len());
        let mut owner = HashMap::new();
        for (i, file) in files.iter().enumerate() {
            let shard = Shard::open(dir.join(file))?;
            for name in shard.meta.tensors().into_keys() {
                if owner.insert(name.clone(), i).is_some() {
                    return Err(Error::DuplicateKey {
                        path: index.to_path_buf(),
                        key: format!("{name:?} (in two shards)"),
                    });
                }
                if map.get(&name).and_then(serde_json::Value::as_str) != Some(file) {
                    return Err(json_err(format!(
                        "shard {file} holds tensor {name:?}, which weight_map does not assign to it"
                    )));
                }
            }
            shards.push(shard);
        }
        if let Some(name) = map.keys().find(|k| !owner.contains_key(*k)) {
            return Err(json_err(format!(
                "weight_map lists tensor {name:?} in {}, which does not hold it",
                map[name].as_str().unwrap_or_default()
            )));
        }
        Ok(TensorFile {
            path: index.to_path_buf(),
            shards,
            owner,
            index_text: Some(text),
        })
    }

    /// The file, or the index of a sharded checkpoint.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether this is a sharded checkpoint (opened through its index).
    pub fn is_sharded(&self) -> bool {
        self.index_text.is_some()
    }
    /// The safetensors files, in order (one unless sharded).
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }
    /// Size in bytes, all shards together.
    pub fn size(&self) -> usize {
        self.shards.iter().map(|s| s.bytes.len()).sum()
    }
    /// The largest tensor's size in bytes.
    pub fn largest_tensor_bytes(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| {
                s.meta
                    .tensors()
                    .into_values()
                    .map(|i| i.data_offsets.1 - i.data_offsets.0)
            })
            .max()
            .unwrap_or(0)
    }
    /// The header's `__metadata__` (of the first shard, when sharded).
    pub fn metadata(&self) -> Option<&HashMap<String, String>> {
        self.shards.first().and_then(|s| s.meta.metadata().as_ref())
    }
    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.owner.keys().cloned().collect();
        v.sort();
        v
    }
    /// Dtype and shape of a tensor.
    pub fn info(&self, name: &str) -> Option<(Dtype, &[usize])> {
        let shard = &self.shards[*self.owner.get(name)?];
        shard.meta.info(name).map(|i: &TensorInfo| (i.dtype, &i.shape[..]))
    }

    pub(crate) fn shards(&self) -> &[Shard] {
        &self.shards
    }
    pub(crate) fn index_text(&self) -> Option<&str> {
        self.index_text.as_deref()
    }

    /// The shard holding a tensor, and its info.
    fn locate(&self, name: &str, expected: &str) -> Result<(&Shard, &TensorInfo)> {
        let missing = || Error::MissingTensor {
            path: self.path.clone(),
            tensor: name.to_string(),
            expected: expected.to_string(),
        };
        let shard = &self.shards[*self.owner.get(name).ok_or_else(missing)?];
        Ok((shard, shard.meta.info(name).ok_or_else(missing)?))
    }

    /// A tensor's raw bytes.
    ///
    /// # Errors
    /// [`Error::MissingTensor`] when absent (`expected` says what for).
    pub fn raw(&self, name: &str, expected: &str) -> Result<RawTensor<'_>> {
        let (shard, info) = self.locate(name, expected)?;
        Ok(RawTensor {
            dtype: info.dtype,
            shape: info.shape.clone(),
            data: Cow::Borrowed(&shard.bytes[shard.range(info)]),
        })
    }

    /// A float tensor converted to f32 in chunks, each chunk's mapped pages
    /// dropped from the process once converted: reading a tensor costs its
    /// f32 copy, not also its file bytes.
    pub(crate) fn f32_releasing(&self, name: &str) -> Result<Option<Vec<f32>>> {
        const CHUNK: usize = 16 << 20;
        let (shard, info) = self.locate(name, "")?;
        let range = shard.range(info);
        let size = (info.dtype.bitsize() / 8).max(1);
        let mut out = Vec::with_capacity(range.len() / size);
        let mut at = range.start;
        while at < range.end {
            let end = (at + CHUNK / size * size).min(range.end);
            if !decode_into(info.dtype, &shard.bytes[at..end], &mut out) {
                return Ok(None);
            }
            shard.bytes.release(at..end);
            at = end;
        }
        Ok(Some(out))
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
    let mut out = Vec::with_capacity(raw.data.len() / (raw.dtype.bitsize() / 8).max(1));
    decode_into(raw.dtype, &raw.data, &mut out).then_some(out)
}

/// Append float bytes of `dtype` to `out` as f32; `false` for non-float dtypes.
fn decode_into(dtype: Dtype, d: &[u8], out: &mut Vec<f32>) -> bool {
    let start = out.len();
    out.resize(start + d.len() / (dtype.bitsize() / 8).max(1), 0.0);
    let ok = decode_to(dtype, d, &mut out[start..]);
    if !ok {
        out.truncate(start);
    }
    ok
}

/// Float bytes of `dtype` as f32 into `out` (one value per element);
/// `false` for non-float dtypes.
pub(crate) fn decode_to(dtype: Dtype, d: &[u8], out: &mut [f32]) -> bool {
    // Generic, so each dtype's loop is compiled (and vectorised) on its own.
    fn get<const N: usize>(d: &[u8], out: &mut [f32], f: impl Fn([u8; N]) -> f32) {
        out.iter_mut().zip(d.chunks_exact(N)).for_each(|(v, c)| *v = f(le(c)));
    }
    match dtype {
        Dtype::F32 => get(d, out, f32::from_le_bytes),
        Dtype::F64 => get(d, out, |c| f64::from_le_bytes(c) as f32),
        Dtype::F16 => get(d, out, |c| f16::from_le_bytes(c).to_f32()),
        Dtype::BF16 => get(d, out, |c| bf16::from_le_bytes(c).to_f32()),
        _ => return false,
    }
    true
}

/// The folder a file at `path` lives in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// A temporary file beside `path`, named `.wft-*.tmp`, that becomes `path`
/// by a rename. Created with the usual permissions (0666 less the umask on
/// Unix), not the private 0600 of ordinary temporary files, so that what is
/// renamed into place is as readable as any file the user writes.
pub(crate) fn temp_file_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = parent_dir(path);
    temp_builder(0o666).tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

/// A temporary folder beside `path` (0777 less the umask on Unix).
pub(crate) fn temp_dir_beside(path: &Path) -> Result<tempfile::TempDir> {
    let dir = parent_dir(path);
    temp_builder(0o777).tempdir_in(dir).map_err(|e| Error::io(dir, e))
}

fn temp_builder(#[allow(unused_variables)] mode: u32) -> tempfile::Builder<'static, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(".wft-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(mode));
    }
    b
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
    // Serialized here and written to our own temporary: safetensors'
    // `serialize_to_file` renames a temporary of its own (private mode)
    // over the path, and the sync below would then reach the wrong file.
    let bytes = safetensors::serialize(tensors, metadata).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        reason: format!("while writing: {e}"),
    })?;
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(&bytes).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Write a text file atomically (temporary file, sync, rename).
///
/// # Errors
/// [`Error::Io`] when writing fails; `path` is then untouched.
pub fn write_text_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = temp_file_beside(path)?;
    tmp.write_all(text.as_bytes()).map_err(|e| Error::io(tmp.path(), e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
