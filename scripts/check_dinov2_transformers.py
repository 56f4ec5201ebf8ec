#!/usr/bin/env python3
"""transformers' Dinov2Model on the folder `cargo xtask fetch-vit` converts,
against onnxruntime on the original graph (the fixture of
scripts/make_dinov2_references.py): a check of the conversion itself (names,
transposes, the position-embedding split, the bicubic resize) that does not
involve our own ViT.

Usage (the PyTorch venv of scripts/requirements-peft.txt):
    target/peftref/bin/python scripts/check_dinov2_transformers.py .cache/vit/dinov2-vits14
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file
from transformers import Dinov2Model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_dinov2_references import IMAGES, MEAN, STD, image  # noqa: E402

FIXTURE = Path(__file__).resolve().parent.parent / "crates" / "wft-candle" / "tests" / "fixtures" / "dinov2" / "onnxruntime.safetensors"


def main():
    print("versions:", json.dumps({"torch": torch.__version__, "transformers": transformers.__version__}))
    fixture = load_file(str(FIXTURE))
    ref = np.concatenate([fixture["cls"], fixture["patches"]], axis=1)
    pixels = np.stack([image(k) for k in range(IMAGES)]).astype(np.float32) / 255.0
    x = ((pixels - MEAN[None, :, None, None]) / STD[None, :, None, None]).astype(np.float32)
    model = Dinov2Model.from_pretrained(sys.argv[1]).eval()
    with torch.no_grad():
        hidden = model(pixel_values=torch.from_numpy(x)).last_hidden_state.numpy()
    ours = np.concatenate([hidden[:, 0], hidden[:, 1:].mean(axis=1)], axis=1)
    err, scale = float(np.abs(ours - ref).max()), float(np.abs(ref).max())
    cls, rc = hidden[:, 0], fixture["cls"]
    cos = (cls * rc).sum(-1) / np.linalg.norm(cls, axis=-1) / np.linalg.norm(rc, axis=-1)
    ok = err <= 1e-3 * scale and cos.min() >= 0.99999
    print(f"transformers on the converted folder against onnxruntime (CLS and mean patch tokens): "
          f"max error {err:.3g} of {scale:.3g}, "
          f"CLS cosine {cos.min():.7f} ({'PASS' if ok else 'FAIL'})")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
