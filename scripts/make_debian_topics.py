#!/usr/bin/env python3
"""Build the Debian package-topic classification set (issue 5's real task).

Each example is one package's one-line `Description:` from the apt package
index on this machine (`/var/lib/apt/lists`, present after `apt-get update`),
labelled with its `Section:`. Only topical sections are used: the language
sections (python, perl, libs, ...) would leak their label through words like
"Python module". Descriptions that are duplicates (after normalising case and
spaces), transitional/dummy packages, or empty after cleaning are dropped;
the package's own name is removed from its description. Classes are balanced
by sampling the same number from each, and split 70/15/15 per class.

Standard library only; deterministic for a given apt index (seeded shuffle).

    python3 scripts/make_debian_topics.py [--out data/debian-topics]

Writes train.tsv, val.tsv, test.tsv (label<TAB>text) and stats.json (class
counts, the index files and their Date).
"""
import argparse
import glob
import json
import os
import random
import re
import subprocess
import sys

SECTIONS = [
    "admin", "database", "editors", "electronics", "games", "graphics", "mail",
    "math", "net", "science", "sound", "text", "video", "web",
]
PER_CLASS = 180
SEED = 20261126
LISTS = "/var/lib/apt/lists"


def read_index(path):
    """The text of one Packages file (any compression apt knows)."""
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True)
    return out.stdout.decode("utf-8", "replace")


def stanzas(text):
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, v = line.split(":", 1)
                fields[k] = v.strip()
        if "Package" in fields:
            yield fields


def clean(name, desc):
    desc = re.sub(re.escape(name), " ", desc, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", desc).strip(" -:,")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "debian-topics"))
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(LISTS, "*_binary-amd64_Packages*")))
    if not files:
        sys.exit(f"no package index under {LISTS}: run `apt-get update` first")
    by_class = {s: {} for s in SECTIONS}
    seen_pkg = set()
    for f in files:
        for st in stanzas(read_index(f)):
            name, section, desc = st.get("Package"), st.get("Section", ""), st.get("Description", "")
            section = section.split("/")[-1]  # contrib/games -> games
            if name in seen_pkg or section not in by_class:
                continue
            seen_pkg.add(name)
            if re.search(r"transitional|dummy package", desc, re.IGNORECASE):
                continue
            text = clean(name, desc)
            key = text.lower()
            if len(text) < 8 or any(key in d for d in by_class.values()):
                continue
            by_class[section][key] = text
    rng = random.Random(SEED)
    splits = {"train": [], "val": [], "test": []}
    counts = {}
    for s in SECTIONS:
        texts = sorted(by_class[s].values())
        if len(texts) < PER_CLASS:
            sys.exit(f"section {s} has only {len(texts)} usable descriptions (< {PER_CLASS})")
        rng.shuffle(texts)
        texts = texts[:PER_CLASS]
        n_tr, n_va = int(0.7 * PER_CLASS), int(0.15 * PER_CLASS)
        parts = {"train": texts[:n_tr], "val": texts[n_tr:n_tr + n_va], "test": texts[n_tr + n_va:]}
        counts[s] = {k: len(v) for k, v in parts.items()} | {"available": len(by_class[s])}
        for k, v in parts.items():
            splits[k].extend((s, t) for t in v)
    os.makedirs(args.out, exist_ok=True)
    for k, rows in splits.items():
        rng.shuffle(rows)
        with open(os.path.join(args.out, f"{k}.tsv"), "w", encoding="utf-8") as fh:
            for label, text in rows:
                fh.write(f"{label}\t{text}\n")
    dates = {}
    for rel in sorted(glob.glob(os.path.join(LISTS, "*InRelease"))):
        with open(rel, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Date:"):
                    dates[os.path.basename(rel)] = line.split(":", 1)[1].strip()
                    break
    stats = {
        "sections": SECTIONS,
        "per_class": PER_CLASS,
        "seed": SEED,
        "index_files": [os.path.basename(f) for f in files],
        "index_dates": dates,
        "counts": counts,
        "totals": {k: len(v) for k, v in splits.items()},
    }
    with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2, sort_keys=True)
        fh.write("\n")
    print(json.dumps(stats["totals"]), "examples;", ", ".join(f"{s}: {c['available']}" for s, c in counts.items()))


if __name__ == "__main__":
    main()
