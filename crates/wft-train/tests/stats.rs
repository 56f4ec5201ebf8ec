//! Summaries and paired tests against SciPy on the fixed samples of
//! `scripts/make_stats_references.py` (`tests/fixtures/stats.json`).

use serde_json::Value;
use wft_train::stats::{paired_t, summary, wilcoxon};

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

fn close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: {got} against SciPy's {want}");
}

#[test]
fn statistics_match_scipy() -> Result<(), Box<dyn std::error::Error>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/stats.json"))?;
    let fixture: Value = serde_json::from_str(&text)?;
    let cases = fixture["cases"].as_array().ok_or("no cases")?;
    let (mut significant, mut wilcoxons) = (0, 0);
    for (i, c) in cases.iter().enumerate() {
        let (a, b) = (floats(&c["a"]), floats(&c["b"]));
        let s = summary(&a);
        let num = |v: &Value| v.as_f64().ok_or(format!("case {i}: not a number"));
        close(s.mean, num(&c["mean_a"])?, &format!("case {i} mean"));
        close(s.std, num(&c["std_a"])?, &format!("case {i} std"));
        // statrs' inverse t CDF is iterative: agree to 1e-6 relative.
        let ci = num(&c["ci95_a"])?;
        assert!(
            (s.ci95 - ci).abs() <= 1e-6 * ci,
            "case {i} ci95: {} against {ci}",
            s.ci95
        );
        let t = paired_t(&a, &b);
        close(t.statistic, num(&c["ttest_rel"]["statistic"])?, &format!("case {i} t"));
        let p = num(&c["ttest_rel"]["p"])?;
        assert!(
            (t.p - p).abs() <= 1e-9 + 1e-7 * p,
            "case {i} t-test p: {} against {p}",
            t.p
        );
        significant += usize::from(p < 0.05);
        if !c["wilcoxon"].is_null() {
            let w = wilcoxon(&a, &b);
            close(w.statistic, num(&c["wilcoxon"]["statistic"])?, &format!("case {i} W"));
            close(w.p, num(&c["wilcoxon"]["p"])?, &format!("case {i} Wilcoxon p"));
            wilcoxons += 1;
        }
    }
    // Coverage: both outcomes of the t-test, and the exact Wilcoxon test.
    assert!(
        significant > 0 && significant < cases.len(),
        "{significant} of {} significant",
        cases.len()
    );
    assert!(wilcoxons >= 10, "only {wilcoxons} Wilcoxon cases");
    Ok(())
}
