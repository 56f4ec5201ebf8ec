#!/usr/bin/env python3
"""Reference fixtures for dwt-core, computed by real PyWavelets.

Writes `crates/dwt-core/tests/fixtures/pywt.safetensors`. Every tensor is an
input or an output of a PyWavelets call; the `cases` list in the single
`fixture` metadata entry (JSON) says which call. Nothing in the file comes from dwt-core.

What it covers:
  * the filter bank of every discrete wavelet (`filters.<name>.<filter>`);
  * `dwt_max_level` and `dwt_coeff_len` tables (metadata);
  * single-level `dwt` + `idwt` for every wavelet (modes rotated), and for a
    sample including the longest filters (db38, sym20, coif17, dmey) in all
    nine modes on lengths 1..33 (shorter than the filter included);
  * `idwt` of random coefficients (synthesis on its own);
  * multilevel `wavedec`/`waverec`, including levels beyond `dwt_max_level`;
  * `dwt2`/`idwt2`, `wavedec2`/`waverec2` on odd, even, tiny and non-square
    shapes, and over other axes of 3-D arrays, plus `coeffs_to_array`;
  * float32 runs of the same calls.

Usage: python scripts/make_pywt_fixtures.py [OUT]   (or `cargo xtask fixtures`)
"""
import importlib.metadata as md
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pywt
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "crates/dwt-core/tests/fixtures/pywt.safetensors"
SEED = 20261126
MODES = list(pywt.Modes.modes)
SAMPLE = ["haar", "db2", "db7", "db38", "sym5", "sym20", "coif3", "coif17", "bior2.6", "rbio3.9", "dmey"]
LONG = ["db38", "sym20", "coif17", "dmey"]

rng = np.random.default_rng(SEED)
tensors = {}
cases = []


def versions():
    return {p: md.version(p) for p in ("PyWavelets", "numpy", "safetensors")}


def put(name, arr, dtype):
    tensors[name] = np.ascontiguousarray(np.asarray(arr, dtype=dtype))


def min_len(mode):
    return 2 if mode in ("reflect", "antireflect") else 1


def case(op, wavelet, mode, dtype="f64", **kw):
    cid = f"c{len(cases):04d}"
    entry = {"id": cid, "op": op, "wavelet": wavelet, "mode": mode, "dtype": dtype}
    entry.update(kw)
    cases.append(entry)
    return cid, (np.float64 if dtype == "f64" else np.float32)


def add_dwt(wavelet, mode, n, dtype="f64", shape=None, axis=0):
    shape = shape or (n,)
    cid, dt = case("dwt", wavelet, mode, dtype, axis=axis)
    x = rng.standard_normal(shape).astype(dt)
    a, d = pywt.dwt(x, wavelet, mode, axis=axis)
    put(f"{cid}.x", x, dt)
    put(f"{cid}.a", a, dt)
    put(f"{cid}.d", d, dt)
    put(f"{cid}.rec", pywt.idwt(a, d, wavelet, mode, axis=axis), dt)


def add_idwt(wavelet, mode, m, dtype="f64"):
    cid, dt = case("idwt", wavelet, mode, dtype, axis=0)
    a = rng.standard_normal(m).astype(dt)
    d = rng.standard_normal(m).astype(dt)
    put(f"{cid}.a", a, dt)
    put(f"{cid}.d", d, dt)
    put(f"{cid}.y", pywt.idwt(a, d, wavelet, mode), dt)


def add_wavedec(wavelet, mode, shape, level, dtype="f64", axis=-1):
    w = pywt.Wavelet(wavelet)
    n = shape[axis]
    deep = level is not None and level > pywt.dwt_max_level(n, w.dec_len)
    ax = axis % len(shape)
    cid, dt = case("wavedec", wavelet, mode, dtype, level=level, axis=ax, deep=deep)
    x = rng.standard_normal(shape).astype(dt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = pywt.wavedec(x, wavelet, mode, level=level, axis=ax)
    put(f"{cid}.x", x, dt)
    put(f"{cid}.a", c[0], dt)
    for i, d in enumerate(c[1:]):
        put(f"{cid}.d{i}", d, dt)
    put(f"{cid}.rec", pywt.waverec(c, wavelet, mode, axis=ax), dt)
    cases[-1]["levels"] = len(c) - 1


def add_wavedec2(wavelet, mode, shape, level, dtype="f64", axes=(-2, -1), packed=False):
    w = pywt.Wavelet(wavelet)
    axes = tuple(a % len(shape) for a in axes)
    max_level = min(pywt.dwt_max_level(shape[a], w.dec_len) for a in axes)
    deep = level is not None and level > max_level
    cid, dt = case("wavedec2", wavelet, mode, dtype, level=level, axes=list(axes), deep=deep)
    x = rng.standard_normal(shape).astype(dt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = pywt.wavedec2(x, wavelet, mode, level=level, axes=axes)
    put(f"{cid}.x", x, dt)
    put(f"{cid}.a", c[0], dt)
    for i, (h, v, d) in enumerate(c[1:]):
        put(f"{cid}.d{i}.h", h, dt)
        put(f"{cid}.d{i}.v", v, dt)
        put(f"{cid}.d{i}.d", d, dt)
    put(f"{cid}.rec", pywt.waverec2(c, wavelet, mode, axes=axes), dt)
    cases[-1]["levels"] = len(c) - 1
    if packed:
        arr, _ = pywt.coeffs_to_array(c, axes=axes)
        put(f"{cid}.packed", arr, dt)
        cases[-1]["packed"] = True


def add_idwt2(wavelet, mode, shape, dtype="f64"):
    cid, dt = case("idwt2", wavelet, mode, dtype, axes=[0, 1])
    bands = [rng.standard_normal(shape).astype(dt) for _ in range(4)]
    for k, b in zip("ahvd", bands):
        put(f"{cid}.{k}", b, dt)
    put(f"{cid}.y", pywt.idwt2((bands[0], tuple(bands[1:])), wavelet, mode), dt)


def main():
    v = versions()
    print("versions:", v)
    names = pywt.wavelist(kind="discrete")
    for name in names:
        for f, vals in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), pywt.Wavelet(name).filter_bank):
            put(f"filters.{name}.{f}", vals, np.float64)

    max_level = [[n, L, pywt.dwt_max_level(n, L)] for n in (0, 1, 2, 3, 5, 7, 8, 63, 64, 65, 768, 1000, 4096)
                 for L in (2, 4, 6, 8, 14, 76, 102)]
    coeff_len = [[n, L, m, pywt.dwt_coeff_len(n, L, m)] for n in (1, 2, 3, 8, 17, 100) for L in (2, 4, 76)
                 for m in MODES]

    # 1-D, single level: every wavelet once (modes rotated), lengths around L.
    for i, name in enumerate(names):
        mode = MODES[i % len(MODES)]
        L = pywt.Wavelet(name).dec_len
        n = int(rng.integers(max(min_len(mode), 1), 2 * L + 8))
        add_dwt(name, mode, n)
    # 1-D: the sample, incl. the longest filters, in every mode, tiny lengths.
    for name in SAMPLE:
        for mode in MODES:
            for n in (1, 2, 3, 8, 33):
                if n >= min_len(mode):
                    add_dwt(name, mode, n)
    # synthesis alone, from random coefficients
    for name in SAMPLE:
        for mode in MODES:
            L = pywt.Wavelet(name).dec_len
            m = int(rng.integers(L // 2, L // 2 + 20)) if mode != "periodization" else int(rng.integers(1, 24))
            add_idwt(name, mode, m)
    # multilevel 1-D
    for name in SAMPLE:
        for mode in rng.choice(MODES, 3, replace=False):
            n = int(rng.choice([64, 100, 257]))
            L = pywt.Wavelet(name).dec_len
            mx = pywt.dwt_max_level(n, L)
            for level in dict.fromkeys([None, 1, max(1, mx)]):  # ordered, no duplicates
                add_wavedec(name, str(mode), (n,), level)
    # levels deeper than dwt_max_level (PyWavelets warns and proceeds)
    for name, mode, n, level in [("db4", "symmetric", 20, 3), ("haar", "periodization", 5, 4),
                                 ("sym8", "zero", 30, 2), ("db2", "smooth", 9, 3)]:
        add_wavedec(name, mode, (n,), level)
    # along each axis of a 3-D array
    for axis in (0, 1, 2):
        add_wavedec("db3", MODES[axis * 3], (9, 14, 11), 2, axis=axis)
        add_dwt("sym4", MODES[axis * 3 + 1], 0, shape=(5, 12, 7), axis=axis)

    # 2-D
    shapes = [(1, 1), (2, 3), (3, 5), (7, 4), (9, 13), (16, 16), (21, 10), (33, 20)]
    for name in SAMPLE:
        for mode in MODES:
            long = name in LONG
            if long and MODES.index(mode) % len(LONG) != LONG.index(name):
                continue  # long filters: spread the modes over them to keep the file small
            shape = shapes[int(rng.integers(0, 4 if long else len(shapes)))]
            if min(shape) < min_len(mode):
                shape = (shape[0] + 2, shape[1] + 2)
            add_wavedec2(name, mode, shape, 1, packed=(name == "db2"))
    for name, mode, shape, level in [
        ("db2", "periodization", (64, 48), 3), ("db2", "symmetric", (64, 48), 3),
        ("haar", "symmetric", (4, 4), 1), ("db4", "reflect", (45, 37), None), ("sym3", "antireflect", (30, 51), 2),
        ("coif1", "smooth", (26, 26), 2), ("bior3.5", "periodic", (40, 19), None), ("db1", "zero", (17, 9), 3),
        ("rbio1.3", "antisymmetric", (23, 30), 2), ("db5", "constant", (33, 34), None),
        ("db3", "symmetric", (12, 7), 3),  # deeper than dwt_max_level
    ]:
        add_wavedec2(name, mode, shape, level, packed=True)
    for name in ("haar", "db3", "sym6", "bior4.4"):
        for mode in ("periodization", "symmetric"):
            L = pywt.Wavelet(name).dec_len
            add_idwt2(name, mode, (int(rng.integers(L // 2, L // 2 + 9)), int(rng.integers(L // 2, L // 2 + 9))))
    # over other axes of 3-D arrays, including reversed order
    for axes, mode in [((0, 2), "symmetric"), ((2, 1), "periodization"), ((1, 0), "zero")]:
        add_wavedec2("db2", mode, (10, 7, 12), 2, axes=axes, packed=True)

    # float32
    for name, mode in [("db4", "symmetric"), ("sym8", "periodization"), ("coif17", "zero"), ("bior2.8", "reflect")]:
        add_dwt(name, mode, 37, dtype="f32")
        add_wavedec(name, mode, (300,), None, dtype="f32")
        add_wavedec2(name, mode, (24, 17), 1, dtype="f32")

    # One metadata key: safetensors writes its metadata map in hash order, so
    # several keys would make the file's bytes differ from run to run.
    meta = {"fixture": json.dumps({
        "versions": v,
        "seed": SEED,
        "cases": cases,
        "max_level": max_level,
        "coeff_len": coeff_len,
        "wavelets": names,
    }, sort_keys=True)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(OUT), metadata=meta)
    size = OUT.stat().st_size
    print(f"wrote {OUT}: {len(cases)} cases, {len(tensors)} tensors, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
