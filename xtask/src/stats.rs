//! The statistics of a method comparison: mean ± standard deviation with a
//! 95% confidence interval per cell, and paired tests between two methods
//! run on the same seeds (the same data order), checked against SciPy
//! (`tests/stats.rs`, references from `scripts/make_stats_references.py`).
//!
//! * [`paired_t`]: the two-sided paired t-test (`scipy.stats.ttest_rel`);
//! * [`wilcoxon`]: the two-sided Wilcoxon signed-rank test, exact over all
//!   sign patterns (`scipy.stats.wilcoxon(method="exact")` where there are
//!   no ties); with n pairs its smallest p-value is 2 / 2ⁿ, so 5 seeds can
//!   never reach 5% with it;
//! * [`paired_bootstrap`]: a paired bootstrap over test examples of the
//!   difference in accuracy (Koehn, 2004).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean, sample standard deviation and the t-based 95% confidence
/// interval of the mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); 0 for one value.
    pub std: f64,
    /// Half-width of the 95% confidence interval (`t₀.₉₇₅,ₙ₋₁ · std / √n`);
    /// infinite for one value, NaN for none.
    pub ci95: f64,
}

/// [`Summary`] of `values`.
pub fn summary(values: &[f64]) -> Summary {
    let n = values.len();
    if n == 0 {
        return Summary {
            n,
            mean: f64::NAN,
            std: f64::NAN,
            ci95: f64::NAN,
        };
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Summary {
            n,
            mean,
            std: 0.0,
            ci95: f64::INFINITY,
        };
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    Summary {
        n,
        mean,
        std,
        ci95: t_quantile(0.975, (n - 1) as f64) * std / (n as f64).sqrt(),
    }
}

/// The `p` quantile of Student's t with `dof` degrees of freedom.
fn t_quantile(p: f64, dof: f64) -> f64 {
    StudentsT::new(0.0, 1.0, dof).map_or(f64::NAN, |t| t.inverse_cdf(p))
}

/// A test's statistic and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Test {
    /// t for the t-test, the smaller rank sum for Wilcoxon, the mean
    /// difference for the bootstrap.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// What a comparison says of the first method against the second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Significantly higher.
    Better,
    /// No significant difference.
    Tied,
    /// Significantly lower.
    Worse,
}

impl Verdict {
    /// The verdict of a test at level `alpha` on a mean difference
    /// `a − b`.
    pub fn of(test: Test, mean_diff: f64, alpha: f64) -> Verdict {
        // A NaN p-value (too few pairs) is no evidence.
        if test.p.is_nan() || test.p >= alpha {
            Verdict::Tied
        } else if mean_diff > 0.0 {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Better => "better",
            Verdict::Tied => "tied",
            Verdict::Worse => "worse",
        })
    }
}

/// The two-sided paired t-test of `a` against `b` (equal lengths ≥ 2;
/// pairs beyond the shorter are ignored). Identical samples give t = 0,
/// p = 1; a constant non-zero difference gives p = 0.
pub fn paired_t(a: &[f64], b: &[f64]) -> Test {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let n = d.len();
    if n < 2 {
        return Test {
            statistic: f64::NAN,
            p: f64::NAN,
        };
    }
    let s = summary(&d);
    if s.std == 0.0 {
        return if s.mean == 0.0 {
            Test { statistic: 0.0, p: 1.0 }
        } else {
            Test {
                statistic: s.mean.signum() * f64::INFINITY,
                p: 0.0,
            }
        };
    }
    let t = s.mean / (s.std / (n as f64).sqrt());
    let p = StudentsT::new(0.0, 1.0, (n - 1) as f64).map_or(f64::NAN, |dist| 2.0 * dist.cdf(-t.abs()));
    Test {
        statistic: t,
        p: p.min(1.0),
    }
}

/// The two-sided Wilcoxon signed-rank test of `a` against `b`: zero
/// differences dropped, tied |differences| given their average rank, and
/// the p-value exact over all 2ⁿ sign patterns (n ≤ 24 non-zero pairs;
/// more give NaN). The statistic is the smaller of the two rank sums.
pub fn wilcoxon(a: &[f64], b: &[f64]) -> Test {
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).filter(|d| *d != 0.0).collect();
    let n = d.len();
    if n == 0 {
        return Test { statistic: 0.0, p: 1.0 };
    }
    if n > 24 {
        return Test {
            statistic: f64::NAN,
            p: f64::NAN,
        };
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| d[i].abs().total_cmp(&d[j].abs()));
    let mut ranks = vec![0f64; n];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[order[j + 1]].abs() == d[order[i]].abs() {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&k| ranks[k] = r);
        i = j + 1;
    }
    let total: f64 = ranks.iter().sum();
    let plus: f64 = ranks.iter().zip(&d).filter(|(_, d)| **d > 0.0).map(|(r, _)| r).sum();
    let stat = plus.min(total - plus);
    // Every sign pattern is equally likely under the null; count those whose
    // smaller rank sum is at most the observed one.
    let extreme = (0u32..1 << n)
        .filter(|mask| {
            let s: f64 = (0..n).filter(|k| mask & (1 << k) != 0).map(|k| ranks[k]).sum();
            s.min(total - s) <= stat + 1e-9
        })
        .count();
    Test {
        statistic: stat,
        p: (extreme as f64 / f64::from(1u32 << n)).min(1.0),
    }
}

/// A paired bootstrap over test examples: `a[i]` and `b[i]` say whether
/// each method got example `i` right. The examples are resampled with
/// replacement `resamples` times (seeded); the two-sided p-value is twice
/// the smaller fraction of resamples in which the difference in accuracy
/// is ≤ 0 or ≥ 0 (capped at 1). The statistic is the observed difference
/// `acc(a) − acc(b)`.
pub fn paired_bootstrap(a: &[bool], b: &[bool], resamples: usize, seed: u64) -> Test {
    let n = a.len().min(b.len());
    if n == 0 || resamples == 0 {
        return Test {
            statistic: f64::NAN,
            p: f64::NAN,
        };
    }
    let diff: Vec<i32> = a.iter().zip(b).map(|(&x, &y)| i32::from(x) - i32::from(y)).collect();
    let observed = diff.iter().sum::<i32>() as f64 / n as f64;
    let mut g = StdRng::seed_from_u64(seed);
    let (mut le, mut ge) = (0usize, 0usize);
    for _ in 0..resamples {
        let s: i64 = (0..n).map(|_| i64::from(diff[g.random_range(0..n)])).sum();
        le += usize::from(s <= 0);
        ge += usize::from(s >= 0);
    }
    let p = (2.0 * le.min(ge) as f64 / resamples as f64).min(1.0);
    Test { statistic: observed, p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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

    #[test]
    fn bootstrap_sees_a_clear_difference_and_not_a_null_one() {
        let a: Vec<bool> = (0..400).map(|i| i % 10 < 8).collect();
        let b: Vec<bool> = (0..400).map(|i| i % 10 < 6).collect();
        let t = paired_bootstrap(&a, &b, 2000, 1);
        assert!((t.statistic - 0.2).abs() < 1e-12 && t.p < 0.01, "{t:?}");
        assert_eq!(paired_bootstrap(&a, &a, 500, 1).p, 1.0);
        // Disagreeing on six examples, three each way: no evidence either way.
        let c: Vec<bool> = (0..400)
            .map(|i| if [0, 1, 2, 8, 9, 18].contains(&i) { !a[i] } else { a[i] })
            .collect();
        assert!(paired_bootstrap(&a, &c, 2000, 2).p > 0.3);
    }

    #[test]
    fn degenerate_inputs() {
        assert_eq!(paired_t(&[1.0, 2.0], &[1.0, 2.0]).p, 1.0);
        assert_eq!(paired_t(&[2.0, 3.0, 4.0], &[1.0, 2.0, 3.0]).p, 0.0);
        assert!(paired_t(&[1.0], &[0.0]).p.is_nan());
        assert_eq!(wilcoxon(&[1.0, 2.0], &[1.0, 2.0]).p, 1.0);
        assert!(summary(&[]).mean.is_nan());
        assert_eq!(summary(&[3.0]).std, 0.0);
        assert_eq!(
            Verdict::of(
                Test {
                    statistic: 1.0,
                    p: f64::NAN
                },
                1.0,
                0.05
            ),
            Verdict::Tied
        );
    }
}
