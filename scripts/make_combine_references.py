#!/usr/bin/env python3
"""PEFT's TIES and linear merges of task vectors, for wft-adapter's combine tests.

Writes crates/wft-adapter/tests/peft_refs/combine/ties.json: per case, the
task vectors (alpha * coefficients of three adapters of one module), their
weights, the density, and what `peft.utils.merge_utils.ties` (sign election
"total", PEFT's default) and a plain weighted sum give for them. The values
are seeded normals without ties in magnitude, so the trim is unambiguous.
DARE draws its drops from torch's stream and is not reproduced here.

Usage (developer machine; see scripts/requirements-peft.txt):
    target/peftref/bin/python scripts/make_combine_references.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
from peft.utils import merge_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_peft_references import OUT, versions  # noqa: E402


def main():
    versions()
    rng = np.random.default_rng(20261202)
    cases = []
    for name, n, weights, density in [
        ("equal-weights", 60, [1.0, 1.0, 1.0], 0.3),
        ("weights-flip-signs", 60, [1.0, 0.2, 3.0], 0.5),
        ("negative-weight", 60, [0.7, -0.5, 1.5], 0.7),
        ("dense", 60, [0.5, 0.5, 0.5], 1.0),
    ]:
        coeffs = rng.normal(0.0, 0.1, size=(3, n)).astype(np.float32)
        alphas = [25.0, 10.0, 40.0]
        tau = [torch.tensor(a * c.astype(np.float64)) for a, c in zip(alphas, coeffs)]
        w = torch.tensor(weights, dtype=torch.float64)
        # Density 1: PEFT's prune keeps everything (and warns).
        ties = merge_utils.ties(tau, w, density)
        linear = sum(wi * t for wi, t in zip(weights, tau))
        cases.append(
            {
                "name": name,
                "alphas": alphas,
                "coefficients": coeffs.tolist(),
                "weights": weights,
                "density": density,
                "ties": ties.tolist(),
                "linear": linear.tolist(),
            }
        )
    out = OUT / "combine"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"torch": torch.__version__.split("+")[0], "peft": __import__("peft").__version__}
    (out / "ties.json").write_text(json.dumps({"versions": meta, "cases": cases}, indent=1) + "\n")
    print(f"wrote {out / 'ties.json'}: {len(cases)} cases")


if __name__ == "__main__":
    main()
