#!/usr/bin/env python3
"""A tiny sentencepiece-style (`tokenizer.ggml.model = llama`) GGUF vocabulary
and transformers' ids for it: the reference for the Llama 2 / Mistral
tokenizer path of `wft_train::llm::LlmTokenizer`.

Real Llama 2 and Mistral files are not available offline, so the script
makes one of the same kind:

* a BPE vocabulary learnt by the `tokenizers` trainer on the fixed CORPUS
  below with a Metaspace (`▁`) pre-tokenizer, written as sentencepiece GGUFs
  write theirs: `<unk>`, `<s>`, `</s>`, the 256 byte tokens `<0x00>`..`<0xFF>`
  (type BYTE), then the pieces with scores falling in merge order, and no
  `tokenizer.ggml.merges` (transformers derives them from the scores, as
  it must for Llama 2 files);
* two control tokens (`[INST]`, `[/INST]`, as Mistral's) and one
  user-defined token (`<tool>`);
* `add_bos_token` true, a Llama 2 style chat template.

It writes, under crates/wft-train/tests/fixtures/spm/:

  tiny-spm.gguf   the metadata-only GGUF (llama architecture keys, no tensors)
  tokens.json     texts and transformers' ids (add_special_tokens=True), their
                  decoding; the merges transformers derived from the scores;
                  chat conversations with the text and ids of
                  apply_chat_template(add_generation_prompt=True)

Usage (not part of CI):
    target/peftref/bin/python scripts/make_spm_tokenizer_references.py
"""

import json
import sys
import tempfile
from pathlib import Path

import gguf
import tokenizers
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import AutoTokenizer

# tokenizers comes with transformers' pin.
PINNED = {"transformers": "5.23.0", "gguf": "0.19.0", "tokenizers": None}
OUT = Path(__file__).resolve().parent.parent / "crates" / "wft-train" / "tests" / "fixtures" / "spm"

CORPUS = [
    "WaveletFT fine-tunes a frozen weight in the wavelet domain.",
    "Only a few wavelet coefficients are trained; the update is their inverse transform.",
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "A tokenizer splits text into pieces, and each piece has an id in the vocabulary.",
    "Sentencepiece marks the start of every word with a lower one eighth block.",
    "Numbers such as 1234 and 3.14 and dates such as 2026-12-01 appear in text.",
    "def transform(x):\n    return [v * 2 for v in x]\n",
    "fn main() { println!(\"hello\"); }",
    "Hello, world! Hello again, world.",
    "naïve café résumé, Größe and Straße",
    "[INST] What is a wavelet? [/INST] A short oscillation that starts and stops.",
]

TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "naïve café résumé — Größe, Ελληνικά, русский, 日本語の文章, 한국어, emoji 🎉🚀 and ∑ x² ≤ ∞",
    "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{v:?}\");\n}\n",
    "def f(x):\n\treturn x ** 2  # square\n\n\n",
    "   leading spaces,\ttabs\t\tand trailing   \n\n\n  mixed \r\n line endings",
    " a leading space",
    "Numbers 1234567890, 3.14159, -42 and 1e-5; URLs https://example.com/a?b=c&d=e.",
    "[INST] literal control tokens [/INST] in text",
    "a <tool> user-defined token",
    "unseen letters: qxzj ÆØÅ",
    "x[INST]y<tool>z",
    "[INST]no space after a control token",
    "",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'].strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + message['content'].strip() + '\\n<</SYS>>\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'].strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

CHATS = [
    [{"role": "user", "content": "What is a wavelet?"}],
    [
        {"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "Name a prime number."},
        {"role": "assistant", "content": "Seven is prime."},
        {"role": "user", "content": "Another one?"},
    ],
]

# GGUF token types.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6


def check_versions():
    from importlib.metadata import version

    versions = {
        "transformers": transformers.__version__,
        "gguf": version("gguf"),
        "tokenizers": tokenizers.__version__,
        "python": sys.version.split()[0],
    }
    print("versions:", json.dumps(versions))
    for name, want in PINNED.items():
        if want is not None and versions[name] != want:
            sys.exit(f"{name} {versions.get(name)} is not the pinned {want} (scripts/requirements-peft.txt)")
    return versions


def learn_pieces():
    """Pieces in merge order: the trainer's vocabulary without its alphabet first."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=420, show_progress=False, special_tokens=[])
    tok.train_from_iterator(CORPUS, trainer)
    vocab = tok.get_vocab()
    return [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]


def main():
    versions = check_versions()
    OUT.mkdir(parents=True, exist_ok=True)
    pieces = learn_pieces()
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [UNKNOWN, CONTROL, CONTROL] + [BYTE] * 256
    scores = [0.0] * len(tokens)
    for extra, kind in [("[INST]", CONTROL), ("[/INST]", CONTROL), ("<tool>", USER_DEFINED)]:
        tokens.append(extra)
        types.append(kind)
        scores.append(0.0)
    for i, piece in enumerate(p for p in pieces if p not in tokens):
        tokens.append(piece)
        types.append(NORMAL)
        scores.append(-float(i))
    path = OUT / "tiny-spm.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(64)
    w.add_block_count(2)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_head_count_kv(2)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    tok = AutoTokenizer.from_pretrained(str(OUT), gguf_file=path.name)
    print(type(tok).__name__, len(tokens), "tokens")
    ids = lambda t: tok(t, add_special_tokens=True)["input_ids"]
    out = {
        "source": "scripts/make_spm_tokenizer_references.py",
        "versions": versions,
        "texts": [{"text": t, "ids": ids(t), "decoded": tok.decode(ids(t))} for t in TEXTS],
        # What transformers derived from the scores (the file has no merges).
        "merges": [" ".join(m) for m in json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]],
        "chats": [
            {
                "messages": c,
                "text": tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False),
                "ids": tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False),
            }
            for c in CHATS
        ],
    }
    (OUT / "tokens.json").write_text(json.dumps(out, ensure_ascii=False, indent=1) + "\n")
    for t in out["texts"]:
        print(len(t["ids"]), repr(t["text"][:40]), t["ids"][:12])
    print("wrote", path, "and tokens.json")


if __name__ == "__main__":
    main()
