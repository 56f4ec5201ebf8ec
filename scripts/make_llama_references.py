#!/usr/bin/env python3
"""Reference outputs of transformers and PEFT on SmolLM2-135M-Instruct's GGUF.

transformers reads the GGUF file itself (de-quantized to f32, as
`LlamaForCausalLM`, tokenizer from the metadata), and PEFT wraps it. The
script writes, under crates/wft-train/tests/fixtures/smollm2/:

  tokens.json        texts (Unicode, code, whitespace runs) and their ids;
                     chat conversations and the ids of
                     apply_chat_template(add_generation_prompt=True)
  outputs.json       per prompt: the prompt ids, PEFT-free greedy ids
                     (max_new_tokens=MAX_NEW, EOS stops), and per adapter the
                     greedy ids with it applied, unmerged
  logits.safetensors `base.<i>`: last-position logits of prompt i, and
                     `<adapter>.<i>` the same with each adapter;
                     `<adapter>.<module>.probe`: get_delta_weight() @ PROBE
                     for every adapted module (PROBE[j] = sin(j + 1)), and
                     `<adapter>.<module>.norm`: its Frobenius norm
  adapters/<name>/   PEFT's save_pretrained() of each adapter, its trainable
                     tensors set to seeded random values

Usage (not part of CI; PyTorch is about 5.6 GB):
    cargo xtask fetch-smollm2        # prints the GGUF file
    target/peftref/bin/python scripts/make_llama_references.py FILE.gguf
"""

import json
import shutil
import sys
from pathlib import Path

import gguf
import numpy as np
import peft
import safetensors
import torch
import transformers
from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

PINNED = {
    "torch": "2.15.0",
    "peft": "0.21.2",
    "transformers": "5.23.0",
    "safetensors": "0.8.0",
    "numpy": "2.4.6",
    "gguf": "0.19.0",
}
OUT = Path(__file__).resolve().parent.parent / "crates" / "wft-train" / "tests" / "fixtures" / "smollm2"
MAX_NEW = 24

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café résumé — Größe, Ελληνικά, русский, 日本語の文章, 한국어, emoji 🎉🚀 and ∑ x² ≤ ∞",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{v:?}\");\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n\n\n",
    "   leading spaces,\ttabs\t\tand trailing   \n\n\n  mixed \r\n line endings",
    "Numbers 1234567890, 3.14159, -42 and 1e-5; URLs https://example.com/a?b=c&d=e.",
    "<|im_start|>user\nliteral special tokens in text<|im_end|>",
    "",
]

CHATS = [
    [{"role": "user", "content": "What is a wavelet?"}],
    [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
        {"role": "user", "content": "Another one?"},
    ],
]

PROMPTS = [
    ("plain", "The capital of France is"),
    ("plain", "def fibonacci(n):"),
    ("chat", [{"role": "user", "content": "Write a haiku about the sea."}]),
    ("chat", [{"role": "user", "content": "What is 2 + 3?"}]),
]

ADAPTERS = {
    # db1, on q, k and an MLP projection, some layers, a per-module n.
    "waveft_db1": WaveFTConfig(
        n_frequency=200,
        scaling=25.0,
        wavelet_family="db1",
        random_loc_seed=777,
        target_modules=["q_proj", "k_proj", "down_proj"],
        layers_to_transform=[0, 3, 29],
        n_frequency_pattern={"down_proj": 300},
    ),
    # A longer filter on q and v in every layer.
    "waveft_db4": WaveFTConfig(
        n_frequency=120,
        scaling=25.0,
        wavelet_family="db4",
        random_loc_seed=2024,
        target_modules=["q_proj", "v_proj"],
    ),
    "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1, 2]),
    "fourierft": FourierFTConfig(
        n_frequency=150, scaling=150.0, random_loc_seed=11, target_modules=["k_proj", "up_proj"], layers_to_transform=[5]
    ),
}


def versions():
    got = {
        "torch": torch.__version__.split("+")[0],
        "peft": peft.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
        "gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
    }
    for k, v in got.items():
        print(f"{k}=={v}")
        if PINNED[k] != v:
            sys.exit(f"{k} is {v}, the references are pinned to {PINNED[k]}")


def prompt_ids(tok, kind, prompt):
    if kind == "chat":
        return tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
    return tok(prompt, add_special_tokens=True)["input_ids"]


@torch.no_grad()
def run_prompts(model, tok, name, logits, outputs):
    for i, (kind, prompt) in enumerate(PROMPTS):
        ids = list(prompt_ids(tok, kind, prompt))
        x = torch.tensor([ids])
        out = model(input_ids=x)
        logits[f"{name}.{i}"] = out.logits[0, -1].float().contiguous()
        gen = model.generate(
            input_ids=x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=MAX_NEW,
            do_sample=False,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.eos_token_id,
        )[0, len(ids) :].tolist()
        if tok.eos_token_id in gen:
            gen = gen[: gen.index(tok.eos_token_id)]
        outputs[i]["prompt_ids"] = ids
        outputs[i]["greedy"][name] = gen
        print(f"  {name} {i}: {tok.decode(gen)!r}")


def main():
    versions()
    gguf_path = Path(sys.argv[1]).resolve()
    torch.manual_seed(0)
    folder, name = str(gguf_path.parent), gguf_path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    model.eval()

    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "adapters").mkdir(parents=True)

    tokens = {
        "texts": [{"text": t, "ids": tok(t, add_special_tokens=True)["input_ids"]} for t in TEXTS],
        "chats": [
            {
                "messages": c,
                "ids": list(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False)),
                "text": tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
            }
            for c in CHATS
        ],
        "decoded": [tok.decode(tok(t)["input_ids"]) for t in TEXTS],
    }
    (OUT / "tokens.json").write_text(json.dumps(tokens, ensure_ascii=False, indent=1) + "\n")

    logits = {}
    outputs = [{"kind": k, "prompt": p, "greedy": {}} for k, p in PROMPTS]
    run_prompts(model, tok, "base", logits, outputs)

    gen = torch.Generator().manual_seed(1234)
    for aname, cfg in ADAPTERS.items():
        base = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
        pm = get_peft_model(base, cfg)
        for pname, p in pm.named_parameters():
            if p.requires_grad:
                # Large enough to change the generations, small enough to
                # keep them coherent (far from ties between tokens).
                scale = 0.02 if "lora" in pname else 0.5 if "fourierft" in pname else 0.01
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=gen) * scale)
        pm.eval()
        pm.save_pretrained(OUT / "adapters" / aname)
        for mname, module in pm.named_modules():
            if hasattr(module, "get_delta_weight") and hasattr(module, "active_adapters"):
                d = module.get_delta_weight("default").float()
                probe = torch.sin(torch.arange(d.shape[1], dtype=torch.float64) + 1).float()
                key = mname.removeprefix("base_model.model.")
                logits[f"{aname}.{key}.probe"] = (d @ probe).contiguous()
                logits[f"{aname}.{key}.norm"] = torch.linalg.norm(d).reshape(1)
        run_prompts(pm, tok, aname, logits, outputs)

    save_file(logits, OUT / "logits.safetensors")
    (OUT / "outputs.json").write_text(json.dumps(outputs, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
