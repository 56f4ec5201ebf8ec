//! BLEU, chrF and ROUGE-L against sacrebleu and rouge-score on the fixed
//! cases of `scripts/make_metric_references.py` (`tests/fixtures/metrics.json`).

use serde_json::Value;
use wft_train::metrics::{bleu, chrf, rouge_l, rouge_l_f};

fn strs(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn metrics_match_sacrebleu_and_rouge_score() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/metrics.json"))?;
    let fixture: Value = serde_json::from_str(&text)?;
    let cases = fixture["cases"].as_array().ok_or("no cases")?;
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let (hyps, refs) = (strs(&case["hyps"]), strs(&case["refs"]));
        assert_eq!(hyps.len(), refs.len(), "{name}");
        let want = |k: &str| case[k].as_f64().ok_or(format!("{name}: no {k}"));
        let (b, c, r) = (bleu(&hyps, &refs), chrf(&hyps, &refs), rouge_l(&hyps, &refs));
        assert!(
            (b - want("bleu")?).abs() < 1e-9,
            "{name}: BLEU {b} against sacrebleu's {}",
            want("bleu")?
        );
        assert!(
            (c - want("chrf")?).abs() < 1e-9,
            "{name}: chrF {c} against sacrebleu's {}",
            want("chrf")?
        );
        assert!(
            (r - want("rouge_l_mean")?).abs() < 1e-9,
            "{name}: ROUGE-L {r} against {}",
            want("rouge_l_mean")?
        );
        let per = case["rouge_l"].as_array().ok_or("no per-example ROUGE-L")?;
        for ((h, t), w) in hyps.iter().zip(&refs).zip(per) {
            let w = w.as_f64().ok_or("not a number")?;
            assert!((100.0 * rouge_l_f(h, t) - w).abs() < 1e-9, "{name}: {h:?} / {t:?}");
        }
        checked += 1;
    }
    // Coverage: the hand-written edge cases and the perturbed Debian synopses.
    assert!(checked >= 13, "only {checked} cases");
    let zero = cases.iter().filter(|c| c["bleu"].as_f64() == Some(0.0)).count();
    assert!(zero >= 2 && zero < checked, "cases with BLEU 0: {zero}");
    Ok(())
}
