#!/usr/bin/env python3
"""Reference values for wft-train's statistics, computed by SciPy (version
printed and stored in the file).

Writes `xtask/tests/fixtures/stats.json`: for fixed paired
samples (seeded, the sizes of our seed counts and larger), the mean, the
sample standard deviation, the 95% t confidence half-width
(`scipy.stats.t.ppf(0.975, n - 1) * std / sqrt(n)`), `ttest_rel` (two-sided)
and, where the |differences| have no ties and no zeros,
`wilcoxon(method="exact")` (two-sided). Nothing in the file comes from our
code.

Usage: python scripts/make_stats_references.py [OUT]   (or `cargo xtask fixtures`)
"""
import importlib.metadata as md
import json
import math
import random
import sys
from pathlib import Path

from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "xtask/tests/fixtures/stats.json"


def main():
    rng = random.Random(20261202)
    cases = []
    for n in (3, 5, 5, 5, 7, 10, 12):
        for shift in (0.0, 0.3, 1.0, 3.0):
            a = [round(rng.gauss(70, 1.5), 4) for _ in range(n)]
            b = [round(x - shift + rng.gauss(0, 1.0), 4) for x in a]
            diffs = [x - y for x, y in zip(a, b)]
            s = sum(a) / n
            sd = math.sqrt(sum((x - s) ** 2 for x in a) / (n - 1))
            case = {
                "a": a,
                "b": b,
                "mean_a": s,
                "std_a": sd,
                "ci95_a": float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n),
                "ttest_rel": {"statistic": float(stats.ttest_rel(a, b).statistic),
                              "p": float(stats.ttest_rel(a, b).pvalue)},
            }
            mags = [abs(d) for d in diffs]
            if 0.0 not in mags and len(set(mags)) == len(mags):
                w = stats.wilcoxon(a, b, method="exact")
                case["wilcoxon"] = {"statistic": float(w.statistic), "p": float(w.pvalue)}
            cases.append(case)
    out = {"versions": {"scipy": md.version("scipy")}, "cases": cases}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {OUT}: {len(cases)} cases; scipy {out['versions']['scipy']}")


if __name__ == "__main__":
    main()
