"""The torch + PEFT stack the peer benchmarks run on, pinned
(`bench_peft_training.py`, `bench_peft_decoder.py`, `bench_peft_vit.py`),
and the set-up they share."""
import sys

PINNED = {"torch": "2.15.0", "peft": "0.21.2", "transformers": "5.23.0"}


def pinned_stack(threads):
    """Exit unless torch, peft and transformers are the pinned versions; run
    torch on `threads` threads from seed 0; return the versions found."""
    import peft
    import torch
    import transformers

    versions = {"torch": torch.__version__.split("+")[0], "peft": peft.__version__, "transformers": transformers.__version__}
    for k, v in PINNED.items():
        if versions[k] != v:
            sys.exit(f"{k} {versions[k]} is not the pinned {v}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    return versions
