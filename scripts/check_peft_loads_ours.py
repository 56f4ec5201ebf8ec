#!/usr/bin/env python3
"""Load the adapter folders wft-adapter wrote with real PEFT and compare outputs.

For every case folder under OUT_DIR (made by
`cargo run --release --example peft_roundtrip -- OUT_DIR`): rebuild the torch
model from base.safetensors, `PeftModel.from_pretrained` our adapter folder,
run every adapted module on our inputs and compare with our outputs
(relative error max|a-b|/max|b| <= 1e-5). Also checks that PEFT adapted
exactly the modules we did, with the same parameter counts (so our
target_modules matching, n_frequency_pattern and proportional allocation
agree with PEFT's).

Usage (developer machine; see scripts/requirements-peft.txt):
    target/peftref/bin/python scripts/check_peft_loads_ours.py OUT_DIR
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_peft_references import Net, adapted_modules, versions  # noqa: E402


def rebuild(base, conv1d):
    layers = defaultdict(dict)
    for k, v in base.items():
        parts = k.split(".")
        if parts[0] == "layers" and parts[-1] == "weight":
            i, name = int(parts[1]), parts[2]
            out_in = (v.shape[1], v.shape[0]) if conv1d else tuple(v.shape)
            layers[i][name] = out_in
    net = Net([layers[i] for i in sorted(layers)], conv1d)
    net.load_state_dict(base)
    return net


def main():
    versions()
    root = Path(sys.argv[1])
    failures = 0
    for case in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg = json.loads((case / "adapter" / "adapter_config.json").read_text())
        base = load_file(case / "base.safetensors")
        net = rebuild(base, cfg.get("fan_in_fan_out", False))
        model = PeftModel.from_pretrained(net, case / "adapter")
        model.eval()
        ours = load_file(case / "ours_io.safetensors")
        ours_modules = sorted({k.rsplit(".", 1)[0] for k in ours})
        peft_modules = sorted(p for p, _ in adapted_modules(model))
        worst = 0.0
        with torch.no_grad():
            for path, m in adapted_modules(model):
                y = m(ours[f"{path}.x"])
                want = ours[f"{path}.y"]
                worst = max(worst, float((y - want).abs().max() / want.abs().max()))
        ok = ours_modules == peft_modules and worst <= 1e-5
        failures += not ok
        params = sum(p.numel() for n, p in model.named_parameters() if "base_layer" not in n and p.requires_grad is False and any(s in n for s in ("spectrum", "lora_")))
        print(f"{case.name:<24} {'ok' if ok else 'FAIL':<4} modules={len(peft_modules)} params={params} max_rel_err={worst:.2e}")
        if ours_modules != peft_modules:
            print(f"  ours: {ours_modules}\n  peft: {peft_modules}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
