//! Text-generation metrics with the conventions of their reference
//! implementations, checked against them on fixed cases
//! (`tests/metrics.rs`, references from `scripts/make_metric_references.py`):
//!
//! * [`bleu`]: corpus BLEU as sacrebleu computes it by default (the `13a`
//!   tokenizer, 4-grams, `exp` smoothing, case-sensitive, one reference);
//! * [`chrf`]: corpus chrF as sacrebleu does (character 6-grams without
//!   whitespace, β = 2, no word n-grams, precision and recall averaged over
//!   the orders both sides reach);
//! * [`rouge_l`]: rouge-score's ROUGE-L F-measure (lower-cased, split on
//!   anything but `[a-z0-9]`, no stemming), averaged over the examples.
//!
//! All three are in points (0–100).

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;

/// How many n-gram orders BLEU uses.
const BLEU_ORDER: usize = 4;
/// chrF's character n-gram order and β.
const CHRF_ORDER: usize = 6;
const CHRF_BETA: f64 = 2.0;

/// sacrebleu's `13a` tokenizer (mteval-v13a's `tokenizeText`).
pub fn tokenize_13a(line: &str) -> String {
    static PUNCT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"([\{-~\[-` -&\(-\+:-@/])").expect("a valid pattern"));
    static BEFORE_DOT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"([^0-9])([\.,])").expect("a valid pattern"));
    static AFTER_DOT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"([\.,])([^0-9])").expect("a valid pattern"));
    static DASH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"([0-9])(-)").expect("a valid pattern"));
    let mut s = line.replace("<skipped>", "").replace("-\n", "").replace('\n', " ");
    if s.contains('&') {
        s = s
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let s = format!(" {s} ");
    let s = PUNCT.replace_all(&s, " $1 ");
    let s = BEFORE_DOT.replace_all(&s, "$1 $2 ");
    let s = AFTER_DOT.replace_all(&s, " $1 $2");
    let s = DASH.replace_all(&s, "$1 $2 ");
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn ngram_counts<T: std::hash::Hash + Eq + Clone>(items: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    if items.len() >= n {
        for w in items.windows(n) {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts
}

/// Hypothesis n-grams, reference n-grams, and clipped matches.
fn match_stats<T: std::hash::Hash + Eq + Clone>(hyp: &[T], reference: &[T], n: usize) -> (usize, usize, usize) {
    let h = ngram_counts(hyp, n);
    let r = ngram_counts(reference, n);
    let matches = h.iter().map(|(g, c)| (*c).min(r.get(g).copied().unwrap_or(0))).sum();
    (h.values().sum(), r.values().sum(), matches)
}

/// Corpus BLEU of `hyps` against one reference each (sacrebleu's defaults).
/// Pairs beyond the shorter list are ignored; no pairs give 0.
pub fn bleu(hyps: &[&str], refs: &[&str]) -> f64 {
    let (mut correct, mut total) = ([0usize; BLEU_ORDER], [0usize; BLEU_ORDER]);
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (h, r) in hyps.iter().zip(refs) {
        let h = tokenize_13a(h.trim_end());
        let r = tokenize_13a(r.trim_end());
        let h: Vec<&str> = h.split(' ').filter(|t| !t.is_empty()).collect();
        let r: Vec<&str> = r.split(' ').filter(|t| !t.is_empty()).collect();
        sys_len += h.len();
        ref_len += r.len();
        for n in 1..=BLEU_ORDER {
            let (hyp_n, _, m) = match_stats(&h, &r, n);
            total[n - 1] += hyp_n;
            correct[n - 1] += m;
        }
    }
    // sacrebleu scores 0 when nothing was output or no unigram matches.
    if sys_len == 0 || correct[0] == 0 {
        return 0.0;
    }
    // mteval's `exp` smoothing: each order with no match counts as
    // 1 / (2^k · total), k the number of such orders so far.
    let mut precisions = [0f64; BLEU_ORDER];
    let mut smooth = 1.0;
    for n in 0..BLEU_ORDER {
        if total[n] == 0 {
            break;
        }
        precisions[n] = if correct[n] == 0 {
            smooth *= 2.0;
            100.0 / (smooth * total[n] as f64)
        } else {
            100.0 * correct[n] as f64 / total[n] as f64
        };
    }
    let log = |p: f64| if p == 0.0 { -9_999_999_999.0 } else { p.ln() };
    let bp = if sys_len >= ref_len {
        1.0
    } else {
        (1.0 - ref_len as f64 / sys_len as f64).exp()
    };
    bp * (precisions.iter().map(|&p| log(p)).sum::<f64>() / BLEU_ORDER as f64).exp()
}

/// Corpus chrF of `hyps` against one reference each (sacrebleu's
/// defaults). No pairs give 0.
pub fn chrf(hyps: &[&str], refs: &[&str]) -> f64 {
    let mut stats = [(0usize, 0usize, 0usize); CHRF_ORDER];
    for (h, r) in hyps.iter().zip(refs) {
        let h: Vec<char> = h.chars().filter(|c| !c.is_whitespace()).collect();
        let r: Vec<char> = r.chars().filter(|c| !c.is_whitespace()).collect();
        for (n, s) in stats.iter_mut().enumerate() {
            let (a, b, m) = match_stats(&h, &r, n + 1);
            *s = (s.0 + a, s.1 + b, s.2 + m);
        }
    }
    let factor = CHRF_BETA * CHRF_BETA;
    // Precision and recall are averaged over the orders that both sides
    // have n-grams of (sacrebleu's effective order).
    let (mut prec, mut rec, mut orders) = (0.0, 0.0, 0usize);
    for &(n_hyp, n_ref, n_match) in &stats {
        if n_hyp > 0 && n_ref > 0 {
            prec += n_match as f64 / n_hyp as f64;
            rec += n_match as f64 / n_ref as f64;
            orders += 1;
        }
    }
    if orders == 0 {
        return 0.0;
    }
    let (prec, rec) = (prec / orders as f64, rec / orders as f64);
    if prec + rec == 0.0 {
        return 0.0;
    }
    100.0 * (1.0 + factor) * prec * rec / (factor * prec + rec)
}

/// rouge-score's default tokenizer without stemming.
pub fn rouge_tokens(text: &str) -> Vec<String> {
    static NON_ALNUM: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[^a-z0-9]+").expect("a valid pattern"));
    NON_ALNUM
        .replace_all(&text.to_lowercase(), " ")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Length of the longest common subsequence.
fn lcs(a: &[String], b: &[String]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diag = 0;
        for (j, y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// ROUGE-L F-measure of one prediction against its target, 0–1.
pub fn rouge_l_f(prediction: &str, target: &str) -> f64 {
    let (p, t) = (rouge_tokens(prediction), rouge_tokens(target));
    if p.is_empty() || t.is_empty() {
        return 0.0;
    }
    let l = lcs(&t, &p) as f64;
    let (precision, recall) = (l / p.len() as f64, l / t.len() as f64);
    if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    }
}

/// Mean ROUGE-L F-measure over the pairs, in points; no pairs give 0.
pub fn rouge_l(hyps: &[&str], refs: &[&str]) -> f64 {
    let n = hyps.len().min(refs.len());
    if n == 0 {
        return 0.0;
    }
    100.0 * hyps.iter().zip(refs).map(|(h, r)| rouge_l_f(h, r)).sum::<f64>() / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_splits_punctuation_but_not_numbers() {
        assert_eq!(
            tokenize_13a("Hello, world. 3.5 costs $4-5 (x/y)!"),
            "Hello , world . 3.5 costs $ 4 - 5 ( x / y ) !"
        );
        assert_eq!(tokenize_13a("it's e-mail &amp; more"), "it's e-mail & more");
    }

    #[test]
    fn identical_texts_score_100_and_disjoint_ones_nearly_0() {
        let a = ["the quick brown fox jumps over the lazy dog"];
        assert!((bleu(&a, &a) - 100.0).abs() < 1e-9);
        assert!((chrf(&a, &a) - 100.0).abs() < 1e-9);
        assert!((rouge_l(&a, &a) - 100.0).abs() < 1e-9);
        let b = ["zzz qqq"];
        // chrF still credits the characters they share ('q').
        assert!(bleu(&b, &a) == 0.0 && chrf(&b, &a) < 5.0 && rouge_l(&b, &a) == 0.0);
    }

    #[test]
    fn lcs_is_the_longest_common_subsequence() {
        let t = |s: &str| rouge_tokens(s);
        assert_eq!(lcs(&t("a b c d e"), &t("a x c y e")), 3);
        assert_eq!(lcs(&t("a b"), &t("")), 0);
        assert_eq!(lcs(&t("The fat cat"), &t("the cat")), 2);
    }
}
