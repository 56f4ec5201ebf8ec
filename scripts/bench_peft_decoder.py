#!/usr/bin/env python3
"""Training step and generation speed of SmolLM2-135M on PyTorch + PEFT (CPU).

The torch side of the decoder comparison in docs/PERFORMANCE.md, with the
same batches (token ids from a JSON file, written by `cargo xtask bench
--peer peft-train`) and step definitions as `wft-train lm-bench`:

* frozen step: every weight frozen, the token embeddings a leaf that
  requires grad; forward over all but the last token, next-token
  cross-entropy over every position, backward (input gradients only);
* method step: forward, loss, backward, AdamW step, zero_grad, with only the
  method's parameters trainable (q_proj and v_proj in all 30 layers);
* generation: greedy `generate` of exactly NEW tokens (min_new_tokens) after
  the prompt, batch 1 and batch 8 (the prompt repeated), tokens per second.

Rounds interleave one frozen step with one step of every method on the same
batch; medians after a warm-up round.

    target/peftref/bin/python scripts/bench_peft_decoder.py FILE.gguf BATCHES.json ROUNDS THREADS PROMPT NEW
"""
import copy
import json
import statistics
import sys
import time
from pathlib import Path

from peft_stack import pinned_stack


def main():
    import torch
    from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(sys.argv[1]).resolve()
    batches = [torch.tensor(b) for b in json.loads(Path(sys.argv[2]).read_text())]
    rounds, threads = int(sys.argv[3]), int(sys.argv[4])
    prompt, new = sys.argv[5], int(sys.argv[6])
    versions = pinned_stack(threads)
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    base.eval()
    ce = torch.nn.functional.cross_entropy

    def lm_loss(model, ids, embeds=None):
        if embeds is not None:
            logits = model(inputs_embeds=embeds[:, :-1]).logits
        else:
            logits = model(input_ids=ids[:, :-1]).logits
        return ce(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    qv = ["q_proj", "v_proj"]
    configs = {
        "lora-r8": LoraConfig(r=8, lora_alpha=8, target_modules=qv),
        "fourierft-1000": FourierFTConfig(n_frequency=1000, scaling=150.0, target_modules=qv),
        "waveletft-1000": WaveFTConfig(n_frequency=1000, target_modules=qv),
    }
    runs = []
    for m, cfg in configs.items():
        pm = get_peft_model(copy.deepcopy(base), cfg)
        params = [p for p in pm.parameters() if p.requires_grad]
        runs.append({"method": m, "model": pm, "opt": torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0),
                     "trainable": sum(p.numel() for p in params), "times": []})
    frozen = base
    for p in frozen.parameters():
        p.requires_grad_(False)
    frozen_times = []
    for r in range(rounds + 1):
        ids = batches[r % len(batches)]
        t = time.perf_counter()
        emb = frozen.model.embed_tokens(ids).detach().requires_grad_(True)
        lm_loss(frozen, ids, emb).backward()
        assert emb.grad is not None
        f = time.perf_counter() - t
        for run in runs:
            t = time.perf_counter()
            lm_loss(run["model"], ids).backward()
            run["opt"].step()
            run["opt"].zero_grad(set_to_none=True)
            if r > 0:
                run["times"].append(time.perf_counter() - t)
        if r > 0:
            frozen_times.append(f)
    fz = statistics.median(frozen_times)
    prompt_ids = tok(prompt, return_tensors="pt")["input_ids"]

    @torch.no_grad()
    def tok_s(b):
        x = prompt_ids.repeat(b, 1)
        kw = dict(attention_mask=torch.ones_like(x), do_sample=False, pad_token_id=tok.eos_token_id)
        base.generate(input_ids=x, max_new_tokens=2, min_new_tokens=2, **kw)
        t = time.perf_counter()
        out = base.generate(input_ids=x, max_new_tokens=new, min_new_tokens=new, **kw)
        assert out.shape[1] == x.shape[1] + new
        return b * new / (time.perf_counter() - t)

    out = {
        "versions": versions,
        "threads": threads,
        "rounds": rounds,
        "frozen_step_secs": fz,
        "rows": [
            {"method": r["method"], "trainable": r["trainable"], "step_secs": statistics.median(r["times"]),
             "ratio": statistics.median(r["times"]) / fz}
            for r in runs
        ],
        "generate_batch1_tok_s": tok_s(1),
        "generate_batch8_tok_s": tok_s(8),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
