//! A decoder's GGUF file: reading it into transformers' layout (names and
//! q/k rows), writing one as llama.cpp lays it out, and merging adapters
//! back into it.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::Config;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::weights::Weights;

/// How a GGUF tensor's rows relate to transformers' rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowOrder {
    /// The same order.
    Same,
    /// llama.cpp's permutation of `q_proj`/`k_proj` over this many heads:
    /// within each head, GGUF row `2i + j` is transformers' row
    /// `j·head_dim/2 + i`.
    Rope(usize),
}

impl RowOrder {
    /// A GGUF tensor (`rows × cols`) in transformers' row order.
    ///
    /// # Errors
    /// [`Error::Shape`] when the rows do not split into heads of even width.
    pub fn to_hf(self, t: &Tensor) -> Result<Tensor> {
        self.permute(t, false)
    }

    /// A tensor in transformers' row order (a weight or a `ΔW`), in GGUF's.
    ///
    /// # Errors
    /// As [`RowOrder::to_hf`].
    pub fn to_gguf(self, t: &Tensor) -> Result<Tensor> {
        self.permute(t, true)
    }

    /// The transformers row that GGUF row `row` (of `rows`) holds, or `None`
    /// when the rows do not split into heads of even width.
    pub fn hf_row(self, row: usize, rows: usize) -> Option<usize> {
        let Some((start, within, hd)) = self.in_head(row, rows) else {
            return (self == RowOrder::Same).then_some(row);
        };
        Some(start + (within % 2) * hd / 2 + within / 2)
    }

    /// The GGUF row that holds transformers row `row` (of `rows`): the
    /// inverse of [`RowOrder::hf_row`], `None` as it.
    pub fn gguf_row(self, row: usize, rows: usize) -> Option<usize> {
        let Some((start, within, hd)) = self.in_head(row, rows) else {
            return (self == RowOrder::Same).then_some(row);
        };
        Some(start + 2 * (within % (hd / 2)) + within / (hd / 2))
    }

    /// For [`RowOrder::Rope`]: the first row of `row`'s head, `row`'s place
    /// in it, and the head's width; `None` for [`RowOrder::Same`] and for
    /// rows that do not split into heads of even width.
    fn in_head(self, row: usize, rows: usize) -> Option<(usize, usize, usize)> {
        let RowOrder::Rope(heads) = self else { return None };
        if heads == 0 || !rows.is_multiple_of(2 * heads) || row >= rows {
            return None;
        }
        let hd = rows / heads;
        Some((row - row % hd, row % hd, hd))
    }

    fn permute(self, t: &Tensor, to_gguf: bool) -> Result<Tensor> {
        let RowOrder::Rope(heads) = self else {
            return Ok(t.clone());
        };
        let (rows, cols) = t.dims2()?;
        if heads == 0 || !rows.is_multiple_of(2 * heads) {
            return Err(Error::Shape {
                what: format!("{rows} rows split into {heads} heads of even width"),
                expected: vec![2 * heads.max(1) * (rows / (2 * heads.max(1))).max(1), cols],
                found: vec![rows, cols],
            });
        }
        let half = rows / heads / 2;
        // GGUF: (head, i, j) with j fastest; transformers: (head, j, i).
        let split = if to_gguf {
            (heads, 2, half, cols)
        } else {
            (heads, half, 2, cols)
        };
        Ok(t.reshape(split)?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
    }
}

/// The decoder's weights from a GGUF file, de-quantized to `f32`, under
/// transformers' names and in its row order.
///
/// # Errors
/// As [`Config::from_gguf`], [`Error::MissingTensor`] for an absent tensor,
/// [`Error::Shape`] when one does not fit the config, and the file's own
/// errors.
pub fn load_gguf(gguf: &Gguf) -> Result<(Config, Weights)> {
    let config = Config::from_gguf(gguf)?;
    let mut tensors = HashMap::new();
    for (hf, g, order) in config.tensor_names() {
        if gguf.entry(&g).is_none() {
            return Err(Error::MissingTensor(g));
        }
        let t = gguf.dequantize(&g)?;
        let t = if t.rank() == 2 { order.to_hf(&t)? } else { t };
        tensors.insert(hf, t);
    }
    Ok((config, Weights::from_tensors(tensors)))
}

/// [`load_gguf`], but the matrices (projections and embeddings) stay in
/// their GGUF quantization: the layers de-quantize them inside each product
/// ([`AdaptedLinear::quantized`](crate::AdaptedLinear::quantized)), so the frozen weights take the file's
/// size in memory instead of four bytes a parameter. The computed values are
/// those of the de-quantized model. q/k rows are un-permuted on the
/// quantized bytes (GGUF quantizes each row on its own).
///
/// # Errors
/// As [`load_gguf`].
pub fn load_gguf_quantized(gguf: &Gguf) -> Result<(Config, Weights)> {
    use candle_core::quantized::{QStorage, QTensor};
    let config = Config::from_gguf(gguf)?;
    let mut weights = Weights::from_tensors(HashMap::new());
    for (hf, g, order) in config.tensor_names() {
        let entry = gguf.entry(&g).ok_or_else(|| Error::MissingTensor(g.clone()))?;
        if entry.ne.len() == 1 {
            weights.insert(hf, gguf.dequantize(&g)?);
            continue;
        }
        let q = gguf.qtensor(&g)?;
        let q = match order {
            RowOrder::Same => q,
            RowOrder::Rope(heads) => {
                let shape = entry.shape();
                let bytes = q.data()?;
                let rows = shape[0];
                let row_bytes = bytes.len() / rows;
                let mut out = vec![0u8; bytes.len()];
                for r in 0..rows {
                    let hf_row = order.hf_row(r, rows).ok_or_else(|| Error::Shape {
                        what: format!("{g}: {rows} rows in {heads} heads"),
                        expected: vec![],
                        found: shape.clone(),
                    })?;
                    out[hf_row * row_bytes..(hf_row + 1) * row_bytes]
                        .copy_from_slice(&bytes[r * row_bytes..(r + 1) * row_bytes]);
                }
                let storage = QStorage::from_data(std::borrow::Cow::Owned(out), &Device::Cpu, entry.dtype)?;
                QTensor::new(storage, shape)?
            }
        };
        weights.insert_quantized(hf, q);
    }
    Ok((config, weights))
}

/// A byte-level BPE vocabulary for [`write_gguf`]: GPT-2's 256 byte
/// tokens, `<|endoftext|>` (BOS, EOS and padding), `<|im_start|>` and
/// `<|im_end|>` (control tokens), then merges of lowercase letter pairs up
/// to `vocab_size` tokens, and a ChatML chat template.
///
/// # Errors
/// [`Error::Config`] when `vocab_size` is under 259 or over 935.
pub fn tiny_vocab(vocab_size: usize) -> Result<Vec<(String, candle_core::quantized::gguf_file::Value)>> {
    use candle_core::quantized::gguf_file::Value;
    if !(259..=259 + 26 * 26).contains(&vocab_size) {
        return Err(Error::Config(format!(
            "a tiny vocabulary has 259 to 935 tokens, not {vocab_size}"
        )));
    }
    let mut tokens: Vec<String> = crate::gguf::byte_alphabet().iter().map(char::to_string).collect();
    let mut types = vec![1i32; 256];
    for special in ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] {
        tokens.push(special.into());
        types.push(3);
    }
    let mut merges = Vec::new();
    'fill: for a in 'a'..='z' {
        for b in 'a'..='z' {
            if tokens.len() == vocab_size {
                break 'fill;
            }
            merges.push(Value::String(format!("{a} {b}")));
            tokens.push(format!("{a}{b}"));
            types.push(1);
        }
    }
    let template = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}\
{{ '<|im_start|>system\nYou are a tiny test model.<|im_end|>\n' }}{% endif %}\
{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}\
{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("smollm".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(256)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(256)),
        ("tokenizer.ggml.padding_token_id".into(), Value::U32(256)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
        ("tokenizer.chat_template".into(), Value::String(template.into())),
    ])
}

/// Write `weights` (transformers' names and rows) as a `llama` GGUF file
/// the way llama.cpp's converter lays it out: GGUF names, `attn_q`/`attn_k`
/// rows permuted ([`RowOrder::to_gguf`]), matrices in `dtype` and norms in
/// `f32`, the config as `llama.*` metadata, and `extra` metadata (a
/// tokenizer: [`tiny_vocab`]) after it. For tests and examples: it holds
/// every tensor in memory.
///
/// # Errors
/// [`Error::MissingTensor`] for an absent weight, candle's quantization
/// errors (a row width `dtype`'s blocks do not divide), and I/O errors.
pub fn write_gguf(
    path: &std::path::Path,
    config: &Config,
    weights: &Weights,
    dtype: candle_core::quantized::GgmlDType,
    extra: Vec<(String, candle_core::quantized::gguf_file::Value)>,
) -> Result<()> {
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    let c = config;
    let u = |v: usize| Value::U32(v as u32);
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("general.name".into(), Value::String("tiny random llama".into())),
        ("llama.block_count".into(), u(c.num_hidden_layers)),
        ("llama.context_length".into(), u(c.max_position_embeddings)),
        ("llama.embedding_length".into(), u(c.hidden_size)),
        ("llama.feed_forward_length".into(), u(c.intermediate_size)),
        ("llama.attention.head_count".into(), u(c.num_attention_heads)),
        ("llama.attention.head_count_kv".into(), u(c.num_key_value_heads)),
        ("llama.rope.freq_base".into(), Value::F32(c.rope_theta as f32)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.rms_norm_eps as f32),
        ),
        ("llama.rope.dimension_count".into(), u(c.head_dim)),
    ];
    meta.extend(extra);
    let mut tensors = Vec::new();
    for (hf, g, order) in config.tensor_names() {
        let t = weights.get(&hf)?;
        let q = if t.rank() == 1 {
            QTensor::quantize(t, GgmlDType::F32)?
        } else {
            QTensor::quantize(&order.to_gguf(t)?, dtype)?
        };
        tensors.push((g, q));
    }
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
    std::io::Write::flush(&mut file).map_err(io)?;
    Ok(())
}

/// The type adapted tensors are written in by [`merge_gguf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeDtype {
    /// `f32`: exact.
    F32,
    /// `f16`.
    F16,
    /// `q8_0`.
    Q8_0,
    /// The tensor's own type in the base (re-quantized).
    Source,
}

impl MergeDtype {
    fn for_tensor(self, source: candle_core::quantized::GgmlDType) -> candle_core::quantized::GgmlDType {
        use candle_core::quantized::GgmlDType;
        match self {
            MergeDtype::F32 => GgmlDType::F32,
            MergeDtype::F16 => GgmlDType::F16,
            MergeDtype::Q8_0 => GgmlDType::Q8_0,
            MergeDtype::Source => source,
        }
    }
}

/// The names and shapes of a GGUF decoder's projections under
/// transformers' names, for loading adapters onto it
/// ([`wft_adapter::AdapterModel::load_for`]).
pub fn base_shapes(path: &std::path::Path, config: &Config) -> wft_adapter::ShapeMap {
    wft_adapter::ShapeMap::new(
        path,
        config
            .linear_shapes()
            .into_iter()
            .map(|(m, (o, i))| (format!("{m}.weight"), vec![o, i])),
    )
}

/// Merge `adapters` (transformers' module names and rows) into the GGUF
/// decoder `gguf`, writing `out`. The metadata and every other tensor are
/// the input's bytes; the adapted tensors get `W += ΔW` with the adapters'
/// own arithmetic ([`wft_adapter::Adapter::merge_into`], as the safetensors
/// merge), in transformers' row order ([`RowOrder`]), and are written in
/// `dtype`.
///
/// When every adapted tensor keeps its type (`dtype` is
/// [`MergeDtype::Source`], or the tensor's own type), the merge is a copy
/// and a patch ([`Gguf::patch`]): the file is copied by the kernel and only
/// the blocks holding an element the adapter writes are decoded, merged and
/// re-encoded in place (elements for f32/f16/bf16, 32- or 256-element
/// blocks for quantized types). For WaveletFT that is `O(n · support²)`
/// per tensor, not the model. Blocks the adapter does not reach keep their
/// bytes. Otherwise each adapted tensor is de-quantized whole, merged and
/// quantized to `dtype`, streaming one tensor at a time ([`Gguf::rewrite`]).
/// A touched block has the same bytes either way. Both write atomically.
///
/// # Errors
/// As [`Config::from_gguf`]; [`Error::Config`] for an adapted module this
/// decoder does not have; [`Error::Shape`] for an adapter of the wrong
/// shape; the adapters', candle's and the file's errors.
pub fn merge_gguf(
    gguf: &Gguf,
    adapters: &wft_adapter::AdapterModel,
    out: &std::path::Path,
    dtype: MergeDtype,
) -> Result<crate::gguf::RewriteReport> {
    merge_gguf_with(gguf, adapters, out, dtype, Writer::Patch)
}

/// [`merge_gguf`] written tensor by tensor whatever the types: every
/// adapted tensor is de-quantized whole, merged and quantized to `dtype`
/// (so untouched blocks of a [`MergeDtype::Source`] merge are re-quantized
/// too). Memory stays at about one tensor.
///
/// # Errors
/// As [`merge_gguf`].
pub fn merge_gguf_streaming(
    gguf: &Gguf,
    adapters: &wft_adapter::AdapterModel,
    out: &std::path::Path,
    dtype: MergeDtype,
) -> Result<crate::gguf::RewriteReport> {
    merge_gguf_with(gguf, adapters, out, dtype, Writer::Stream)
}

/// How [`merge_gguf_with`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// Copy and patch where every adapted tensor keeps its type.
    Patch,
    /// Tensor by tensor.
    Stream,
}

fn merge_gguf_with(
    gguf: &Gguf,
    adapters: &wft_adapter::AdapterModel,
    out: &std::path::Path,
    dtype: MergeDtype,
    writer: Writer,
) -> Result<crate::gguf::RewriteReport> {
    use candle_core::quantized::QTensor;
    let config = Config::from_gguf(gguf)?;
    let mut targets = HashMap::new();
    let mut plan = HashMap::new();
    let mut keeps_types = true;
    for (module, adapter) in adapters.modules() {
        let (name, order) = config
            .gguf_tensor(module)
            .filter(|(name, _)| name.starts_with("blk."))
            .ok_or_else(|| {
                Error::Config(format!(
                    "the adapter adapts `{module}`, which this decoder does not have"
                ))
            })?;
        let entry = gguf.entry(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        let (o, i) = adapter.as_adapter().shape();
        if entry.shape() != [o, i] {
            return Err(Error::Shape {
                what: format!("GGUF tensor `{name}` for the adapter of `{module}`"),
                expected: vec![o, i],
                found: entry.shape(),
            });
        }
        let to = dtype.for_tensor(entry.dtype);
        keeps_types &= to == entry.dtype;
        plan.insert(name.clone(), to);
        targets.insert(name, (adapter.as_adapter(), order));
    }
    if writer == Writer::Patch && keeps_types {
        return gguf.patch(out, |entry, bytes| -> Result<bool> {
            let Some(&(adapter, order)) = targets.get(&entry.name) else {
                return Ok(false);
            };
            patch_blocks(adapter, entry, order, bytes)?;
            Ok(true)
        });
    }
    gguf.rewrite(out, &plan, |entry, to| -> Result<QTensor> {
        let (adapter, order) = targets[&entry.name];
        let w = order.to_hf(&gguf.dequantize(&entry.name)?)?;
        let (rows, cols) = w.dims2()?;
        let mut values = w.flatten_all()?.to_vec1::<f32>()?;
        merge_rows(adapter, rows, cols, &mut values)?;
        let merged = order.to_gguf(&Tensor::from_vec(values, (rows, cols), &Device::Cpu)?)?;
        Ok(QTensor::quantize(&merged, to)?)
    })
}

/// `W += ΔW` on a `rows × cols` weight in transformers' layout.
fn merge_rows(adapter: &dyn wft_adapter::Adapter<f32>, rows: usize, cols: usize, values: &mut [f32]) -> Result<()> {
    let len = values.len();
    let w = wft_adapter::ndarray::ArrayViewMut2::from_shape((rows, cols), values).map_err(|e| Error::Shape {
        what: format!("a weight of {len} values ({e})"),
        expected: vec![rows, cols],
        found: vec![len],
    })?;
    Ok(adapter.merge_into(w, 1.0, wft_adapter::Orientation::Normal)?)
}

/// A run of whole blocks of one row: where it lies in transformers' flat
/// layout and in the tensor's bytes.
struct Span {
    element: usize,
    elements: usize,
    byte: usize,
    bytes: usize,
}

/// `W += ΔW` on a GGUF tensor's bytes in place, rewriting only the blocks
/// that hold an element the adapter writes: those are gathered, decoded
/// into a zeroed `rows × cols` scratch (in transformers' row order), merged
/// there, re-encoded together and put back.
fn patch_blocks(
    adapter: &dyn wft_adapter::Adapter<f32>,
    entry: &crate::gguf::TensorEntry,
    order: RowOrder,
    bytes: &mut [u8],
) -> Result<()> {
    use candle_core::quantized::{QTensor, ggml_file::qtensor_from_ggml};
    let shape = entry.shape();
    let &[rows, cols] = shape.as_slice() else {
        return Err(Error::Shape {
            what: format!("GGUF tensor `{}` (a matrix)", entry.name),
            expected: vec![0, 0],
            found: shape,
        });
    };
    let (block, size) = (entry.dtype.block_size(), entry.dtype.type_size());
    if !cols.is_multiple_of(block) {
        return Err(Error::Config(format!(
            "GGUF tensor `{}`: rows of {cols} do not split into {:?} blocks of {block}",
            entry.name, entry.dtype
        )));
    }
    let per_row = cols / block;
    // Touched blocks as (transformers row, first block, end block).
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    let coverage = adapter.for_each_touched_run(wft_adapter::Orientation::Normal, &mut |start, n| {
        let (mut at, end) = (start, start + n);
        while at < end {
            let (r, c) = (at / cols, at % cols);
            let stop = end.min((r + 1) * cols);
            runs.push((r, c / block, (stop - r * cols).div_ceil(block)));
            at = stop;
        }
    });
    if coverage == wft_adapter::Coverage::Everything {
        runs = (0..rows).map(|r| (r, 0, per_row)).collect();
    }
    runs.sort_unstable();
    let mut spans: Vec<Span> = Vec::with_capacity(runs.len());
    let mut last: Option<(usize, usize, usize)> = None;
    let push = |(r, b0, b1): (usize, usize, usize), spans: &mut Vec<Span>| -> Result<()> {
        let g = order.gguf_row(r, rows).ok_or_else(|| {
            Error::Config(format!(
                "GGUF tensor `{}`: row {r} of {rows} has no place in its row order",
                entry.name
            ))
        })?;
        spans.push(Span {
            element: r * cols + b0 * block,
            elements: (b1 - b0) * block,
            byte: (g * per_row + b0) * size,
            bytes: (b1 - b0) * size,
        });
        Ok(())
    };
    for run in runs {
        last = match last {
            Some((r, b0, b1)) if r == run.0 && run.1 <= b1 => Some((r, b0, b1.max(run.2))),
            Some(done) => {
                push(done, &mut spans)?;
                Some(run)
            }
            None => Some(run),
        };
    }
    if let Some(done) = last {
        push(done, &mut spans)?;
    }
    let total: usize = spans.iter().map(|s| s.elements).sum();
    if total == 0 {
        return Ok(());
    }
    if spans.iter().any(|s| s.byte + s.bytes > bytes.len()) {
        return Err(Error::Config(format!(
            "GGUF tensor `{}`: its blocks do not fit its {} bytes",
            entry.name,
            bytes.len()
        )));
    }
    let mut raw = Vec::with_capacity(total / block * size);
    for s in &spans {
        raw.extend_from_slice(&bytes[s.byte..s.byte + s.bytes]);
    }
    let cpu = Device::Cpu;
    let mut values = qtensor_from_ggml(entry.dtype, &raw, vec![total], &cpu)?
        .dequantize(&cpu)?
        .to_vec1::<f32>()?;
    // Zeroed by the allocator (pages mapped on first touch): memory and
    // time follow the touched blocks.
    let mut scratch = vec![0f32; rows * cols];
    let mut at = 0;
    for s in &spans {
        scratch[s.element..s.element + s.elements].copy_from_slice(&values[at..at + s.elements]);
        at += s.elements;
    }
    merge_rows(adapter, rows, cols, &mut scratch)?;
    at = 0;
    for s in &spans {
        values[at..at + s.elements].copy_from_slice(&scratch[s.element..s.element + s.elements]);
        at += s.elements;
    }
    let encoded = QTensor::quantize(&Tensor::from_vec(values, total, &cpu)?, entry.dtype)?;
    let data = encoded.data()?;
    at = 0;
    for s in &spans {
        bytes[s.byte..s.byte + s.bytes].copy_from_slice(&data[at..at + s.bytes]);
        at += s.bytes;
    }
    Ok(())
}
