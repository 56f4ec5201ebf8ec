#!/usr/bin/env python3
"""Training steps and embedding throughput of DINOv2 ViT-S/14 in PyTorch +
PEFT (CPU): the torch side of `cargo xtask bench --peer vit`.

The same folder (`cargo xtask fetch-vit` converts it; transformers reads it
as a `Dinov2Model`), batch, image size and step definitions as
`wft-train vision-bench`:

* frozen step: every weight frozen, the pixels a leaf that requires grad, a
  trainable 10-class head on the CLS token of the final layer norm; forward,
  loss, backward (input gradients only);
* method step: forward, loss, backward, AdamW step, zero_grad, with only the
  method's parameters and the head trainable (`full`: every weight; `head`:
  the encoder run without a graph);
* each method in its own block of rounds, every round one frozen step and
  one step of the method on the same random pixels; medians; ratio = method
  / frozen over its own block;
* embedding: the encoder's forward pass alone under `torch.inference_mode()`
  at EMBED_SIZE, EMBED_BATCH images per call, images per second.

    HF_HUB_OFFLINE=1 target/peftref/bin/python scripts/bench_peft_vit.py \\
        FOLDER SIZE BATCH EMBED_SIZE EMBED_BATCH ROUNDS THREADS
"""
import json
import statistics
import sys
import time

from peft_stack import pinned_stack


def main():
    import torch
    from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model
    from transformers import Dinov2Model

    folder = sys.argv[1]
    size, batch, embed_size, embed_batch, rounds, threads = (int(a) for a in sys.argv[2:8])
    versions = pinned_stack(threads)
    classes = 10
    labels = torch.arange(batch) % classes

    def load():
        m = Dinov2Model.from_pretrained(folder)
        m.eval()  # no dropout, as in wft-train
        return m

    def cls(model, x):
        return model(pixel_values=x).last_hidden_state[:, 0]

    frozen = load()
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen_head = torch.nn.Linear(384, classes)

    def frozen_step(x):
        t = time.perf_counter()
        x = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(frozen_head(cls(frozen, x)), labels)
        loss.backward()
        assert x.grad is not None
        frozen_head.zero_grad(set_to_none=True)
        return time.perf_counter() - t

    # transformers 5 names the checkpoint's `attention.attention.query` and
    # `.value` modules `attention.q_proj` and `attention.v_proj`.
    qv = ["q_proj", "v_proj"]

    def model_for(name):
        m = load()
        if name == "head":
            for p in m.parameters():
                p.requires_grad_(False)
            return m
        if name == "full":
            return m
        cfg = {
            "lora-r8": LoraConfig(r=8, lora_alpha=8, target_modules=qv),
            "fourierft-1000": FourierFTConfig(n_frequency=1000, target_modules=qv),
            "waveletft-1000": WaveFTConfig(n_frequency=1000, target_modules=qv),
        }[name]
        return get_peft_model(m, cfg)

    rows, all_frozen = [], []
    for name in ["head", "full", "lora-r8", "fourierft-1000", "waveletft-1000"]:
        model = model_for(name)
        head = torch.nn.Linear(384, classes)
        params = [p for p in model.parameters() if p.requires_grad] + list(head.parameters())
        trainable = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
        frozen_times, times = [], []
        for r in range(rounds + 1):
            x = torch.randn(batch, 3, size, size)
            f = frozen_step(x)
            t = time.perf_counter()
            if name == "head":
                with torch.no_grad():
                    feats = cls(model, x)
                logits = head(feats)
            else:
                logits = head(cls(model, x))
            torch.nn.functional.cross_entropy(logits, labels).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            if r > 0:  # round 0 warms up
                frozen_times.append(f)
                times.append(time.perf_counter() - t)
        all_frozen += frozen_times
        s = statistics.median(times)
        rows.append({"method": name, "trainable": trainable, "step_secs": s, "ratio": s / statistics.median(frozen_times)})
        del model, opt

    x = torch.randn(embed_batch, 3, embed_size, embed_size)
    rates = []
    for r in range(rounds + 1):
        t = time.perf_counter()
        with torch.inference_mode():
            frozen(pixel_values=x)
        if r > 0:
            rates.append(embed_batch / (time.perf_counter() - t))
    out = {
        "versions": versions,
        "threads": threads,
        "rounds": rounds,
        "frozen_step_secs": statistics.median(all_frozen),
        "rows": rows,
        "embed_images_per_sec": statistics.median(rates),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
