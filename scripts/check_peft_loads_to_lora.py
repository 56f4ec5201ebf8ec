#!/usr/bin/env python3
"""Real PEFT loads the LoRA folders `wft to-lora` writes, and they reach
the Eckart-Young optimum.

For every WaveFT and FourierFT reference folder under
crates/wft-adapter/tests/peft_refs (each made by real PEFT with its base),
run `wft to-lora` at ranks 1, 4 and 16 and at --energy 0.9 into OUT_DIR,
then with PEFT:
  * load the source folder and take each module's delta W as PEFT applies
    it (the layer on the identity, less the frozen layer: PEFT's own
    WaveFT/FourierFT math);
  * load our LoRA folder onto the same base and take its delta W;
  * compare the error ||dW_lora - dW|| / ||dW|| with the optimum of that
    rank from torch's SVD, sqrt(sum_{i>r} s_i^2) / ||dW||.
Prints one line per case and export (modules, parameters, folder bytes,
mean and worst error, worst excess over the optimum) and fails when the
excess passes 1e-5 (float32 forward passes) or PEFT adapts other modules than the source's.

Usage (developer machine; see scripts/requirements-peft.txt):
    cargo build --release -p wft-cli
    target/peftref/bin/python scripts/check_peft_loads_to_lora.py target/release/wft OUT_DIR
"""

import json
import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_peft_loads_ours import rebuild  # noqa: E402
from make_peft_references import OUT as REFS, adapted_modules, versions  # noqa: E402

EXPORTS = [("rank-1", ["--rank", "1"]), ("rank-4", ["--rank", "4"]), ("rank-16", ["--rank", "16"]),
           ("energy-0.9", ["--energy", "0.9"])]


def deltas(case, folder, conv1d):
    """Each adapted module's delta W (out x in) as PEFT applies it: its output
    on the identity minus the frozen layer's, so that the layouts of
    Linear and GPT-2's Conv1D (and of the methods' get_delta_weight) agree."""
    net = rebuild(load_file(case / "base.safetensors"), conv1d)
    model = PeftModel.from_pretrained(net, folder)
    model.eval()
    out = {}
    with torch.no_grad():
        for p, m in adapted_modules(model):
            w = m.base_layer.weight
            eye = torch.eye(w.shape[0] if conv1d else w.shape[1], dtype=w.dtype)
            out[p] = (m(eye) - m.base_layer(eye)).T.double()
    return out


def folder_bytes(folder):
    return sum(f.stat().st_size for f in folder.iterdir())


def main():
    versions()
    wft, out = Path(sys.argv[1]), Path(sys.argv[2])
    failures = 0
    for case in sorted(REFS.iterdir()):
        cfg_path = case / "adapter" / "adapter_config.json"
        if not cfg_path.is_file() or not (case / "base.safetensors").is_file():
            continue
        cfg = json.loads(cfg_path.read_text())
        if cfg["peft_type"] not in ("WAVEFT", "FOURIERFT"):
            continue
        conv1d = cfg.get("fan_in_fan_out", False)
        source = deltas(case, case / "adapter", conv1d)
        for label, args in EXPORTS:
            dest = out / case.name / label
            cmd = [str(wft), "to-lora", "--adapter", str(case / "adapter"), "--base", str(case / "base.safetensors"),
                   "--out", str(dest), "--force", *args]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode != 0:
                print(f"{case.name:<26} {label:<11} FAIL: wft to-lora: {run.stderr.strip()}")
                failures += 1
                continue
            lora = deltas(case, dest, conv1d)
            lcfg = json.loads((dest / "adapter_config.json").read_text())
            if sorted(lora) != sorted(source):
                print(f"{case.name:<26} {label:<11} FAIL: modules {sorted(lora)} vs {sorted(source)}")
                failures += 1
                continue
            errs, excess, params = [], 0.0, 0
            for path, dw in source.items():
                # The rank PEFT gave this module (rank_pattern keys are module paths).
                r = next((v for k, v in lcfg.get("rank_pattern", {}).items() if path == k or path.endswith("." + k)),
                         lcfg["r"])
                s = torch.linalg.svdvals(dw)
                norm = float(dw.norm())
                optimum = float(s[r:].pow(2).sum().sqrt()) / norm
                err = float((lora[path] - dw).norm()) / norm
                errs.append(err)
                excess = max(excess, err - optimum)
                params += r * sum(dw.shape)
            ok = excess <= 1e-5
            failures += not ok
            print(f"{case.name:<26} {label:<11} {'ok' if ok else 'FAIL':<4} modules={len(source)} params={params} "
                  f"bytes={folder_bytes(dest)} error mean={sum(errs) / len(errs):.4f} max={max(errs):.4f} "
                  f"excess over optimum={excess:.1e}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
