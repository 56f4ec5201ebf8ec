//! The Llama decoder on a tiny random model written as a GGUF file the way
//! llama.cpp lays one out: the loader restores transformers' names and q/k
//! row order, the KV cache and padding masks change nothing, gradients
//! match central differences, and hostile GGUF files are typed errors.

use std::path::Path;

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor, Var};
use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, TensorFile, WaveletFtConfig};
use wft_candle::Adaptable;
use wft_candle::gguf::{Gguf, GgufError};
use wft_candle::models::llama::{self, Cache, Config, Llama, RowOrder, masked_cross_entropy};
use wft_candle::{Error, Tuning, Weights};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn tiny() -> R<(Config, Weights)> {
    let config = Config::tiny(300);
    let weights = config.random_weights(5)?;
    Ok((config, weights))
}

fn write(dir: &Path, dtype: GgmlDType) -> R<(Config, Weights, std::path::PathBuf)> {
    let (config, weights) = tiny()?;
    let path = dir.join("tiny.gguf");
    llama::write_gguf(&path, &config, &weights, dtype, llama::tiny_vocab(config.vocab_size)?)?;
    Ok((config, weights, path))
}

/// The tiny model as a Q8_0 GGUF file in `dir`, loaded de-quantized and
/// kept quantized: (config, dense, quantized).
fn q8_dense_and_quantized(dir: &Path) -> R<(Config, Weights, Weights)> {
    let (config, _, path) = write(dir, GgmlDType::Q8_0)?;
    let gguf = Gguf::open(&path)?;
    let (_, dense) = llama::load_gguf(&gguf)?;
    let (_, quantized) = llama::load_gguf_quantized(&gguf)?;
    Ok((config, dense, quantized))
}

fn max_diff(a: &Tensor, b: &Tensor) -> R<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn gguf_loading_restores_transformers_names_and_rows() -> R {
    let dir = tempfile::tempdir()?;
    let (config, weights, path) = write(dir.path(), GgmlDType::F32)?;
    let gguf = Gguf::open(&path)?;
    let (read_config, read) = llama::load_gguf(&gguf)?;
    // GGUF stores the epsilon as f32, and transformers reads it so too.
    let stored = Config {
        rms_norm_eps: f64::from(config.rms_norm_eps as f32),
        ..config.clone()
    };
    assert_eq!(read_config, stored);
    assert_eq!(read.tensors().len(), weights.tensors().len());
    for (name, t) in weights.tensors() {
        assert_eq!(max_diff(t, read.get(name)?)?, 0.0, "{name}");
    }
    // In the file, q's rows follow REFERENCE.md's permutation:
    // hf = gguf.reshape(n, d/n/2, 2, in).swapaxes(1, 2).reshape(d, in),
    // that is GGUF row h·hd + 2i + j holds transformers' row h·hd + j·hd/2 + i.
    let hd = config.head_dim;
    for (g, hf, heads) in [
        (
            "blk.1.attn_q.weight",
            "model.layers.1.self_attn.q_proj.weight",
            config.num_attention_heads,
        ),
        (
            "blk.0.attn_k.weight",
            "model.layers.0.self_attn.k_proj.weight",
            config.num_key_value_heads,
        ),
    ] {
        let file = gguf.dequantize(g)?.to_vec2::<f32>()?;
        let ours = weights.get(hf)?.to_vec2::<f32>()?;
        assert_eq!(file.len(), heads * hd);
        for h in 0..heads {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    assert_eq!(file[h * hd + 2 * i + j], ours[h * hd + j * hd / 2 + i], "{g} head {h}");
                }
            }
        }
        assert_ne!(file, ours, "{g}: the permutation is not the identity");
    }
    // Every other tensor keeps its rows.
    let v = gguf.dequantize("blk.0.attn_v.weight")?;
    assert_eq!(
        max_diff(&v, weights.get("model.layers.0.self_attn.v_proj.weight")?)?,
        0.0
    );
    // to_gguf undoes to_hf.
    let t = weights.get("model.layers.0.self_attn.q_proj.weight")?;
    let order = RowOrder::Rope(config.num_attention_heads);
    assert_eq!(max_diff(&order.to_hf(&order.to_gguf(t)?)?, t)?, 0.0);
    Ok(())
}

#[test]
fn quantized_files_load_within_quantization_error() -> R {
    let dir = tempfile::tempdir()?;
    let (_, weights, path) = write(dir.path(), GgmlDType::Q8_0)?;
    let gguf = Gguf::open(&path)?;
    assert_eq!(
        gguf.entry("blk.0.ffn_down.weight").map(|e| e.dtype),
        Some(GgmlDType::Q8_0)
    );
    let (_, read) = llama::load_gguf(&gguf)?;
    for (name, t) in weights.tensors() {
        let scale = t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        // Q8_0: 8-bit steps of a block's absolute maximum / 127.
        assert!(max_diff(t, read.get(name)?)? <= scale / 127.0, "{name}");
    }
    Ok(())
}

fn ids(rows: &[&[u32]]) -> R<Tensor> {
    let len = rows[0].len();
    Ok(Tensor::from_vec(rows.concat(), (rows.len(), len), &Device::Cpu)?)
}

#[test]
fn kv_cache_and_padding_change_nothing() -> R {
    let (config, weights) = tiny()?;
    let model = Llama::new(&config, &weights, Tuning::Frozen)?;
    let seq = [3u32, 70, 71, 280, 5, 9, 260, 100];
    let full = model.forward(&ids(&[&seq])?, &mut Cache::new(), None)?;
    // The same positions fed 3 + 1 + 4 at a time through the cache.
    let mut cache = Cache::new();
    let mut parts = Vec::new();
    for (a, b) in [(0, 3), (3, 4), (4, 8)] {
        parts.push(model.forward(&ids(&[&seq[a..b]])?, &mut cache, None)?);
    }
    assert_eq!(cache.len(), 8);
    let stepped = Tensor::cat(&parts, 1)?;
    assert!(max_diff(&full, &stepped)? < 1e-5);
    // A right-padded batch: the real positions of each row equal its run alone.
    let short = [12u32, 13, 14, 15, 16];
    let padded = [12u32, 13, 14, 15, 16, 256, 256, 256];
    let mask = Tensor::from_vec(
        [[1f32; 8], [1., 1., 1., 1., 1., 0., 0., 0.]].concat(),
        (2, 8),
        &Device::Cpu,
    )?;
    let batch = model.forward(&ids(&[&seq, &padded])?, &mut Cache::new(), Some(&mask))?;
    let alone = model.forward(&ids(&[&short])?, &mut Cache::new(), None)?;
    assert!(max_diff(&batch.get(0)?, &full.get(0)?)? < 1e-5);
    assert!(max_diff(&batch.get(1)?.narrow(0, 0, 5)?, &alone.get(0)?)? < 1e-5);
    // Past the context: a typed error.
    let long = vec![1u32; config.max_position_embeddings + 1];
    assert!(matches!(
        model.forward(&ids(&[&long])?, &mut Cache::new(), None),
        Err(Error::Config(_))
    ));
    // An id outside the vocabulary: a typed error.
    assert!(matches!(
        model.forward(&ids(&[&[300]])?, &mut Cache::new(), None),
        Err(Error::Config(_))
    ));
    Ok(())
}

fn adapters(weights: &Weights, dir: &Path) -> R<AdapterModel> {
    let method = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 40,
        scaling: 5.0,
        ..Default::default()
    });
    adapted(weights, dir, method, 3)
}

/// A LoRA (r = 2) on the same modules as [`adapters`]: it writes every
/// element of its weights.
fn lora_adapters(weights: &Weights, dir: &Path) -> R<AdapterModel> {
    let method = MethodConfig::Lora(wft_adapter::LoraConfig {
        r: 2,
        lora_alpha: 4.0,
        ..Default::default()
    });
    adapted(weights, dir, method, 4)
}

/// `method` on q, v and down of every layer, its parameters randomized
/// with `values_seed`.
fn adapted(weights: &Weights, dir: &Path, method: MethodConfig, values_seed: u64) -> R<AdapterModel> {
    let path = dir.join("base.safetensors");
    weights.save(&path)?;
    let base = TensorFile::open(&path)?;
    let targets = ModuleSpec::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
    let mut model = AdapterModel::new_for_base(AdapterConfig::new(method, targets), &base, 1)?;
    randomize(&mut model, values_seed);
    Ok(model)
}

/// The copy-and-patch GGUF merge against the streaming one, on every type
/// kept (`--dtype source`), WaveletFT (sparse atoms, through the q/k row
/// permutation) and LoRA (every element): every block holding an element
/// the adapter writes has the streaming merge's bytes; every other byte of
/// the file is the base's. Where re-quantizing a de-quantized block gives
/// it back (every type here but the K-quants), the two files are
/// identical; the test prints, per type, how many untouched blocks the
/// streaming merge changed by re-quantizing them (measured: 37 of 444 for
/// Q4_K, 123 of 444 for Q6_K, none for the others), which the patch keeps
/// as they were.
#[test]
fn gguf_patch_merge_rewrites_only_touched_blocks() -> R {
    use wft_adapter::{Coverage, Orientation};
    let dir = tempfile::tempdir()?;
    let small = Config::tiny(300);
    // K-quants have 256-element blocks.
    let wide = Config {
        hidden_size: 256,
        intermediate_size: 256,
        num_hidden_layers: 1,
        head_dim: 64,
        ..Config::tiny(300)
    };
    use GgmlDType::*;
    let cases = [
        (&small, F32),
        (&small, F16),
        (&small, BF16),
        (&small, Q8_0),
        (&small, Q4_0),
        (&small, Q4_1),
        (&small, Q5_0),
        (&wide, Q4K),
        (&wide, Q6K),
    ];
    for (config, dtype) in cases {
        let weights = config.random_weights(5)?;
        let path = dir.path().join(format!("{dtype:?}.gguf"));
        llama::write_gguf(&path, config, &weights, dtype, llama::tiny_vocab(config.vocab_size)?)?;
        let base = Gguf::open(&path)?;
        let source = std::fs::read(&path)?;
        for (method, model) in [
            ("waveletft", adapters(&weights, dir.path())?),
            ("lora", lora_adapters(&weights, dir.path())?),
        ] {
            let (patched, streamed) = (dir.path().join("patched.gguf"), dir.path().join("streamed.gguf"));
            let report = llama::merge_gguf(&base, &model, &patched, llama::MergeDtype::Source)?;
            llama::merge_gguf_streaming(&base, &model, &streamed, llama::MergeDtype::Source)?;
            assert_eq!(report.replaced.len(), model.modules().len());
            let (p, s) = (std::fs::read(&patched)?, std::fs::read(&streamed)?);
            assert_eq!(
                (p.len(), s.len()),
                (source.len(), source.len()),
                "{dtype:?} {method}: lengths"
            );
            let mut adapted = vec![false; source.len()];
            let (mut touched_blocks, mut untouched_blocks, mut requantized) = (0, 0, 0);
            for (module, m) in model.modules() {
                let (g, order) = config.gguf_tensor(module).ok_or("no tensor")?;
                let e = base.entry(&g).ok_or("no entry")?;
                let (rows, cols) = m.as_adapter().shape();
                let (block, size) = (dtype.block_size(), dtype.type_size());
                let mut touched = vec![false; rows * cols / block];
                let mut mark = |start: usize, n: usize| {
                    for k in start..start + n {
                        let (r, c) = (k / cols, k % cols);
                        let gr = order.gguf_row(r, rows).expect("a row of the tensor");
                        touched[(gr * cols + c) / block] = true;
                    }
                };
                if m.as_adapter().for_each_touched_run(Orientation::Normal, &mut mark) == Coverage::Everything {
                    mark(0, rows * cols);
                }
                let at = (base.data_start() + e.offset) as usize;
                for (b, &t) in touched.iter().enumerate() {
                    let range = at + b * size..at + (b + 1) * size;
                    adapted[range.clone()].iter_mut().for_each(|a| *a = true);
                    if t {
                        touched_blocks += 1;
                        assert_eq!(p[range.clone()], s[range], "{dtype:?} {method} {g}: touched block {b}");
                    } else {
                        untouched_blocks += 1;
                        assert_eq!(
                            p[range.clone()],
                            source[range.clone()],
                            "{dtype:?} {method} {g}: block {b}"
                        );
                        requantized += usize::from(s[range.clone()] != source[range]);
                    }
                }
            }
            assert!(touched_blocks > 0 && p != source, "{dtype:?} {method}: nothing merged");
            if method == "lora" {
                assert_eq!(untouched_blocks, 0);
            }
            for (i, _) in adapted.iter().enumerate().filter(|(_, a)| !**a) {
                assert_eq!((p[i], s[i]), (source[i], source[i]), "{dtype:?} {method}: byte {i}");
            }
            eprintln!(
                "{dtype:?} {method}: {touched_blocks} blocks rewritten, {untouched_blocks} kept; \
                 the streaming merge changed {requantized} of the kept ones by re-quantizing"
            );
            if matches!(dtype, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1 | Q5_0) {
                assert!(p == s, "{dtype:?} {method}: the files differ");
            }
        }
    }
    Ok(())
}

/// Every adapter parameter a seeded normal value of standard deviation 0.05.
fn randomize(model: &mut AdapterModel, seed: u64) {
    let mut g = wft_adapter::Mt19937::new(seed);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.05 * g.next_normal()) as f32);
    }
}

/// ∂(masked next-token loss)/∂c and ∂/∂(input embeddings) through the whole
/// adapted decoder against central differences.
#[test]
fn adapted_decoder_gradients_match_central_differences() -> R {
    let dir = tempfile::tempdir()?;
    let (config, weights) = tiny()?;
    let model = adapters(&weights, dir.path())?;
    assert_eq!(model.modules().len(), 3 * config.num_hidden_layers);
    let llama = Llama::new(&config, &weights, Tuning::Adapters(&model))?;
    let x = ids(&[&[3, 70, 71, 280, 5, 9], &[12, 13, 14, 15, 256, 256]])?;
    let targets = ids(&[&[70, 71, 280, 5, 9, 11], &[13, 14, 15, 256, 0, 0]])?;
    let weight = Tensor::from_vec(
        vec![0f32, 1., 1., 1., 1., 1., 0., 1., 1., 1., 0., 0.],
        (2, 6),
        &Device::Cpu,
    )?;
    let embedded = Var::from_tensor(&llama.embed(&x)?)?;
    let loss_of = |e: &Tensor| -> R<Tensor> {
        let logits = llama.logits(&llama.decode(e, &mut Cache::new(), None)?)?;
        Ok(masked_cross_entropy(&logits, &targets, &weight)?)
    };
    let grads = loss_of(embedded.as_tensor())?.backward()?;
    let h = 1e-2f32;
    // A coefficient vector of one adapted module.
    let (path, var) = llama.named_vars()[4].clone();
    let grad = grads.get(var.as_tensor()).ok_or("no gradient")?.to_vec1::<f32>()?;
    let base = var.as_tensor().to_vec1::<f32>()?;
    let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{path}: zero gradient");
    let mut worst = 0f32;
    for k in [0, 9, 21, 39] {
        let mut p = base.clone();
        p[k] += h;
        var.set(&Tensor::from_vec(p.clone(), base.len(), &Device::Cpu)?)?;
        let up = loss_of(embedded.as_tensor())?.to_scalar::<f32>()?;
        p[k] -= 2.0 * h;
        var.set(&Tensor::from_vec(p, base.len(), &Device::Cpu)?)?;
        let down = loss_of(embedded.as_tensor())?.to_scalar::<f32>()?;
        worst = worst.max(((up - down) / (2.0 * h) - grad[k]).abs() / scale);
    }
    var.set(&Tensor::from_vec(base.clone(), base.len(), &Device::Cpu)?)?;
    assert!(worst < 2e-2, "{path}: relative error {worst}");
    // The input embeddings.
    let ge = grads.get(embedded.as_tensor()).ok_or("no input gradient")?;
    let ge = ge.flatten_all()?.to_vec1::<f32>()?;
    let e0 = embedded.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let scale = ge.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for k in [1, 40, 77, 150, 300] {
        let shifted = |d: f32| -> R<f32> {
            let mut e = e0.clone();
            e[k] += d;
            let e = Tensor::from_vec(e, embedded.as_tensor().shape(), &Device::Cpu)?;
            Ok(loss_of(&e)?.to_scalar::<f32>()?)
        };
        worst = worst.max(((shifted(h)? - shifted(-h)?) / (2.0 * h) - ge[k]).abs() / scale);
    }
    assert!(worst < 2e-2, "input gradient: relative error {worst}");
    Ok(())
}

#[test]
fn adapters_of_another_architecture_are_refused() -> R {
    let (config, weights) = tiny()?;
    let dir = tempfile::tempdir()?;
    let mut model = adapters(&weights, dir.path())?;
    let (_, a) = model.modules_mut().pop_first().ok_or("no module")?;
    model
        .modules_mut()
        .insert("encoder.layer.0.attention.self.query".into(), a);
    let e = Llama::new(&config, &weights, Tuning::Adapters(&model)).expect_err("a foreign module");
    assert!(
        matches!(e, Error::Config(ref m) if m.contains("encoder.layer.0")),
        "{e}"
    );
    Ok(())
}

/// Byte-level surgery on a valid tiny file: each defect is a typed error.
#[test]
fn hostile_gguf_files_are_typed_errors() -> R {
    let dir = tempfile::tempdir()?;
    let (_, _, path) = write(dir.path(), GgmlDType::F32)?;
    let good = std::fs::read(&path)?;
    let gguf = Gguf::open(&path)?;
    let ((_, meta_end), _) = gguf.metadata_range();
    let open = |bytes: &[u8]| -> Result<Gguf, GgufError> {
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, bytes).map_err(|e| GgufError::Io {
            path: p.clone(),
            source: e,
        })?;
        Gguf::open(&p)
    };
    // Wrong magic, unsupported versions.
    let mut b = good.clone();
    b[0] = b'X';
    assert!(matches!(open(&b), Err(GgufError::Magic(_))));
    for v in [1u32, 4, u32::MAX] {
        let mut b = good.clone();
        b[4..8].copy_from_slice(&v.to_le_bytes());
        assert!(matches!(open(&b), Err(GgufError::Version(x)) if x == v));
    }
    // Absurd counts.
    let mut b = good.clone();
    b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Truncated { .. })));
    let mut b = good.clone();
    b[16..24].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(open(&b).is_err());
    // Truncated anywhere: inside the header, or inside the data.
    for cut in (0..good.len())
        .step_by(251)
        .chain([meta_end as usize + 3, good.len() - 1])
    {
        assert!(open(&good[..cut]).is_err(), "cut at {cut}");
    }
    // The first tensor info: name, n_dims, dims, type, offset.
    let first = &gguf.tensors()[0];
    let at = meta_end as usize + 8 + first.name.len();
    let tensor_field =
        |b: &mut Vec<u8>, offset: usize, bytes: &[u8]| b[at + offset..at + offset + bytes.len()].copy_from_slice(bytes);
    let n_dims = first.ne.len();
    let after_dims = 4 + 8 * n_dims;
    let mut b = good.clone();
    tensor_field(&mut b, 0, &5u32.to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { .. })), "5 dimensions");
    let mut b = good.clone();
    tensor_field(&mut b, 4, &0u64.to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { .. })), "a zero dimension");
    let mut b = good.clone();
    tensor_field(&mut b, 4, &(1u64 << 50).to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { .. })), "an absurd dimension");
    let mut b = good.clone();
    tensor_field(&mut b, after_dims, &99u32.to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { reason, .. }) if reason.contains("unknown tensor type")));
    let mut b = good.clone();
    tensor_field(&mut b, after_dims + 4, &(1u64 << 40).to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { reason, .. }) if reason.contains("past the end")));
    let mut b = good.clone();
    tensor_field(&mut b, after_dims + 4, &3u64.to_le_bytes());
    assert!(matches!(open(&b), Err(GgufError::Tensor { reason, .. }) if reason.contains("alignment")));
    // Another architecture.
    let arch = b"llama";
    let pos = good
        .windows(arch.len())
        .position(|w| w == arch)
        .ok_or("no architecture")?;
    let mut b = good.clone();
    b[pos..pos + 5].copy_from_slice(b"gpt2x");
    let g = open(&b)?;
    assert!(matches!(llama::load_gguf(&g), Err(Error::Architecture(a)) if a == "gpt2x"));
    // A block count the file cannot hold (the fuzzer's find: 2²⁷ blocks
    // had the loader list gigabytes of tensor names first). The key's value
    // follows its name and its u32 type id.
    let key = b"llama.block_count";
    let pos = good.windows(key.len()).position(|w| w == key).ok_or("no block count")? + key.len();
    assert_eq!(good[pos..pos + 4], 4u32.to_le_bytes(), "block_count is a u32");
    for blocks in [1u32 << 27, u32::MAX] {
        let mut b = good.clone();
        b[pos + 4..pos + 8].copy_from_slice(&blocks.to_le_bytes());
        let g = open(&b)?;
        for result in [
            llama::load_gguf(&g).map(|_| ()),
            llama::load_gguf_quantized(&g).map(|_| ()),
        ] {
            assert!(
                matches!(&result, Err(Error::Config(m)) if m.contains("block_count")),
                "{blocks} blocks: {result:?}"
            );
        }
    }
    Ok(())
}

/// Frozen weights kept quantized compute what the de-quantized model
/// computes: the same logits, and the same adapter and input gradients.
#[test]
fn quantized_base_computes_the_dequantized_model() -> R {
    let dir = tempfile::tempdir()?;
    let (config, dense, quantized) = q8_dense_and_quantized(dir.path())?;
    assert!(!quantized.quantized().is_empty());
    assert!(
        quantized.bytes() * 3 < dense.bytes(),
        "{} against {}",
        quantized.bytes(),
        dense.bytes()
    );
    // The rows un-permuted on the quantized bytes land where load_gguf puts them.
    for (name, q) in quantized.quantized() {
        let d = q.dequantize(&Device::Cpu)?;
        assert_eq!(max_diff(&d, dense.get(name)?)?, 0.0, "{name}");
    }
    let adapters = adapters(&dense, dir.path())?;
    let x = ids(&[&[3, 70, 71, 280, 5, 9], &[12, 13, 14, 15, 16, 17]])?;
    let targets = ids(&[&[70, 71, 280, 5, 9, 11], &[13, 14, 15, 16, 17, 18]])?;
    let weight = Tensor::ones((2, 6), candle_core::DType::F32, &Device::Cpu)?;
    let mut results = Vec::new();
    for w in [&dense, &quantized] {
        let model = Llama::new(&config, w, Tuning::Adapters(&adapters))?;
        let e = Var::from_tensor(&model.embed(&x)?)?;
        let logits = model.logits(&model.decode(e.as_tensor(), &mut Cache::new(), None)?)?;
        let grads = masked_cross_entropy(&logits, &targets, &weight)?.backward()?;
        let gc = grads
            .get(model.named_vars()[0].1.as_tensor())
            .ok_or("no gradient")?
            .clone();
        let ge = grads.get(e.as_tensor()).ok_or("no input gradient")?.clone();
        results.push((logits, gc, ge));
    }
    let ((l0, c0, e0), (l1, c1, e1)) = (&results[0], &results[1]);
    assert!(max_diff(l0, l1)? < 1e-5);
    assert!(max_diff(c0, c1)? < 1e-5);
    assert!(max_diff(e0, e1)? < 1e-6);
    Ok(())
}

/// The loss over selected positions equals the masked loss over all of them.
#[test]
fn selected_loss_equals_the_masked_loss() -> R {
    let (config, weights) = tiny()?;
    let model = Llama::new(&config, &weights, Tuning::Frozen)?;
    let x = ids(&[&[3, 70, 71, 280], &[12, 13, 14, 15]])?;
    let targets = ids(&[&[70, 71, 280, 5], &[13, 14, 15, 16]])?;
    let w = Tensor::from_vec(vec![0f32, 1., 0., 1., 1., 1., 0., 0.], (2, 4), &Device::Cpu)?;
    let hidden = model.hidden(&x, &mut Cache::new(), None)?;
    let all = masked_cross_entropy(&model.logits(&hidden)?, &targets, &w)?.to_scalar::<f32>()?;
    let picked = model.selected_loss(&hidden, &targets, &w)?.to_scalar::<f32>()?;
    assert!((all - picked).abs() < 1e-6, "{all} against {picked}");
    let none = Tensor::zeros((2, 4), candle_core::DType::F32, &Device::Cpu)?;
    assert!(matches!(
        model.selected_loss(&hidden, &targets, &none),
        Err(Error::Config(_))
    ));
    Ok(())
}

/// A scaled RoPE would rotate every position differently: refused, not
/// computed wrongly.
#[test]
fn rope_scaling_is_refused() -> R {
    use candle_core::quantized::gguf_file::Value;
    let dir = tempfile::tempdir()?;
    let (config, weights) = tiny()?;
    let path = dir.path().join("scaled.gguf");
    let mut extra = llama::tiny_vocab(config.vocab_size)?;
    extra.push(("llama.rope.scaling.type".into(), Value::String("linear".into())));
    llama::write_gguf(&path, &config, &weights, GgmlDType::F32, extra)?;
    let e = llama::load_gguf(&Gguf::open(&path)?).expect_err("scaled RoPE");
    assert!(matches!(e, Error::Config(ref m) if m.contains("RoPE scaling")), "{e}");
    Ok(())
}

/// Recomputing the blocks in the backward pass gives the loss and every
/// gradient of keeping their activations: adapters on a dense and on a
/// quantized base, and full fine-tuning (where the tied embedding gets
/// gradients from both ends).
#[test]
fn recomputed_activations_give_the_kept_gradients() -> R {
    use llama::Activations;
    let dir = tempfile::tempdir()?;
    let (config, dense, quantized) = q8_dense_and_quantized(dir.path())?;
    let adapters = adapters(&dense, dir.path())?;
    let x = ids(&[&[3, 70, 71, 280, 5, 9], &[12, 13, 14, 15, 0, 0]])?;
    let targets = ids(&[&[70, 71, 280, 5, 9, 11], &[13, 14, 15, 16, 0, 0]])?;
    let mask = Tensor::from_vec(
        vec![1f32, 1., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0.],
        (2, 6),
        &Device::Cpu,
    )?;
    let weights = Tensor::from_vec(
        vec![0f32, 0., 1., 1., 1., 1., 0., 1., 1., 1., 0., 0.],
        (2, 6),
        &Device::Cpu,
    )?;
    let cases = [
        ("adapters, dense base", &dense, Tuning::Adapters(&adapters)),
        ("adapters, quantized base", &quantized, Tuning::Adapters(&adapters)),
        ("full fine-tuning", &dense, Tuning::Full),
    ];
    for (case, base, tuning) in cases {
        let model = Llama::new(&config, base, tuning)?;
        let (kept_loss, kept) = model.loss_and_grads(&x, &mask, &targets, &weights, Activations::Kept)?;
        let (loss, recomputed) = model.loss_and_grads(&x, &mask, &targets, &weights, Activations::Recomputed)?;
        assert!(
            (kept_loss - loss).abs() < 1e-6,
            "{case}: loss {kept_loss} against {loss}"
        );
        assert!(!model.named_vars().is_empty(), "{case}");
        for (name, var) in model.named_vars() {
            let want = kept
                .get(var.as_tensor())
                .ok_or_else(|| format!("{case}: {name}: no kept gradient"))?;
            let got = recomputed
                .get(var.as_tensor())
                .ok_or_else(|| format!("{case}: {name}: no recomputed gradient"))?;
            let scale = want.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(scale > 0.0, "{case}: {name}: a zero gradient tests nothing");
            let diff = max_diff(want, got)?;
            assert!(diff <= 1e-5 * scale, "{case}: {name}: {diff} of {scale}");
        }
    }
    Ok(())
}

/// Hot-swapping a loaded decoder's adapters A → B gives bit for bit the
/// logits of the decoder built with B (dense and quantized bases), swapping
/// back gives A's, and adapters that do not fit are refused with the model
/// unchanged.
#[test]
fn hot_swapped_adapters_equal_a_fresh_load() -> R {
    let dir = tempfile::tempdir()?;
    let (config, dense, quantized) = q8_dense_and_quantized(dir.path())?;
    let a = adapters(&dense, dir.path())?;
    let mut b = a.clone();
    randomize(&mut b, 17);
    let x = ids(&[&[3, 70, 71, 280, 5, 9], &[12, 13, 14, 15, 16, 17]])?;
    let bits = |t: &Tensor| -> R<Vec<u32>> {
        Ok(t.flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(f32::to_bits)
            .collect())
    };
    // Bit for bit, reported as a count of differing logits.
    let differ = |x: &[u32], y: &[u32]| x.iter().zip(y).filter(|(a, b)| a != b).count() + x.len().abs_diff(y.len());
    for w in [&dense, &quantized] {
        let logits = |m: &Llama| -> R<Vec<u32>> { bits(&m.forward(&x, &mut Cache::new(), None)?) };
        let fresh_b = logits(&Llama::new(&config, w, Tuning::Adapters(&b))?)?;
        let model = Llama::new(&config, w, Tuning::Adapters(&a))?;
        let fresh_a = logits(&model)?;
        assert!(differ(&fresh_a, &fresh_b) > 0);
        model.swap_adapters(&b)?;
        assert_eq!(differ(&logits(&model)?, &fresh_b), 0);
        // The variables hold B's values: what training or saving sees.
        let held = model.adapters(&a)?;
        for (m, adapter) in b.modules() {
            assert_eq!(
                held.modules()[m].as_adapter().params(),
                adapter.as_adapter().params(),
                "{m}"
            );
        }
        model.swap_adapters(&a)?;
        assert_eq!(differ(&logits(&model)?, &fresh_a), 0);

        // Another module set, or another n, is refused before anything changes.
        let mut fewer = b.clone();
        let first = fewer.modules().keys().next().ok_or("no module")?.clone();
        fewer.modules_mut().remove(&first);
        assert!(matches!(model.swap_adapters(&fewer), Err(Error::Config(_))));
        let method = MethodConfig::WaveletFt(WaveletFtConfig {
            n_frequency: 41,
            ..Default::default()
        });
        let base_path = dir.path().join("base.safetensors");
        let targets = ModuleSpec::Names(vec!["q_proj".into(), "v_proj".into(), "down_proj".into()]);
        let other_n =
            AdapterModel::new_for_base(AdapterConfig::new(method, targets), &TensorFile::open(&base_path)?, 1)?;
        assert!(matches!(model.swap_adapters(&other_n), Err(Error::Shape { .. })));
        assert_eq!(differ(&logits(&model)?, &fresh_a), 0);
    }
    Ok(())
}

/// A mixed-adapter batch (rows on A, on no adapter, on B, on A again) gives
/// each row the logits of the decoder built with that row's adapter alone,
/// in the prefill and in every KV-cached decoding step, on a dense and a
/// quantized base; greedy decoding picks the same tokens.
#[test]
fn mixed_adapter_batches_equal_each_adapter_alone() -> R {
    let dir = tempfile::tempdir()?;
    let (config, dense, quantized) = q8_dense_and_quantized(dir.path())?;
    let a = adapters(&dense, dir.path())?;
    let mut b = a.clone();
    randomize(&mut b, 23);
    let prompts: [&[u32]; 4] = [&[3, 70, 71, 280], &[12, 13, 14, 15], &[9, 8, 7, 6], &[100, 101, 5, 2]];
    let routes = vec![Some(0), None, Some(1), Some(0)];
    let mix = wft_candle::AdapterMix::new(vec![&a, &b], routes.clone())?;
    // Served by a frozen decoder, and by one built with B (whose own merged
    // adapter a mixed pass must not use).
    for (w, tuning) in [
        (&dense, Tuning::Frozen),
        (&dense, Tuning::Adapters(&b)),
        (&quantized, Tuning::Frozen),
    ] {
        let served = Llama::new(&config, w, tuning)?;
        let alone = [
            Llama::new(&config, w, Tuning::Adapters(&a))?,
            Llama::new(&config, w, Tuning::Frozen)?,
            Llama::new(&config, w, Tuning::Adapters(&b))?,
        ];
        let which = |route: Option<usize>| match route {
            Some(0) => 0,
            None => 1,
            _ => 2,
        };
        let mut cache = Cache::new();
        let mut caches: Vec<Cache> = (0..4).map(|_| Cache::new()).collect();
        let mut next: Vec<u32> = Vec::new();
        for step in 0..4 {
            let batch: Vec<Vec<u32>> = if step == 0 {
                prompts.iter().map(|p| p.to_vec()).collect()
            } else {
                next.iter().map(|&t| vec![t]).collect()
            };
            let rows: Vec<&[u32]> = batch.iter().map(Vec::as_slice).collect();
            let logits = served.logits(&served.hidden_mixed(&ids(&rows)?, &mut cache, None, None, &mix)?)?;
            let len = rows[0].len();
            let mut picked = Vec::new();
            for (r, route) in routes.iter().enumerate() {
                let want = alone[which(*route)].forward(&ids(&[rows[r]])?, &mut caches[r], None)?;
                let got = logits.narrow(0, r, 1)?;
                let diff = max_diff(&got, &want)?;
                assert!(diff < 1e-5, "step {step} row {r} ({route:?}): {diff}");
                let last = |t: &Tensor| -> R<u32> {
                    Ok(t.narrow(1, len - 1, 1)?.flatten_all()?.argmax(0)?.to_scalar::<u32>()?)
                };
                assert_eq!(last(&got)?, last(&want)?, "step {step} row {r}: greedy token");
                picked.push(last(&got)?);
            }
            next = picked;
        }
    }
    // Routes past the adapters are refused.
    assert!(wft_candle::AdapterMix::new(vec![&a], vec![Some(1)]).is_err());
    Ok(())
}
