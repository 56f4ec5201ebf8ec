//! The ViT on a tiny random model: shapes, the position-embedding resize,
//! adapters on its projections with gradients against central differences,
//! and weights that do not fit the config refused.

use candle_core::{Device, Tensor, Var};
use wft_adapter::{AdapterConfig, AdapterModel, MethodConfig, ModuleSpec, ShapeMap, WaveletFtConfig};
use wft_candle::models::vit::{self, Config, Vit};
use wft_candle::{Adaptable, Error, Tuning, Weights};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn pixels(batch: usize, side: usize, seed: u64) -> R<Tensor> {
    let mut g = wft_adapter::Mt19937::new(seed);
    let v: Vec<f32> = (0..batch * 3 * side * side).map(|_| g.next_normal() as f32).collect();
    Ok(Tensor::from_vec(v, (batch, 3, side, side), &Device::Cpu)?)
}

fn adapters(config: &Config) -> R<AdapterModel> {
    let shapes = ShapeMap::new("tiny-vit", config.tensor_shapes());
    let method = MethodConfig::WaveletFt(WaveletFtConfig {
        n_frequency: 40,
        scaling: 5.0,
        ..Default::default()
    });
    // The patch embedding's convolution too (`projection`).
    let targets = ModuleSpec::Names(vec!["query".into(), "value".into(), "fc2".into(), "projection".into()]);
    let mut model = AdapterModel::new_for_shapes(AdapterConfig::new(method, targets), &shapes, 1)?;
    let mut g = wft_adapter::Mt19937::new(3);
    for m in model.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.05 * g.next_normal()) as f32);
    }
    Ok(model)
}

#[test]
fn tiny_vit_runs_at_any_whole_patch_grid() -> R {
    let config = Config::tiny();
    let weights = config.random_weights(5)?;
    let vit = Vit::new(&config, &weights, Tuning::Frozen)?;
    // The trained 4 × 4 grid, a smaller and a larger one, and a non-square one.
    for (h, w) in [(16, 16), (8, 8), (28, 28), (8, 20)] {
        let x = Tensor::from_vec(
            pixels(2, h.max(w), 1)?
                .flatten_all()?
                .narrow(0, 0, 2 * 3 * h * w)?
                .to_vec1::<f32>()?,
            (2, 3, h, w),
            &Device::Cpu,
        )?;
        let hidden = vit.forward(&x)?;
        assert_eq!(hidden.dims(), &[2, 1 + (h / 4) * (w / 4), 32], "{h} × {w}");
        assert_eq!(vit::cls(&hidden)?.dims(), &[2, 32]);
        assert_eq!(vit::mean_patch(&hidden)?.dims(), &[2, 32]);
    }
    // Sides that are not whole patches, and other channel counts, are refused.
    for dims in [(1, 3, 15, 16), (1, 1, 16, 16), (1, 3, 0, 16)] {
        let x = Tensor::zeros(dims, candle_core::DType::F32, &Device::Cpu)?;
        assert!(matches!(vit.forward(&x), Err(Error::Shape { .. })), "{dims:?}");
    }
    // A row of each image's own batch does not depend on the others.
    let x = pixels(3, 16, 2)?;
    let all = vit.forward(&x)?;
    let one = vit.forward(&x.narrow(0, 1, 1)?)?;
    let diff = (all.narrow(0, 1, 1)? - one)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 1e-5, "{diff}");
    Ok(())
}

#[test]
fn weights_that_do_not_fit_are_refused() -> R {
    let config = Config::tiny();
    let weights = config.random_weights(5)?;
    let mut missing = weights.tensors().clone();
    missing.remove("encoder.layer.1.mlp.fc1.bias");
    assert!(matches!(
        Vit::new(&config, &Weights::from_tensors(missing), Tuning::Frozen),
        Err(Error::MissingTensor(n)) if n.contains("fc1.bias")
    ));
    let mut misshaped = weights.tensors().clone();
    misshaped.insert(
        "embeddings.position_embeddings".into(),
        Tensor::zeros((1, 10, 32), candle_core::DType::F32, &Device::Cpu)?,
    );
    assert!(matches!(
        Vit::new(&config, &Weights::from_tensors(misshaped), Tuning::Frozen),
        Err(Error::Shape { .. })
    ));
    let json = config.to_json()?;
    assert!(json.contains("\"model_type\": \"dinov2\""));
    let back: Config = serde_json::from_str(&json)?;
    assert_eq!(back, config);
    Ok(())
}

/// ∂(a loss on the CLS token)/∂c of the adapted patch convolution and of an
/// adapted projection, and ∂/∂pixels (through the patch convolution and the
/// resized position embeddings, at a 6 × 6 grid), against central
/// differences.
#[test]
fn adapted_vit_gradients_match_central_differences() -> R {
    let config = Config::tiny();
    let weights = config.random_weights(7)?;
    let model = adapters(&config)?;
    assert_eq!(model.modules().len(), 3 * config.num_hidden_layers + 1);
    assert_eq!(
        model.layout(vit::PATCH_EMBEDDING),
        wft_adapter::WeightLayout::Conv2d { kernel: [4, 4] }
    );
    let vit = Vit::new(&config, &weights, Tuning::Adapters(&model))?;
    assert_eq!(vit.linears().len(), 6 * config.num_hidden_layers + 1);
    let x = Var::from_tensor(&pixels(2, 24, 4)?)?;
    let probe = pixels(1, 8, 9)?.flatten_all()?.narrow(0, 0, 2 * 32)?.reshape((2, 32))?;
    let loss_of = |x: &Tensor| -> R<Tensor> {
        let hidden = vit.forward(x)?;
        let f = (vit::cls(&hidden)? + vit::mean_patch(&hidden)?)?;
        Ok((f * &probe)?.sum_all()?)
    };
    let grads = loss_of(x.as_tensor())?.backward()?;
    let h = 1e-2f32;
    let (first, _) = &vit.named_vars()[0];
    assert_eq!(first, vit::PATCH_EMBEDDING);
    for (path, var) in [vit.named_vars()[0].clone(), vit.named_vars()[2].clone()] {
        let grad = grads.get(var.as_tensor()).ok_or("no gradient")?.to_vec1::<f32>()?;
        let base = var.as_tensor().to_vec1::<f32>()?;
        let scale = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "{path}: zero gradient");
        let mut worst = 0f32;
        for k in [0, 7, 19, 39] {
            let mut p = base.clone();
            p[k] += h;
            var.set(&Tensor::from_vec(p.clone(), base.len(), &Device::Cpu)?)?;
            let up = loss_of(x.as_tensor())?.to_scalar::<f32>()?;
            p[k] -= 2.0 * h;
            var.set(&Tensor::from_vec(p, base.len(), &Device::Cpu)?)?;
            let down = loss_of(x.as_tensor())?.to_scalar::<f32>()?;
            worst = worst.max(((up - down) / (2.0 * h) - grad[k]).abs() / scale);
        }
        var.set(&Tensor::from_vec(base.clone(), base.len(), &Device::Cpu)?)?;
        assert!(worst < 2e-2, "{path}: relative error {worst}");
    }
    let gx = grads
        .get(x.as_tensor())
        .ok_or("no input gradient")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let x0 = x.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let scale = gx.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut worst = 0f32;
    for k in [3, 100, 577, 1200, 3000] {
        let shifted = |d: f32| -> R<f32> {
            let mut e = x0.clone();
            e[k] += d;
            Ok(loss_of(&Tensor::from_vec(e, x.as_tensor().shape(), &Device::Cpu)?)?.to_scalar::<f32>()?)
        };
        worst = worst.max(((shifted(h)? - shifted(-h)?) / (2.0 * h) - gx[k]).abs() / scale);
    }
    assert!(worst < 2e-2, "input gradient: relative error {worst}");
    Ok(())
}

/// Under full fine-tuning the trained position embeddings get their
/// gradient through the bicubic resize (it is two matrix products), checked
/// against central differences on a few entries.
#[test]
fn resized_position_embeddings_receive_gradients() -> R {
    let config = Config::tiny();
    let weights = config.random_weights(8)?;
    let vit = Vit::new(&config, &weights, Tuning::Full)?;
    let (_, pos) = vit
        .named_vars()
        .iter()
        .find(|(n, _)| n == "embeddings.position_embeddings")
        .ok_or("no position variable")?
        .clone();
    let x = pixels(2, 24, 6)?;
    let loss_of = || -> R<f32> { Ok(vit::cls(&vit.forward(&x)?)?.sqr()?.sum_all()?.to_scalar::<f32>()?) };
    let hidden = vit.forward(&x)?;
    let grads = vit::cls(&hidden)?.sqr()?.sum_all()?.backward()?;
    let g = grads
        .get(pos.as_tensor())
        .ok_or("no position gradient")?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let base = pos.as_tensor().flatten_all()?.to_vec1::<f32>()?;
    let scale = g.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 0.0);
    let h = 1e-2f32;
    let mut worst = 0f32;
    // The CLS position (0..32) and grid entries.
    for k in [3, 40, 200, 500] {
        let set = |d: f32| -> R<f32> {
            let mut p = base.clone();
            p[k] += d;
            pos.set(&Tensor::from_vec(p, pos.as_tensor().shape(), &Device::Cpu)?)?;
            loss_of()
        };
        let numeric = (set(h)? - set(-h)?) / (2.0 * h);
        worst = worst.max((numeric - g[k]).abs() / scale);
    }
    assert!(worst < 2e-2, "relative error {worst}");
    Ok(())
}

/// Image classification on the tiny ViT: a few steps of WaveletFT on the
/// projections plus the head lower the loss; the adapter folder and the
/// head saved and loaded back, then the folder merged into the checkpoint,
/// give the same logits, for both poolings.
#[test]
fn image_classifier_trains_saves_loads_and_merges_to_the_same_logits() -> R {
    use candle_nn::Optimizer;
    use wft_adapter::TensorFile;
    use wft_candle::{ImageClassifier, Pooling};
    let config = Config::tiny();
    let weights = config.random_weights(11)?;
    let dir = tempfile::tempdir()?;
    let base_path = dir.path().join("model.safetensors");
    weights.save(&base_path)?;
    let base = TensorFile::open(&base_path)?;
    let x = pixels(8, 16, 12)?;
    // Labels the images carry: the sign of their mean red value.
    let red = x.narrow(1, 0, 1)?.flatten_from(1)?.mean(1)?.to_vec1::<f32>()?;
    let labels: Vec<u32> = red.iter().map(|&r| u32::from(r > 0.0)).collect();
    let labels = Tensor::from_vec(labels, 8, &Device::Cpu)?;
    for pooling in [Pooling::Cls, Pooling::ClsAndMeanPatch] {
        let template = adapters(&config)?;
        let clf = ImageClassifier::new(Vit::new(&config, &weights, Tuning::Adapters(&template))?, pooling, 2, 0)?;
        let mut opt = candle_nn::AdamW::new_lr(clf.vars(), 0.02)?;
        let first = candle_nn::loss::cross_entropy(&clf.logits(&x)?, &labels)?.to_scalar::<f32>()?;
        for _ in 0..15 {
            opt.backward_step(&candle_nn::loss::cross_entropy(&clf.logits(&x)?, &labels)?)?;
        }
        let last = candle_nn::loss::cross_entropy(&clf.logits(&x)?, &labels)?.to_scalar::<f32>()?;
        assert!(
            last < 0.8 * first,
            "{pooling:?}: the loss fell from {first} to only {last}"
        );
        let want = clf.logits(&x)?;
        let trained = clf.adapters(&template)?;
        let folder = dir.path().join(format!("adapter-{pooling:?}"));
        trained.save(&folder)?;
        let head = dir.path().join(format!("head-{pooling:?}.safetensors"));
        clf.save_head(&head)?;
        let loaded = AdapterModel::load(&folder, Some(&base))?;
        let again =
            ImageClassifier::with_saved_head(Vit::new(&config, &weights, Tuning::Adapters(&loaded))?, pooling, &head)?;
        let d = (&want - again.logits(&x)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-6, "{pooling:?}: reloaded logits off by {d}");
        let merged = dir.path().join(format!("merged-{pooling:?}.safetensors"));
        loaded.merge(&base, &merged, &mut |_, _| {})?;
        let plain = ImageClassifier::with_saved_head(
            Vit::new(&config, &Weights::load(&merged)?, Tuning::Frozen)?,
            pooling,
            &head,
        )?;
        let d = (&want - plain.logits(&x)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(d < 1e-5, "{pooling:?}: merged logits off by {d}");
        // A head of the other pooling's width does not fit.
        let other = match pooling {
            Pooling::Cls => Pooling::ClsAndMeanPatch,
            Pooling::ClsAndMeanPatch => Pooling::Cls,
        };
        assert!(matches!(
            ImageClassifier::with_saved_head(Vit::new(&config, &weights, Tuning::Frozen)?, other, &head),
            Err(Error::Shape { .. })
        ));
    }
    Ok(())
}

/// A mixed-adapter batch of images (on A, on no adapter, on B; the patch
/// embedding adapted too) gives each image what the model built with its
/// adapter gives it alone.
#[test]
fn mixed_adapter_batches_equal_each_adapter_alone() -> R {
    let config = Config::tiny();
    let weights = config.random_weights(4)?;
    let a = adapters(&config)?;
    let mut b = a.clone();
    let mut g = wft_adapter::Mt19937::new(9);
    for m in b.modules_mut().values_mut() {
        m.as_adapter_mut()
            .params_mut()
            .iter_mut()
            .for_each(|p| *p = (0.05 * g.next_normal()) as f32);
    }
    let side = config.patch_size * config.grid();
    let x = pixels(3, side, 5)?;
    let routes = vec![Some(0), None, Some(1)];
    let mix = wft_candle::AdapterMix::new(vec![&a, &b], routes.clone())?;
    let served = Vit::new(&config, &weights, Tuning::Frozen)?;
    let mixed = served.forward_mixed(&x, &mix)?;
    for (r, route) in routes.iter().enumerate() {
        let alone = match route {
            Some(0) => Vit::new(&config, &weights, Tuning::Adapters(&a))?,
            Some(_) => Vit::new(&config, &weights, Tuning::Adapters(&b))?,
            None => Vit::new(&config, &weights, Tuning::Frozen)?,
        };
        let want = alone.forward(&x.narrow(0, r, 1)?)?;
        let diff = (mixed.narrow(0, r, 1)? - &want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "image {r} ({route:?}): {diff}");
    }
    Ok(())
}
