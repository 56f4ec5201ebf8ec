#!/usr/bin/env python3
"""Time PyWavelets' wavedec2/waverec2 the way `examples/peer_timing.rs` times
dwt-core (median of repeated runs after a warm-up), for
`cargo xtask bench --peer pywt`.

Usage: python scripts/bench_pywt.py ROWSxCOLS:WAVELET:MODE:DTYPE:LEVEL ...
Prints `versions {...}`, then `case op seconds` per case and op.
"""
import importlib.metadata as md
import json
import sys
import time

import numpy as np
import pywt


def timed(f, budget=0.4):
    f()
    runs = []
    start = time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < budget and len(runs) < 50):
        t = time.perf_counter()
        f()
        runs.append(time.perf_counter() - t)
    runs.sort()
    return runs[len(runs) // 2]


def main():
    print("versions", json.dumps({p: md.version(p) for p in ("PyWavelets", "numpy")}))
    rng = np.random.default_rng(0)
    for spec in sys.argv[1:]:
        shape, wavelet, mode, dtype, level = spec.split(":")
        r, c = (int(v) for v in shape.split("x"))
        x = (rng.random((r, c)) - 0.5).astype(np.float32 if dtype == "f32" else np.float64)
        level = int(level)
        t = timed(lambda: pywt.wavedec2(x, wavelet, mode, level=level))
        print(f"{spec} wavedec2 {t:.6e}")
        coeffs = pywt.wavedec2(x, wavelet, mode, level=level)
        t = timed(lambda: pywt.waverec2(coeffs, wavelet, mode))
        print(f"{spec} waverec2 {t:.6e}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
