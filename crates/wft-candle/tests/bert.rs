//! The BERT encoder on a tiny random checkpoint: every tuning computes the
//! same function at initialisation, gradients reach what each tuning
//! trains (and match finite differences through the whole network), and
//! bad checkpoints or adapters are typed errors.

use candle_core::{Device, Tensor, Var};
use wft_adapter::{AdapterConfig, AdapterModel, LoraConfig, MethodConfig, ModuleSpec, TensorFile, WaveletFtConfig};
use wft_candle::Adaptable;
use wft_candle::models::bert::{Bert, Config, mean_pool};
use wft_candle::{Classifier, Error};
use wft_candle::{Tuning, Weights};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Fixture {
    config: Config,
    weights: Weights,
    base: TensorFile,
    _dir: tempfile::TempDir,
}

fn fixture() -> R<Fixture> {
    let config = Config::tiny(50);
    let weights = Weights::random(&config, 7)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    weights.save(&path)?;
    Ok(Fixture {
        base: TensorFile::open(&path)?,
        config,
        weights,
        _dir: dir,
    })
}

fn inputs() -> R<(Tensor, Tensor)> {
    let ids = Tensor::from_vec(vec![2u32, 10, 11, 12, 3, 2, 20, 3, 0, 0], (2, 5), &Device::Cpu)?;
    let mask = Tensor::from_vec(vec![1f32, 1., 1., 1., 1., 1., 1., 1., 0., 0.], (2, 5), &Device::Cpu)?;
    Ok((ids, mask))
}

fn wavelet(n: usize) -> MethodConfig {
    MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: n,
        scaling: 5.0,
        ..Default::default()
    })
}

fn max_diff(a: &Tensor, b: &Tensor) -> R<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn every_tuning_starts_as_the_frozen_model() -> R {
    let f = fixture()?;
    let (ids, mask) = inputs()?;
    let frozen = Bert::new(&f.config, &f.weights, Tuning::Frozen)?.forward(&ids, &mask)?;
    let full = Bert::new(&f.config, &f.weights, Tuning::Full)?.forward(&ids, &mask)?;
    assert!(max_diff(&frozen, &full)? < 1e-5);
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into()]);
    for method in [
        wavelet(100),
        MethodConfig::Lora(LoraConfig {
            r: 2,
            lora_alpha: 4.0,
            use_rslora: false,
            seed: 0,
        }),
    ] {
        let model = AdapterModel::new_for_base(AdapterConfig::new(method, targets.clone()), &f.base, 1)?;
        assert_eq!(model.modules().len(), 2 * f.config.num_hidden_layers);
        let bert = Bert::new(&f.config, &f.weights, Tuning::Adapters(&model))?;
        assert_eq!(bert.vars().len(), model.modules().len());
        assert!(max_diff(&frozen, &bert.forward(&ids, &mask)?)? < 1e-5);
    }
    Ok(())
}

/// Mean pooling ignores padding.
#[test]
fn mean_pooling_skips_padding() -> R {
    let h = Tensor::from_vec((0..12).map(|v| v as f32).collect::<Vec<_>>(), (2, 3, 2), &Device::Cpu)?;
    let mask = Tensor::from_vec(vec![1f32, 1., 0., 1., 0., 0.], (2, 3), &Device::Cpu)?;
    assert_eq!(
        mean_pool(&h, &mask)?.to_vec2::<f32>()?,
        vec![vec![1.0, 2.0], vec![6.0, 7.0]]
    );
    Ok(())
}

/// ∂(loss)/∂c through the whole classifier against central differences
/// (the network is not linear in c, so these carry an O(h²) error).
#[test]
fn adapter_gradients_match_finite_differences_through_bert() -> R {
    let f = fixture()?;
    let (ids, mask) = inputs()?;
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into()]);
    let mut model = AdapterModel::new_for_base(AdapterConfig::new(wavelet(64), targets), &f.base, 1)?;
    let mut g = wft_adapter::Mt19937::new(3);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.05 * g.next_normal()) as f32);
    }
    let clf = Classifier::new(Bert::new(&f.config, &f.weights, Tuning::Adapters(&model))?, 3, 0)?;
    let labels = Tensor::from_vec(vec![0u32, 2], 2, &Device::Cpu)?;
    let loss = |c: &Classifier| -> R<f32> {
        Ok(candle_nn::loss::cross_entropy(&c.logits(&ids, &mask)?, &labels)?.to_scalar::<f32>()?)
    };
    let l = candle_nn::loss::cross_entropy(&clf.logits(&ids, &mask)?, &labels)?;
    let grads = l.backward()?;
    let (path, var) = clf.bert().named_vars()[1].clone();
    let grad = grads.get(var.as_tensor()).ok_or("no gradient")?.to_vec1::<f32>()?;
    let base = var.as_tensor().to_vec1::<f32>()?;
    let h = 1e-2f32;
    let mut worst = 0f32;
    let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0, "{path}: zero gradient");
    for k in [0, 7, 31, 63] {
        let mut p = base.clone();
        p[k] += h;
        var.set(&Tensor::from_vec(p.clone(), base.len(), &Device::Cpu)?)?;
        let up = loss(&clf)?;
        p[k] -= 2.0 * h;
        var.set(&Tensor::from_vec(p, base.len(), &Device::Cpu)?)?;
        let down = loss(&clf)?;
        worst = worst.max(((up - down) / (2.0 * h) - grad[k]).abs() / scale);
    }
    assert!(worst < 2e-2, "{path}: relative error {worst}");
    Ok(())
}

/// Frozen: the embedded input gets a gradient, no weight does. Full: every
/// weight does.
#[test]
fn gradients_reach_what_each_tuning_trains() -> R {
    let f = fixture()?;
    let (ids, mask) = inputs()?;
    let frozen = Classifier::new(Bert::new(&f.config, &f.weights, Tuning::Frozen)?, 3, 0)?;
    assert_eq!(frozen.num_trainable().0, 0);
    let x = Var::from_tensor(&frozen.bert().embed(&ids)?)?;
    let grads = frozen
        .logits_from_embedded(x.as_tensor(), &mask)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(x.as_tensor()).is_some());
    for t in f.weights.tensors().values() {
        assert!(grads.get(t).is_none());
    }
    let full = Classifier::new(Bert::new(&f.config, &f.weights, Tuning::Full)?, 3, 0)?;
    let grads = full.logits(&ids, &mask)?.sum_all()?.backward()?;
    let named = full.bert().named_vars();
    assert_eq!(named.len(), f.weights.tensors().len());
    for (name, v) in named {
        assert!(grads.get(v.as_tensor()).is_some(), "{name}");
    }
    Ok(())
}

#[test]
fn bad_checkpoints_and_adapters_are_typed_errors() -> R {
    let f = fixture()?;
    let mut w = f.weights.clone();
    w.insert(
        "encoder.layer.1.attention.self.key.weight",
        Tensor::zeros((32, 31), candle_core::DType::F32, &Device::Cpu)?,
    );
    assert!(matches!(
        Bert::new(&f.config, &w, Tuning::Frozen),
        Err(Error::Shape { .. })
    ));
    let mut c = f.config.clone();
    c.num_hidden_layers = 3;
    assert!(matches!(
        Bert::new(&c, &f.weights, Tuning::Frozen),
        Err(Error::MissingTensor(_))
    ));
    c = f.config.clone();
    c.num_attention_heads = 5;
    assert!(matches!(
        Bert::new(&c, &f.weights, Tuning::Frozen),
        Err(Error::Config(_))
    ));
    // An adapter made for a deeper model names a layer this one lacks.
    let deeper = Config {
        num_hidden_layers: 3,
        ..f.config.clone()
    };
    let dir = tempfile::tempdir()?;
    Weights::random(&deeper, 1)?.save(dir.path().join("m.safetensors"))?;
    let other = TensorFile::open(dir.path().join("m.safetensors"))?;
    let model = AdapterModel::new_for_base(
        AdapterConfig::new(wavelet(10), ModuleSpec::Names(vec!["query".into()])),
        &other,
        0,
    )?;
    assert!(matches!(
        Bert::new(&f.config, &f.weights, Tuning::Adapters(&model)),
        Err(Error::Config(_))
    ));
    // A too-long input.
    let bert = Bert::new(&f.config, &f.weights, Tuning::Frozen)?;
    let long = Tensor::zeros(
        (1, f.config.max_position_embeddings + 1),
        candle_core::DType::U32,
        &Device::Cpu,
    )?;
    assert!(matches!(bert.embed(&long), Err(Error::Config(_))));
    Ok(())
}

/// Train a little, save the adapters as a PEFT folder and the head, load
/// both back, and merge the folder into the checkpoint: the same logits
/// every way.
#[test]
fn trained_adapters_save_load_and_merge_to_the_same_logits() -> R {
    use candle_nn::Optimizer;
    let f = fixture()?;
    let (ids, mask) = inputs()?;
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into()]);
    let template = AdapterModel::new_for_base(AdapterConfig::new(wavelet(80), targets), &f.base, 1)?;
    let clf = Classifier::new(Bert::new(&f.config, &f.weights, Tuning::Adapters(&template))?, 3, 0)?;
    let labels = Tensor::from_vec(vec![1u32, 2], 2, &Device::Cpu)?;
    let mut opt = candle_nn::SGD::new(clf.vars(), 0.05)?;
    for _ in 0..3 {
        opt.backward_step(&candle_nn::loss::cross_entropy(&clf.logits(&ids, &mask)?, &labels)?)?;
    }
    let trained = clf.adapters(&template)?;
    assert!(
        trained
            .modules()
            .values()
            .any(|m| m.as_adapter().params().iter().any(|p| *p != 0.0))
    );
    let want = clf.logits(&ids, &mask)?;

    let dir = tempfile::tempdir()?;
    trained.save(dir.path().join("adapter"))?;
    clf.save_head(dir.path().join("head.safetensors"))?;
    let loaded = AdapterModel::load(dir.path().join("adapter"), Some(&f.base))?;
    let again = Classifier::with_saved_head(
        Bert::new(&f.config, &f.weights, Tuning::Adapters(&loaded))?,
        dir.path().join("head.safetensors"),
    )?;
    assert!(max_diff(&want, &again.logits(&ids, &mask)?)? < 1e-6);

    let merged = dir.path().join("merged.safetensors");
    loaded.merge(&f.base, &merged, &mut |_, _| {})?;
    let plain = Classifier::with_saved_head(
        Bert::new(&f.config, &Weights::load(&merged)?, Tuning::Frozen)?,
        dir.path().join("head.safetensors"),
    )?;
    assert!(max_diff(&want, &plain.logits(&ids, &mask)?)? < 1e-5);
    Ok(())
}

/// The same bits on 1 thread and on 2: the encoder's output and the
/// gradients of the embedded input and of every adapter, in rayon pools
/// of each size, at sizes where gemm, the elementwise kernels and
/// attention all split their work (padding included).
#[test]
fn one_and_two_threads_compute_the_same_bits() -> R {
    let config = Config {
        hidden_size: 128,
        intermediate_size: 512,
        ..Config::tiny(50)
    };
    let weights = Weights::random(&config, 7)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("model.safetensors");
    weights.save(&path)?;
    let base = TensorFile::open(&path)?;
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into(), "intermediate.dense".into()]);
    let mut g = wft_adapter::Mt19937::new(5);
    let methods = [
        wavelet(300),
        MethodConfig::Lora(LoraConfig {
            r: 4,
            lora_alpha: 8.0,
            use_rslora: false,
            seed: 0,
        }),
        MethodConfig::FourierFt(wft_adapter::FourierFtConfig {
            n_frequency: 300,
            scaling: 5.0,
            seed: 3,
            init: wft_adapter::Init::Zeros,
        }),
    ];
    let mut models = Vec::new();
    for method in methods {
        let mut model = AdapterModel::new_for_base(AdapterConfig::new(method, targets.clone()), &base, 1)?;
        for m in model.modules_mut().values_mut() {
            m.as_adapter_mut()
                .params_mut()
                .iter_mut()
                .for_each(|p| *p = (0.05 * g.next_normal()) as f32);
        }
        models.push(model);
    }
    let (batch, len) = (24, 40);
    let ids: Vec<u32> = (0..batch * len).map(|_| g.next_u32() % 50).collect();
    let mask: Vec<f32> = (0..batch * len)
        .map(|i| if i % len < len - (i / len) % 9 { 1.0 } else { 0.0 })
        .collect();
    let (ids, mask) = (
        Tensor::from_vec(ids, (batch, len), &Device::Cpu)?,
        Tensor::from_vec(mask, (batch, len), &Device::Cpu)?,
    );
    let probe = Tensor::randn(0f32, 1.0, (batch, len, config.hidden_size), &Device::Cpu)?;
    let run = |model: &AdapterModel, threads: usize| -> R<Vec<Vec<u32>>> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
        // The pool's closure returns a `Send` error: the message.
        let inside = || -> R<Vec<Vec<u32>>> {
            let bert = Bert::new(&config, &weights, Tuning::Adapters(model))?;
            let x = Var::from_tensor(&bert.embed(&ids)?)?;
            let out = bert.encode(x.as_tensor(), &mask)?;
            let grads = (&out * &probe)?.sum_all()?.backward()?;
            let bits = |t: &Tensor| -> R<Vec<u32>> {
                Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().map(|v| v.to_bits()).collect())
            };
            let mut all = vec![bits(&out)?, bits(grads.get(x.as_tensor()).ok_or("no input gradient")?)?];
            for (name, var) in bert.named_vars() {
                all.push(bits(
                    grads.get(var.as_tensor()).ok_or(format!("no gradient for {name}"))?,
                )?);
            }
            Ok(all)
        };
        Ok(pool.install(|| inside().map_err(|e| e.to_string()))?)
    };
    for model in &models {
        let (one, two) = (run(model, 1)?, run(model, 2)?);
        assert_eq!(one.len(), 2 + 2 * 3);
        for (i, (a, b)) in one.iter().zip(&two).enumerate() {
            assert!(
                a == b,
                "{:?}: output {i} differs between 1 and 2 threads",
                model.config().method
            );
        }
    }
    Ok(())
}

#[test]
fn segment_ids_add_their_type_embedding() -> R {
    let f = fixture()?;
    let bert = Bert::new(&f.config, &f.weights, Tuning::Frozen)?;
    let (ids, _) = inputs()?;
    let plain = bert.embed(&ids)?;
    // All-zero segment ids are exactly no segment ids.
    let zeros = Tensor::zeros((2, 5), candle_core::DType::U32, &Device::Cpu)?;
    assert_eq!(max_diff(&plain, &bert.embed_segments(&ids, Some(&zeros))?)?, 0.0);
    // Segment 1 from position 3 of the first row: the same as adding
    // (type 1 − type 0) before the embedding LayerNorm, so only those
    // positions change.
    let types = Tensor::from_vec(vec![0u32, 0, 0, 1, 1, 0, 0, 0, 0, 0], (2, 5), &Device::Cpu)?;
    let typed = bert.embed_segments(&ids, Some(&types))?;
    let changed = (&typed - &plain)?.abs()?.sum(2)?.flatten_all()?.to_vec1::<f32>()?;
    let moved: Vec<bool> = changed.iter().map(|c| *c > 1e-4).collect();
    assert_eq!(
        moved,
        [false, false, false, true, true, false, false, false, false, false]
    );
    // Bad segment ids are typed errors.
    let wrong_shape = Tensor::zeros((2, 4), candle_core::DType::U32, &Device::Cpu)?;
    assert!(matches!(
        bert.embed_segments(&ids, Some(&wrong_shape)),
        Err(Error::Shape { .. })
    ));
    let too_big = Tensor::full(2u32, (2, 5), &Device::Cpu)?;
    assert!(matches!(
        bert.embed_segments(&ids, Some(&too_big)),
        Err(Error::Config(_))
    ));
    Ok(())
}

/// A mixed-adapter batch of texts of different lengths (on A, on no adapter,
/// on B) gives each text the hidden states of the encoder built with its
/// adapter alone.
#[test]
fn mixed_adapter_batches_equal_each_adapter_alone() -> R {
    let f = fixture()?;
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into(), "intermediate.dense".into()]);
    let mut adapters = Vec::new();
    for seed in [1u64, 2] {
        let config = AdapterConfig::new(wavelet(60), targets.clone());
        let mut model = AdapterModel::new_for_base(config, &f.base, seed)?;
        let mut g = wft_adapter::Mt19937::new(seed + 7);
        for m in model.modules_mut().values_mut() {
            m.as_adapter_mut()
                .params_mut()
                .iter_mut()
                .for_each(|p| *p = (0.3 * g.next_normal()) as f32);
        }
        adapters.push(model);
    }
    let ids = Tensor::from_vec(
        vec![2u32, 10, 11, 12, 3, 2, 20, 3, 0, 0, 2, 30, 31, 3, 0],
        (3, 5),
        &Device::Cpu,
    )?;
    let mask = Tensor::from_vec(
        vec![1f32, 1., 1., 1., 1., 1., 1., 1., 0., 0., 1., 1., 1., 1., 0.],
        (3, 5),
        &Device::Cpu,
    )?;
    let routes = vec![Some(0), None, Some(1)];
    let mix = wft_candle::AdapterMix::new(adapters.iter().collect(), routes.clone())?;
    let served = Bert::new(&f.config, &f.weights, Tuning::Frozen)?;
    let mixed = served.encode_mixed(&served.embed(&ids)?, &mask, &mix)?;
    let mut moved = 0.0f32;
    for (r, route) in routes.iter().enumerate() {
        let alone = match route {
            Some(k) => Bert::new(&f.config, &f.weights, Tuning::Adapters(&adapters[*k]))?,
            None => Bert::new(&f.config, &f.weights, Tuning::Frozen)?,
        };
        let want = alone.forward(&ids.narrow(0, r, 1)?, &mask.narrow(0, r, 1)?)?;
        let got = mixed.narrow(0, r, 1)?;
        assert!(max_diff(&got, &want)? < 1e-5, "text {r} ({route:?})");
        moved = moved.max(max_diff(
            &want,
            &served.forward(&ids.narrow(0, r, 1)?, &mask.narrow(0, r, 1)?)?,
        )?);
    }
    assert!(moved > 1e-3, "the adapters change the states ({moved})");
    assert!(
        served
            .encode_mixed(
                &served.embed(&ids)?,
                &mask,
                &wft_candle::AdapterMix::new(vec![], vec![None])?
            )
            .is_err()
    );
    Ok(())
}
