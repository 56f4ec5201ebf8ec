#!/usr/bin/env python3
"""Reference adapter folders made by real Hugging Face PEFT.

Every case is a small torch model, wrapped by PEFT with one config. The
trainable tensors are set to seeded random values (so that nothing is zero),
and the script writes, under crates/wft-adapter/tests/peft_refs/<case>/:

  base.safetensors      the base model's state dict (its own key names)
  adapter/              PEFT's save_pretrained(): adapter_config.json and
                        adapter_model.safetensors
  merged.safetensors    merge_and_unload() state dict
  io.safetensors        per adapted module: `<module>.x` (an input),
                        `<module>.y` (the unmerged PEFT module's output) and,
                        for WaveFT/FourierFT, `<module>.locations` (the flat
                        torch.randperm indices PEFT drew)

The 1024x768 n=5000 case stores no base or merged weights (they would be 3 MB
each). It stores `<module>.delta_rows/_cols/_vals`: get_delta_weight() at
every nonzero position plus 2048 random ones.

Usage (not part of CI; PyTorch is about 5.6 GB):
    python3 -m venv target/peftref
    target/peftref/bin/pip install -r scripts/requirements-peft.txt
    target/peftref/bin/python scripts/make_peft_references.py
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import peft
import safetensors
import torch
import transformers
from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model
from safetensors.torch import save_file
from transformers.pytorch_utils import Conv1D

PINNED = {"torch": "2.15.0", "peft": "0.21.2", "transformers": "5.23.0", "safetensors": "0.8.0", "numpy": "2.4.6"}
OUT = Path(__file__).resolve().parent.parent / "crates" / "wft-adapter" / "tests" / "peft_refs"


def versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    for k, v in got.items():
        print(f"{k}=={v}")
        if PINNED[k] != v:
            sys.exit(f"{k} is {v}, the references are pinned to {PINNED[k]}")


# Every Conv2d of these nets has this stride and padding (the tests use the same).
CONV_STRIDE, CONV_PADDING = 2, 1


class Block(torch.nn.Module):
    """Named layers: linear for an (out, in) shape, Conv2d for (out, in, kh, kw)."""

    def __init__(self, shapes, conv1d=False):
        super().__init__()
        for name, shape in shapes.items():
            if len(shape) == 4:
                o, i, kh, kw = shape
                layer = torch.nn.Conv2d(i, o, (kh, kw), stride=CONV_STRIDE, padding=CONV_PADDING)
            else:
                o, i = shape
                layer = Conv1D(o, i) if conv1d else torch.nn.Linear(i, o)
            setattr(self, name, layer)


class Net(torch.nn.Module):
    def __init__(self, layers, conv1d=False):
        super().__init__()
        self.layers = torch.nn.ModuleList([Block(s, conv1d) for s in layers])


def randomize_adapter(model, gen):
    """Give every trainable tensor seeded random values of a useful size."""
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = 0.2 if ("spectrum" in name) else 0.1
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) * scale)


def adapted_modules(model):
    """(module path without the PEFT prefix, layer) for each adapted layer."""
    out = []
    for name, m in model.named_modules():
        if hasattr(m, "base_layer") and hasattr(m, "get_delta_weight"):
            out.append((name.removeprefix("base_model.model."), m))
    return out


def state(model):
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def make_case(name, layers, config, conv1d=False, store_weights=True):
    torch.manual_seed(0)
    base = Net(layers, conv1d)
    base_state = state(base)
    model = get_peft_model(base, config)
    gen = torch.Generator().manual_seed(1234)
    randomize_adapter(model, gen)
    model.eval()
    case = OUT / name
    shutil.rmtree(case, ignore_errors=True)
    (case / "adapter").mkdir(parents=True)
    model.save_pretrained(case / "adapter")
    # PEFT writes adapter/README.md; it is boilerplate, keep the folder lean.
    (case / "adapter" / "README.md").unlink(missing_ok=True)
    io = {}
    with torch.no_grad():
        for path, m in adapted_modules(model):
            if isinstance(m.base_layer, torch.nn.Conv2d):
                x = torch.randn(2, m.base_layer.in_channels, 9, 8, generator=gen)
                in_features = None
            else:
                in_features = m.in_features
                x = torch.randn(5, in_features, generator=gen)
            io[f"{path}.x"] = x
            io[f"{path}.y"] = m(x).contiguous()
            if hasattr(m, "waveft_indices"):
                idx = m.waveft_indices["default"]
                io[f"{path}.locations"] = (idx[0] * in_features + idx[1]).contiguous()
            if hasattr(m, "indices") and "default" in getattr(m, "indices", {}):
                idx = m.indices["default"]
                io[f"{path}.locations"] = (idx[0] * in_features + idx[1]).contiguous()
            if not store_weights:
                dw = m.get_delta_weight("default")
                nz = torch.nonzero(dw)
                extra = torch.stack(
                    [
                        torch.randint(0, dw.shape[0], (2048,), generator=gen),
                        torch.randint(0, dw.shape[1], (2048,), generator=gen),
                    ],
                    dim=1,
                )
                pos = torch.cat([nz, extra])
                io[f"{path}.delta_rows"] = pos[:, 0].contiguous()
                io[f"{path}.delta_cols"] = pos[:, 1].contiguous()
                io[f"{path}.delta_vals"] = dw[pos[:, 0], pos[:, 1]].contiguous()
    save_file(io, case / "io.safetensors")
    if store_weights:
        save_file(base_state, case / "base.safetensors")
        merged = model.merge_and_unload()
        save_file(state(merged), case / "merged.safetensors")
    print(f"{name}: {len(io)} io tensors")


def main():
    versions()
    OUT.mkdir(parents=True, exist_ok=True)
    # `--only NAME ...` remakes just those cases (torch draws each case from
    # its own seeds, so the others would come out the same anyway).
    only = set(sys.argv[sys.argv.index("--only") + 1 :]) if "--only" in sys.argv else None
    global make_case
    full = make_case

    def make_case(name, *args, **kwargs):
        if only is None or name in only:
            full(name, *args, **kwargs)

    wave = dict(n_frequency=60, scaling=25.0, random_loc_seed=777, init_weights=False)
    sq = [{"q": (64, 64), "v": (64, 64)}, {"q": (64, 64), "v": (64, 64)}]
    make_case("waveft_db1_square", sq, WaveFTConfig(target_modules=["q", "v"], wavelet_family="db1", **wave))
    nonsq = [{"q": (48, 80), "v": (80, 48)}]
    make_case("waveft_db2_nonsquare", nonsq, WaveFTConfig(target_modules=["q", "v"], wavelet_family="db2", **wave))
    odd = [{"q": (37, 53), "v": (45, 31)}]
    make_case("waveft_sym3_odd", odd, WaveFTConfig(target_modules=["q", "v"], wavelet_family="sym3", **wave))
    make_case("waveft_coif1_odd", odd, WaveFTConfig(target_modules=["q", "v"], wavelet_family="coif1", **wave))
    make_case("waveft_db3_odd", odd, WaveFTConfig(target_modules=["q", "v"], wavelet_family="db3", **wave))
    gpt2 = [{"c_attn": (96, 32), "c_proj": (32, 32)}]
    make_case(
        "waveft_conv1d",
        gpt2,
        WaveFTConfig(target_modules=["c_attn", "c_proj"], wavelet_family="db2", fan_in_fan_out=True, **wave),
        conv1d=True,
    )
    make_case(
        "waveft_no_idwt", odd, WaveFTConfig(target_modules=["q", "v"], wavelet_family="db2", use_idwt=False, **wave)
    )
    mixed = [{"q": (64, 64), "v": (32, 64), "o": (16, 24)}]
    make_case(
        "waveft_proportional",
        mixed,
        WaveFTConfig(target_modules=["q", "v", "o"], wavelet_family="db1", proportional_parameters=True, **wave),
    )
    make_case(
        "waveft_pattern_regex",
        [{"q": (32, 40), "v": (40, 32), "o": (24, 24)}, {"q": (32, 40), "v": (40, 32), "o": (24, 24)}],
        WaveFTConfig(
            target_modules=r"layers\.\d+\.(q|v|o)",
            exclude_modules=["layers.1.o"],
            n_frequency_pattern={"v": 25, "layers.0.o": 11},
            wavelet_family="sym2",
            **wave,
        ),
    )
    make_case(
        "fourierft",
        [{"q": (48, 40), "v": (40, 40)}],
        FourierFTConfig(target_modules=["q", "v"], n_frequency=100, scaling=150.0, random_loc_seed=777,
                        init_weights=False),
    )
    lora_layers = [{"q": (48, 40), "v": (40, 56)}]
    make_case("lora", lora_layers, LoraConfig(target_modules=["q", "v"], r=4, lora_alpha=8, init_lora_weights=False))
    make_case(
        "rslora",
        lora_layers,
        LoraConfig(target_modules=["q", "v"], r=4, lora_alpha=8, use_rslora=True, init_lora_weights=False),
    )
    three = [{"q": (24, 16), "v": (16, 24)} for _ in range(3)]
    make_case(
        "lora_layers_patterns",
        three,
        LoraConfig(
            target_modules=["q", "v"],
            r=4,
            lora_alpha=8,
            rank_pattern={"v": 2},
            alpha_pattern={"layers.2.q": 3},
            layers_to_transform=[0, 2],
            layers_pattern="layers",
            init_lora_weights=False,
        ),
    )
    make_case(
        "waveft_layers_to_transform",
        three,
        WaveFTConfig(target_modules=["q", "v"], wavelet_family="db2", layers_to_transform=1, layers_pattern="layers",
                     **wave),
    )
    # LoRA on nn.Conv2d: A is a conv [r, in, kh, kw], B a 1x1 conv [out, r, 1, 1].
    make_case(
        "lora_conv2d",
        [{"conv": (6, 3, 3, 3), "pw": (4, 6, 1, 3), "q": (8, 12)}],
        LoraConfig(target_modules=["conv", "pw", "q"], r=3, lora_alpha=6, init_lora_weights=False),
    )
    make_case(
        "waveft_1024x768_n5000",
        [{"q": (1024, 768)}],
        WaveFTConfig(target_modules=["q"], wavelet_family="db1", n_frequency=5000, scaling=25.0, random_loc_seed=777,
                     init_weights=False),
        store_weights=False,
    )
    print(json.dumps({"out": str(OUT)}))


if __name__ == "__main__":
    main()
