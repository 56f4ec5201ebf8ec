//! The NLU family's report: the paper-shaped summary, per-task tables with
//! confidence intervals, the paired tests and their verdicts, the rate
//! sweeps, and one plot per task.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::Result;
use crate::reproduce::{Machine, Point, plot_points};
use crate::stats::{Summary, Test, Verdict, paired_bootstrap, paired_t, summary, wilcoxon};
use crate::suite::{TaskResult, family_of};

/// Significance level of every verdict.
const ALPHA: f64 = 0.05;
/// Bootstrap resamples over test examples.
const RESAMPLES: usize = 2000;

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn test_scores(runs: &[Value]) -> Vec<f64> {
    runs.iter().map(|v| 100.0 * num(v, "test_acc")).collect()
}

fn val_scores(runs: &[Value]) -> Vec<f64> {
    runs.iter().map(|v| 100.0 * num(v, "val_acc")).collect()
}

/// Every seed's per-example correctness, seed after seed.
fn pooled_correct(runs: &[Value]) -> Vec<bool> {
    runs.iter()
        .flat_map(|v| {
            v["test_correct"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_bool).collect::<Vec<_>>())
                .unwrap_or_default()
        })
        .collect()
}

fn trainable(runs: &[Value]) -> f64 {
    runs.first().map_or(f64::NAN, |v| num(v, "trainable_encoder"))
}

/// One comparison of two methods on a task.
struct Comparison {
    a: String,
    b: String,
    diff: f64,
    t: Test,
    wilcoxon: Test,
    bootstrap: Test,
    verdict: Verdict,
}

/// The runs of `a` and `b` on the seeds both have, in the same order.
fn common_seeds<'a>(a: &'a [Value], b: &'a [Value]) -> (Vec<Value>, Vec<Value>) {
    let seed = |v: &Value| v["config"]["seed"].as_u64();
    a.iter()
        .filter_map(|x| b.iter().find(|y| seed(y) == seed(x)).map(|y| (x.clone(), y.clone())))
        .unzip()
}

fn compare(a: &(String, Vec<Value>), b: &(String, Vec<Value>)) -> Comparison {
    let (ra, rb) = common_seeds(&a.1, &b.1);
    let (a, b) = (&(a.0.clone(), ra), &(b.0.clone(), rb));
    let (sa, sb) = (test_scores(&a.1), test_scores(&b.1));
    let t = paired_t(&sa, &sb);
    let diff = summary(&sa).mean - summary(&sb).mean;
    Comparison {
        a: a.0.clone(),
        b: b.0.clone(),
        diff,
        t,
        wilcoxon: wilcoxon(&sa, &sb),
        bootstrap: paired_bootstrap(&pooled_correct(&a.1), &pooled_correct(&b.1), RESAMPLES, 17),
        verdict: Verdict::of(t, diff, ALPHA),
    }
}

/// The comparisons the issue asks for: every WaveletFT cell against LoRA
/// at the nearest parameter count (log scale), against LoRA r = 8, and
/// against FourierFT at the same n.
fn comparisons(r: &TaskResult) -> Vec<Comparison> {
    let find = |m: &str| r.runs.iter().find(|(n, _)| n == m);
    let loras: Vec<&(String, Vec<Value>)> = r.runs.iter().filter(|(m, _)| m.starts_with("lora-")).collect();
    let mut out = Vec::new();
    for w in r.runs.iter().filter(|(m, _)| m.starts_with("waveletft-")) {
        let p = trainable(&w.1);
        let nearest = loras.iter().min_by(|x, y| {
            let d = |l: &&&(String, Vec<Value>)| (trainable(&l.1).ln() - p.ln()).abs();
            d(x).total_cmp(&d(y))
        });
        let mut against: Vec<&(String, Vec<Value>)> = nearest.into_iter().copied().collect();
        if let Some(r8) = find("lora-r8")
            && !against.iter().any(|x| x.0 == r8.0)
        {
            against.push(r8);
        }
        let n = w.0.rsplit('-').next().unwrap_or("");
        if let Some(f) = find(&format!("fourierft-{n}")) {
            against.push(f);
        }
        out.extend(against.into_iter().map(|b| compare(w, b)));
    }
    out
}

fn p_text(p: f64) -> String {
    if p.is_nan() {
        "—".into()
    } else if p < 1e-3 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// A learning rate to three significant digits (an extended grid's steps
/// are not round numbers).
fn rate(lr: f64) -> String {
    let s = format!("{lr:.2e}");
    // 3.00e-2 → 3e-2, 3.30e-1 → 3.3e-1.
    match s.split_once('e') {
        Some((m, e)) => format!("{}e{e}", m.trim_end_matches('0').trim_end_matches('.')),
        None => s,
    }
}

/// The 95% interval of the mean, or a dash with fewer than two seeds.
fn interval(s: &Summary) -> String {
    if s.ci95.is_finite() {
        format!("{:.1}–{:.1}", s.mean - s.ci95, s.mean + s.ci95)
    } else {
        "—".into()
    }
}

fn cell(s: &Summary) -> String {
    format!("{:.1} ± {:.1}", s.mean, s.std)
}

pub(crate) fn nlu_report(
    results: &[TaskResult],
    docs: &Path,
    quick: bool,
    epochs: usize,
    batch: usize,
    family: &str,
) -> Result<String> {
    let Machine { date, cpu, cores } = Machine::now()?;
    let seeds = results.first().map_or(0, |r| r.seeds);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Generated {} on {cpu} ({cores} cores) by `cargo xtask reproduce --family {family}{}` from the runs cached in `{}`.\n",
        date.trim(),
        if quick { " --quick" } else { "" },
        if quick {
            "target/suite-quick/runs/"
        } else {
            "results/runs/"
        }
    );
    let _ = writeln!(
        s,
        "Model: {}, `query` and `value` adapted in every layer. Batch {batch}, {epochs} epoch(s) for every method, AdamW without weight decay, \
         linear warm-up (10%) then linear decay. {seeds} seeds per cell (`n` says how many are done; the seed fixes the head, the adapter's locations and the batch order, \
         so methods are paired by seed). Rates: each family's grid on one representative budget (seed 0, validation), then every other budget tries that rate and one grid step either side; \
         a choice at an edge extends the grid (the trials are listed under each task). Mean ± std over seeds; `95% CI` is the t interval of the mean. Verdicts: two-sided paired t-test over seeds at the {}% level; \
         the exact Wilcoxon signed-rank p (whose floor with n seeds is 2/2ⁿ: 0.0625 with 5, so it cannot reach 5%) and a paired bootstrap over (seed, test example) pairs \
         ({RESAMPLES} resamples) are given beside it.\n",
        match (family, quick) {
            ("vision", _) => "DINOv2 ViT-S/14 (12 layers, hidden 384; one learning rate for the head and the method)",
            (_, true) => "tiny random BERT (2 layers, hidden 32)",
            _ => "sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384)",
        },
        100.0 * ALPHA
    );
    // Tasks.
    let runs: usize = results
        .iter()
        .flat_map(|r| r.runs.iter().map(|(_, v)| v.len()))
        .sum::<usize>()
        + results.iter().map(|r| r.sweep.len()).sum::<usize>();
    let _ = writeln!(
        s,
        "{runs} runs so far (tuning trials included, seed-0 trials counted twice); a method appears once its family's rate is chosen, with the seeds done (`n`).\n"
    );
    s.push_str("| task | what | train / val / test | max tokens | head − full (val) | compute time |\n|---|---|---:|---:|---:|---:|\n");
    for r in results {
        let find = |m: &str| {
            r.runs
                .iter()
                .find(|(n, _)| n == m)
                .map(|(_, v)| summary(&val_scores(v)).mean)
        };
        let gap = match (find("head"), find("full")) {
            (Some(h), Some(f)) => format!("{:+.1}", h - f),
            _ => "—".into(),
        };
        let sizes = r
            .runs
            .first()
            .and_then(|(_, v)| v.first())
            .map_or("—".to_string(), |v| {
                format!(
                    "{} / {} / {}",
                    num(v, "train_examples"),
                    num(v, "val_examples"),
                    num(v, "test_examples")
                )
            });
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {gap} | {:.1} h |",
            r.task.name,
            r.task.what,
            sizes.replace("NaN", "?"),
            r.task.max_len,
            r.compute_secs / 3600.0
        );
    }
    // The summary, in the paper's shape.
    s.push_str("\n**Summary** (test accuracy, %, mean over seeds). Bold: the best cell of a column, only where it is significantly better than every other (paired t-test, 5%).\n\n");
    s.push_str("| method | trainable (encoder) |");
    for r in results {
        let _ = write!(s, " {} |", r.task.name);
    }
    s.push_str(" average |\n|---|---:|");
    s.push_str(&"---:|".repeat(results.len() + 1));
    s.push('\n');
    let mut methods: Vec<&String> = Vec::new();
    for (m, _) in results.iter().flat_map(|r| r.runs.iter()) {
        if !methods.contains(&m) {
            methods.push(m);
        }
    }
    let best: Vec<Option<&str>> = results
        .iter()
        .map(|r| {
            let top = r.runs.iter().max_by(|a, b| {
                summary(&test_scores(&a.1))
                    .mean
                    .total_cmp(&summary(&test_scores(&b.1)).mean)
            })?;
            let others: Vec<_> = r.runs.iter().filter(|o| o.0 != top.0).collect();
            let beats_all = !others.is_empty() && others.iter().all(|o| compare(top, o).verdict == Verdict::Better);
            beats_all.then_some(top.0.as_str())
        })
        .collect();
    for m in &methods {
        let mut row = format!("| {m} | {} |", trainable_text(results, m));
        let mut means = Vec::new();
        for (r, b) in results.iter().zip(&best) {
            match r.runs.iter().find(|(n, _)| n == *m) {
                Some((_, v)) => {
                    let mean = summary(&test_scores(v)).mean;
                    means.push(mean);
                    if *b == Some(m.as_str()) {
                        let _ = write!(row, " **{mean:.1}** |");
                    } else {
                        let _ = write!(row, " {mean:.1} |");
                    }
                }
                None => row.push_str(" — |"),
            }
        }
        if means.len() == results.len() {
            let _ = writeln!(row, " {:.1} |", means.iter().sum::<f64>() / means.len() as f64);
        } else {
            row.push_str(" — |\n");
        }
        s.push_str(&row);
    }
    // Per task.
    for r in results {
        let _ = writeln!(s, "\n### {}\n\n{}\n", r.task.name, capitalised(r.task.what));
        s.push_str("| method | trainable (encoder + head) | n | test accuracy | 95% CI | val accuracy | lr |\n|---|---:|---:|---:|---:|---:|---:|\n");
        for (m, v) in &r.runs {
            let t = summary(&test_scores(v));
            let lr = v
                .first()
                .map_or(f64::NAN, |x| x["config"]["lr"].as_f64().unwrap_or(f64::NAN));
            let _ = writeln!(
                s,
                "| {m} | {} + {} | {} | {} % | {} | {} % | {} |",
                trainable(v),
                v.first().map_or(f64::NAN, |x| num(x, "trainable_head")),
                v.len(),
                cell(&t),
                interval(&t),
                cell(&summary(&val_scores(v))),
                rate(lr)
            );
        }
        let cmp = comparisons(r);
        if !cmp.is_empty() {
            s.push_str("\n| WaveletFT cell | against | difference (points) | paired t p | Wilcoxon p | bootstrap p | verdict |\n|---|---|---:|---:|---:|---:|---|\n");
            for c in &cmp {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:+.2} | {} | {} | {} | {} |",
                    c.a,
                    c.b,
                    c.diff,
                    p_text(c.t.p),
                    p_text(c.wilcoxon.p),
                    p_text(c.bootstrap.p),
                    c.verdict
                );
            }
            let count = |v: Verdict| cmp.iter().filter(|c| c.verdict == v).count();
            let _ = writeln!(
                s,
                "\nVerdicts: {} better, {} tied, {} worse.",
                count(Verdict::Better),
                count(Verdict::Tied),
                count(Verdict::Worse)
            );
        }
        s.push_str("\nLearning-rate trials (seed 0, validation accuracy):");
        for (m, lr, acc) in &r.sweep {
            let chosen = r
                .rates
                .get(m.as_str())
                .or_else(|| r.rates.get(family_of(m)))
                .is_some_and(|l| l == lr);
            let _ = write!(
                s,
                " {m} {}{}: {:.1}%;",
                rate(*lr),
                if chosen { " (chosen)" } else { "" },
                100.0 * acc
            );
        }
        s.pop();
        s.push_str(".\n");
        let file = format!("suite-{}.svg", r.task.name);
        let pts: Vec<Point> = r
            .runs
            .iter()
            .map(|(m, v)| {
                let t = summary(&test_scores(v));
                Point {
                    label: format!("{m}: {:.1} ± {:.1}", t.mean, t.std),
                    x: (trainable(v) + v.first().map_or(0.0, |x| num(x, "trainable_head"))).max(1.0),
                    y: t.mean,
                    err: t.std,
                }
            })
            .collect();
        plot_points(
            &pts,
            &format!("{}: test accuracy (mean ± std over seeds)", r.task.name),
            "trainable parameters (encoder + head, log scale)",
            "test accuracy (%)",
            &docs.join(&file),
        )?;
        let _ = writeln!(s, "\n![{}: accuracy against trainable parameters]({file})", r.task.name);
    }
    Ok(s)
}

fn trainable_text(results: &[TaskResult], m: &str) -> String {
    results
        .first()
        .and_then(|r| r.runs.iter().find(|(n, _)| n == m))
        .map_or("—".into(), |(_, v)| format!("{}", trainable(v)))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next().map_or(String::new(), |f| f.to_uppercase().chain(c).collect())
}

/// A decoder run's scores on one of its evaluation files (0: validation,
/// 1: test).
fn lm_eval(v: &Value, file: usize) -> &Value {
    &v["eval"][file]["report"]
}

fn lm_scores(runs: &[Value], file: usize, key: &str) -> Vec<f64> {
    runs.iter()
        .map(|v| {
            let r = lm_eval(v, file);
            if key == "loss" {
                num(r, "loss")
            } else {
                num(&r["overall"], key)
            }
        })
        .collect()
}

/// The primary score of a decoder task's test split: ROUGE-L for free
/// text; for the instruction set, the mean over kinds of exact match (label
/// answers: section, kind) or ROUGE-L (free text).
fn lm_primary(v: &Value) -> f64 {
    let r = lm_eval(v, 1);
    match r["by_kind"].as_object() {
        Some(kinds) if !kinds.is_empty() => {
            let scores: Vec<f64> = kinds.iter().map(|(k, s)| kind_score(k, s)).collect();
            scores.iter().sum::<f64>() / scores.len() as f64
        }
        _ => num(&r["overall"], "rouge_l"),
    }
}

/// Exact match for the label-like kinds, ROUGE-L for the free-text ones.
fn kind_score(kind: &str, s: &Value) -> f64 {
    if kind.starts_with("section") || kind.starts_with("kind") {
        num(s, "exact_match")
    } else {
        num(s, "rouge_l")
    }
}

/// The decoder families' report: per task, the generation scores with
/// their spread, WaveletFT against LoRA r = 8 and FourierFT at the same n
/// on the primary score, the per-kind table for instructions, the rate
/// trials and a plot.
pub(crate) fn lm_report(
    results: &[TaskResult],
    docs: &Path,
    quick: bool,
    epochs: usize,
    batch: usize,
    family: &str,
) -> Result<String> {
    let Machine { date, cpu, cores } = Machine::now()?;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Generated {date} on {cpu} ({cores} cores) by `cargo xtask reproduce --family {family}{}` from the runs cached in `{}`.\n",
        if quick { " --quick" } else { "" },
        if quick {
            "target/suite-quick/runs/"
        } else {
            "results/runs/"
        }
    );
    let _ = writeln!(
        s,
        "Model: SmolLM2-135M-Instruct (GGUF Q4_1, de-quantized), `q_proj` and `v_proj` adapted in every layer (`-all`: every linear layer). \
         Batch {batch}, {epochs} epoch(s), AdamW, linear warm-up and decay, at most 96 tokens per example, the loss on completion tokens only. \
         Rates: two trials per family on the validation loss (seed 0). Test scores: greedy decoding (at most {} new tokens), corpus BLEU and chrF \
         (sacrebleu's defaults) and mean ROUGE-L F (rouge-score), all computed in Rust and checked against those packages. \
         Mean ± std over seeds; verdicts by the paired t-test over seeds at 5% on the primary score ({}).\n",
        if quick { 8 } else { 40 },
        if family == "instruct" {
            "the mean over instruction kinds of exact match (section, program or library) or ROUGE-L (summaries, descriptions)"
        } else {
            "ROUGE-L"
        }
    );
    for r in results {
        let _ = writeln!(s, "### {}\n\n{}\n", r.task.name, capitalised(r.task.what));
        s.push_str("| method | trainable | n | val loss | test loss | BLEU | chrF | ROUGE-L | primary (95% CI) | lr |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for (m, v) in &r.runs {
            let p = summary(&v.iter().map(lm_primary).collect::<Vec<_>>());
            let f = |file, key| cell(&summary(&lm_scores(v, file, key)));
            let loss = |file| {
                let t = summary(&lm_scores(v, file, "loss"));
                format!("{:.3} ± {:.3}", t.mean, t.std)
            };
            let _ = writeln!(
                s,
                "| {m} | {} | {} | {} | {} | {} | {} | {} | {:.1} ({}) | {} |",
                v.first().map_or(f64::NAN, |x| num(x, "params")),
                v.len(),
                loss(0),
                loss(1),
                f(1, "bleu"),
                f(1, "chrf"),
                f(1, "rouge_l"),
                p.mean,
                interval(&p),
                v.first()
                    .map_or(f64::NAN, |x| x["config"]["lr"].as_f64().unwrap_or(f64::NAN))
            );
        }
        let find = |m: &str| r.runs.iter().find(|(n, _)| n == m);
        let mut rows = Vec::new();
        for w in r.runs.iter().filter(|(m, _)| m.starts_with("waveletft-")) {
            let all = w.0.ends_with("-all");
            let lora = if all { "lora-r8-all" } else { "lora-r8" };
            let n = w.0.trim_end_matches("-all").rsplit('-').next().unwrap_or("");
            for b in [find(lora), if all { None } else { find(&format!("fourierft-{n}")) }]
                .into_iter()
                .flatten()
            {
                let (ra, rb) = common_seeds(&w.1, &b.1);
                let (pa, pb): (Vec<f64>, Vec<f64>) =
                    (ra.iter().map(lm_primary).collect(), rb.iter().map(lm_primary).collect());
                let t = paired_t(&pa, &pb);
                let diff = summary(&pa).mean - summary(&pb).mean;
                rows.push(format!(
                    "| {} | {} | {diff:+.2} | {} | {} | {} |",
                    w.0,
                    b.0,
                    p_text(t.p),
                    p_text(wilcoxon(&pa, &pb).p),
                    Verdict::of(t, diff, ALPHA)
                ));
            }
        }
        if !rows.is_empty() {
            s.push_str("\n| WaveletFT cell | against | difference (points) | paired t p | Wilcoxon p | verdict |\n|---|---|---:|---:|---:|---|\n");
            s.push_str(&rows.join("\n"));
            s.push('\n');
        }
        // Per instruction kind.
        let kinds: Vec<String> = r
            .runs
            .first()
            .and_then(|(_, v)| v.first())
            .and_then(|v| {
                lm_eval(v, 1)["by_kind"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
            })
            .unwrap_or_default();
        if !kinds.is_empty() {
            s.push_str("\nPer kind (test; exact match % for section and program/library, ROUGE-L for the rest; mean over seeds):\n\n| method |");
            for k in &kinds {
                let _ = write!(s, " {k} |");
            }
            s.push_str(" held-out loss |\n|---|");
            s.push_str(&"---:|".repeat(kinds.len() + 1));
            s.push('\n');
            for (m, v) in &r.runs {
                let _ = write!(s, "| {m} |");
                for k in &kinds {
                    let x = summary(
                        &v.iter()
                            .map(|x| kind_score(k, &lm_eval(x, 1)["by_kind"][k]))
                            .collect::<Vec<_>>(),
                    );
                    let _ = write!(s, " {:.1} |", x.mean);
                }
                let _ = writeln!(s, " {:.3} |", summary(&lm_scores(v, 1, "loss")).mean);
            }
        }
        s.push_str("\nLearning-rate trials (seed 0, validation loss):");
        for (m, lr, score) in &r.sweep {
            let chosen = r
                .rates
                .get(m.as_str())
                .or_else(|| r.rates.get(family_of(m)))
                .is_some_and(|l| l == lr);
            let _ = write!(
                s,
                " {m} {}{}: {:.3};",
                rate(*lr),
                if chosen { " (chosen)" } else { "" },
                -score
            );
        }
        s.pop();
        s.push_str(".\n");
        let file = format!("suite-{}.svg", r.task.name);
        let pts: Vec<Point> = r
            .runs
            .iter()
            .map(|(m, v)| {
                let t = summary(&v.iter().map(lm_primary).collect::<Vec<_>>());
                Point {
                    label: format!("{m}: {:.1} ± {:.1}", t.mean, t.std),
                    x: v.first().map_or(1.0, |x| num(x, "params")).max(1.0),
                    y: t.mean,
                    err: t.std,
                }
            })
            .collect();
        if !pts.is_empty() {
            plot_points(
                &pts,
                &format!("{}: test score (mean ± std over seeds)", r.task.name),
                "trainable parameters (log scale)",
                "primary test score",
                &docs.join(&file),
            )?;
            let _ = writeln!(s, "\n![{}: score against trainable parameters]({file})", r.task.name);
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rates_print_short() {
        assert_eq!(super::rate(3e-2), "3e-2");
        assert_eq!(super::rate(0.333_333_333_333_333_37), "3.33e-1");
        assert_eq!(super::rate(1e-4), "1e-4");
    }
}
