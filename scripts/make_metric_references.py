#!/usr/bin/env python3
"""Reference values for wft-train's text metrics, computed by sacrebleu and
rouge-score (versions printed and stored in the file).

Writes `crates/wft-train/tests/fixtures/metrics.json`: a list of cases, each
with hypotheses, references, sacrebleu's corpus BLEU and chrF with default
settings (`BLEU()`, `CHRF()`), and rouge-score's per-example ROUGE-L
F-measure (`RougeScorer(["rougeL"], use_stemmer=False)`) and their mean.
Nothing in the file comes from our code.

The cases: hand-written edge cases (punctuation, numbers, hyphens, HTML
entities, case, Unicode, empty and one-word outputs, no matches), and
synopses of `data/debian-suite/desc2syn/test.jsonl` against seeded
perturbations of themselves (dropped, swapped and replaced words).

Usage: python scripts/make_metric_references.py [OUT]   (or `cargo xtask fixtures`)
"""
import importlib.metadata as md
import json
import random
import sys
from pathlib import Path

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "crates/wft-train/tests/fixtures/metrics.json"

HAND = [
    ("identical", ["the cat sat on the mat"], ["the cat sat on the mat"]),
    ("punctuation", ["Hello, world! (a test) -- isn't it?"], ["Hello world, a test: isn't it?"]),
    ("numbers", ["version 3.5, costs $4-5 or 1,000.50 units"], ["version 3.5 costs $4 - 5 or 1,000.50 units."]),
    ("entities", ["fish &amp; chips &lt;tag&gt; &quot;q&quot;"], ["fish & chips <tag> \"q\""]),
    ("case", ["The Quick Brown Fox"], ["the quick brown fox"]),
    ("unicode", ["Größe für Ünïcode — naïve café"], ["Grösse fur Unicode - naive cafe"]),
    ("empty hypothesis", ["", "a library for parsing"], ["shared library", "a library for parsing XML"]),
    ("one word", ["library"], ["shared library for image decoding"]),
    ("no match", ["zzz qqq"], ["the quick brown fox"]),
    ("short corpus", ["a b", "c"], ["a b c d", "c d"]),
    ("slashes and brackets", ["client/server [beta] {x} ~y ^z @home #1 100%"], ["client / server beta x y z home 1 100 %"]),
    ("repeats", ["the the the the"], ["the cat is on the mat"]),
]


def perturb(text, rng):
    words = text.split()
    out = []
    for w in words:
        r = rng.random()
        if r < 0.15:
            continue
        if r < 0.25:
            out.append(rng.choice(["tool", "library", "data", "for", "the", "files"]))
        else:
            out.append(w)
    if len(out) > 2 and rng.random() < 0.5:
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def main():
    rng = random.Random(20261202)
    rows = [json.loads(l) for l in open(ROOT / "data/debian-suite/desc2syn/test.jsonl", encoding="utf-8")]
    refs = [r["completion"].strip() for r in rows[:60]]
    cases = list(HAND) + [("debian synopses, perturbed", [perturb(t, rng) for t in refs], refs)]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    out = {
        "versions": {p: md.version(p) for p in ("sacrebleu", "rouge-score")},
        "cases": [],
    }
    for name, hyps, refs in cases:
        per = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs)]
        out["cases"].append({
            "name": name,
            "hyps": hyps,
            "refs": refs,
            "bleu": BLEU().corpus_score(hyps, [refs]).score,
            "chrf": CHRF().corpus_score(hyps, [refs]).score,
            "rouge_l": [100.0 * f for f in per],
            "rouge_l_mean": 100.0 * sum(per) / len(per),
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(out['cases'])} cases; " + ", ".join(f"{k} {v}" for k, v in out["versions"].items()))


if __name__ == "__main__":
    main()
