#!/usr/bin/env python3
"""Reference prefixes of torch.randperm on its large (inside-out, 64-bit) branch.

PEFT places WaveFT/FourierFT coefficients at
`torch.randperm(out*in, generator=torch.Generator().manual_seed(seed))[:n]`.
From out*in >= 214,748,364 torch's CPU randperm switches branch; this script
records real torch prefixes for layer shapes on that branch so
`crates/wft-adapter/tests/randperm.rs` can compare wft-adapter's
reproduction index by index. Writes crates/wft-adapter/tests/data/randperm_large.json.

One-off, on a developer machine (PyTorch is not in CI; each permutation
needs out*in*8 bytes, up to 2.1 GB here):

    python3 -m venv target/peftref && target/peftref/bin/pip install -r scripts/requirements-peft.txt
    target/peftref/bin/python scripts/make_randperm_large.py
"""
import json
import os
import sys

import torch

PINNED = {"torch": "2.15.0"}
# (out, in, seed, n): Llama-like shapes on the large branch, and one just
# past the threshold.
CASES = [
    (8192, 28672, 777, 4096),   # 70B down_proj (Conv: out 8192, in 28672)
    (28672, 8192, 0, 4096),     # 70B gate/up_proj
    (16384, 16384, 12345, 2048),
    (214748364, 1, 5, 1024),    # the first size on the large branch
]


def main():
    for mod, want in PINNED.items():
        got = __import__(mod).__version__.split("+")[0]
        print(f"{mod} {got}")
        if got != want:
            sys.exit(f"{mod} {got} is not the pinned {want}")
    torch.set_num_threads(1)  # randperm's CPU kernel is sequential anyway
    out = []
    for rows, cols, seed, n in CASES:
        total = rows * cols
        assert total >= 214_748_364, (rows, cols)
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(total, generator=g)[:n].tolist()
        print(f"{rows}x{cols} seed {seed}: first {idx[:4]}")
        out.append({"out": rows, "in": cols, "seed": seed, "indices": idx})
    path = os.path.join(os.path.dirname(__file__), "..", "crates", "wft-adapter", "tests", "data", "randperm_large.json")
    with open(path, "w") as f:
        json.dump({"torch": torch.__version__, "cases": out}, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
