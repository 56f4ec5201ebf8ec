#!/usr/bin/env python3
"""PEFT loads an adapter that wft-train trained on SmolLM2's GGUF, onto
transformers' LlamaForCausalLM read from the same file, and gives the same
logits at every position as ours (`llama_logits`): within 1e-4 of the largest
logit. The base model alone is compared too, to show how much of the
difference is the two frameworks' f32 arithmetic rather than the adapter.

Usage (not part of CI; `cargo xtask llama-refs` runs it):
    target/peftref/bin/python scripts/check_llama_peft_loads_ours.py FILE.gguf ADAPTER_DIR OURS.safetensors [OURS_BASE.safetensors]
"""

import json
import sys
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM


def compare(model, ours, what):
    """The worst absolute and relative (to the largest logit) difference."""
    worst, rel = 0.0, 0.0
    n = len([k for k in ours if k.startswith("logits.")])
    with torch.no_grad():
        for i in range(n):
            ids = ours[f"ids.{i}"].long().unsqueeze(0)
            theirs = model(input_ids=ids).logits[0]
            diff = (theirs - ours[f"logits.{i}"]).abs().max().item()
            scale = theirs.abs().max().item()
            worst, rel = max(worst, diff), max(rel, diff / scale)
            print(f"{what}, prompt {i}: {ids.shape[1]} tokens, max |logit| {scale:.1f}, max |difference| {diff:.2e}")
    return worst, rel


def main():
    gguf_path, adapter, ours = Path(sys.argv[1]).resolve(), sys.argv[2], load_file(sys.argv[3])
    ours_base = load_file(sys.argv[4]) if len(sys.argv) > 4 else None
    print(f"torch=={torch.__version__.split('+')[0]} transformers=={transformers.__version__} peft=={peft.__version__}")
    base = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
    base.eval()
    if ours_base is not None:
        b_abs, b_rel = compare(base, ours_base, "base model, no adapter")
        print(f"base model: worst {b_abs:.2e} absolute, {b_rel:.2e} relative to the largest logit")
    model = PeftModel.from_pretrained(base, adapter)
    model.eval()
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    print(f"adapter: {config['peft_type']}, target_modules {config.get('target_modules')}")
    worst, rel = compare(model, ours, "with the adapter")
    verdict = "PASS" if rel <= 1e-4 else "FAIL"
    print(f"with the adapter: worst {worst:.2e} absolute, {rel:.2e} relative to the largest logit ({verdict} at 1e-4 relative)")
    sys.exit(0 if rel <= 1e-4 else 1)


if __name__ == "__main__":
    main()
