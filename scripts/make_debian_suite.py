#!/usr/bin/env python3
"""Build the task suite of issue 17 from Debian's package index.

Every task comes from the apt lists on this machine: the `Packages` files
(`Section:`, `Tag:` with debtags, `Source:`) and the English long
descriptions (`*_i18n_Translation-en*`, present after
`apt-get -o Acquire::Languages=en update`). Standard library only;
deterministic for a given index (seeded).

    python3 scripts/make_debian_suite.py [--out data/debian-suite]

Leakage rules, shared by every task:
* **Splits by source package.** Each source package (the `Source:` field, or
  the package's own name) goes to exactly one of train / val / test (70 /
  15 / 15, seeded), so no family (libfoo1, libfoo-dev, foo-doc) is on two
  sides of a split, in any task.
* Every text has the package's own name and its source's name removed
  (case-insensitive), as `make_debian_topics.py` does.
* Transitional and dummy packages are dropped, and so is any package whose
  synopsis (normalised) or long description repeats one already taken.
* Debtags that say `TODO` are ignored.

Tasks (each a folder with `train.tsv`, `val.tsv`, `test.tsv`):

NLU, `label<TAB>text` or `label<TAB>text_a<TAB>text_b`:
* `use`: the package's single `use::` facet (what it is for: editing,
  converting, monitoring, ...) from its long description. Single text.
* `describes`: does this synopsis describe this long description? `yes` for
  the package's own pair; `no` for its synopsis beside the long description
  of another package of the same section (a hard negative). Pairs.
* `word-order`: is this synopsis as written (`original`), or the same words
  in a random order (`shuffled`)? Single text; half of each split shuffled.
* `toolkit`: the package's single `uitoolkit::` facet (gtk, qt, ncurses,
  ...) from its long description. Single text.
* `tags-match`: do these debtags describe this synopsis? `yes` for the
  package's own tags, `no` for the tags of another package of the same
  section. Pairs.
* `same-section`: are these two synopses from the same (topical) archive
  section? Pairs.
* `language`: the single `implemented-in::` facet from the long description.
* `interface`: the single `interface::` facet from the long description.
* `same-source`: are these two synopses from the same source package? `yes`
  for two binaries of one source; `no` for two packages of different sources
  in the same section, the one of 24 candidates sharing most words. Pairs.

Generation, JSON lines `{"prompt": ..., "completion": ...}` (`wft-train lm`'s format):
* `tags2syn`: section and debtags -> synopsis (data-to-text, E2E-like).
* `desc2syn`: long description -> synopsis (summarisation).

Instructions, JSON lines `{"kind": ..., "messages": [user, assistant]}` for
`wft-train lm --chat`: summarise, name the section, describe from tags, and
say whether a package is a program or a library (the last two from the
synopsis alone), each with four phrasings;
half of the test split uses a phrasing never seen in training (its kind ends
in "(held-out phrasing)"). Inputs are cut to 35 words.

`stats.json` lists the sizes, class counts, index files and their dates.
"""
import argparse
import glob
import hashlib
import json
import os
import random
import re
import subprocess
import sys

SEED = 20261202
LISTS = "/var/lib/apt/lists"
SPLITS = ("train", "val", "test")
# Rows per split (at most) for each kind of task.
NLU_SIZES = {"train": 2000, "val": 400, "test": 600}
NLG_SIZES = {"train": 1000, "val": 200, "test": 300}
INSTRUCT_SIZES = {"train": 1200, "val": 200, "test": 400}
USE_MIN_PER_CLASS = 150
BODY_WORDS = 60  # long descriptions are cut to their first words
GEN_WORDS = 35  # and generation inputs shorter still (SmolLM2 examples stay within 96 tokens)
GEN_CHARS = 210  # input and answer together at most this long, for the same reason


def cut_words(text, n):
    return " ".join(text.split()[:n])


def read_index(path):
    out = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], check=True, capture_output=True)
    return out.stdout.decode("utf-8", "replace")


def stanzas(text):
    """Fields of each stanza; continuation lines kept (joined with \\n)."""
    for block in text.split("\n\n"):
        fields, last = {}, None
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                last, v = line.split(":", 1)
                fields[last] = v.strip()
            elif last and line.startswith(" "):
                fields[last] += "\n" + line
        if "Package" in fields:
            yield fields


def remove_names(text, names):
    for n in sorted(names, key=len, reverse=True):
        if len(n) >= 2:
            text = re.sub(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])", " ", text, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", text).strip(" -:,")


def body_text(desc_en):
    """The long description's body as one line: ` .` paragraph marks and
    list markers dropped, cut to BODY_WORDS words."""
    lines = desc_en.split("\n")[1:]
    words = []
    for line in lines:
        line = line.strip()
        if line == ".":
            continue
        line = re.sub(r"^[*+-]\s+", "", line)
        words.extend(line.split())
    return " ".join(words[:BODY_WORDS])


def split_of(source, order):
    return order[source]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "debian-suite"))
    args = ap.parse_args()
    pkg_files = sorted(glob.glob(os.path.join(LISTS, "*_binary-amd64_Packages*")))
    tr_files = sorted(glob.glob(os.path.join(LISTS, "*_i18n_Translation-en*")))
    if not pkg_files or not tr_files:
        sys.exit(f"no package index or Translation-en under {LISTS}: "
                 "run `apt-get -o Acquire::Languages=en update` first")
    descs = {}
    for f in tr_files:
        for st in stanzas(read_index(f)):
            descs.setdefault((st["Package"], st.get("Description-md5")), st.get("Description-en", ""))
    packages = []
    seen_name, seen_syn, seen_body = set(), set(), set()
    for f in pkg_files:
        for st in stanzas(read_index(f)):
            name = st["Package"]
            if name in seen_name:
                continue
            seen_name.add(name)
            desc_en = descs.get((name, st.get("Description-md5")))
            if not desc_en:
                continue
            synopsis_raw = desc_en.split("\n", 1)[0]
            if re.search(r"transitional|dummy package", desc_en, re.IGNORECASE):
                continue
            source = st.get("Source", name).split(" ")[0]
            names = {name, source}
            synopsis = remove_names(synopsis_raw, names)
            body = remove_names(body_text(desc_en), names)
            key_s, key_b = synopsis.lower(), body.lower()
            if len(synopsis) < 8 or len(body.split()) < 8 or key_b in seen_body:
                continue
            seen_body.add(key_b)
            dup_syn = key_s in seen_syn
            seen_syn.add(key_s)
            tags = [t.strip() for t in st.get("Tag", "").replace("\n", " ").split(",") if t.strip()]
            tags = [t for t in tags if "TODO" not in t]
            packages.append({
                "name": name,
                "source": source,
                "section": st.get("Section", "").split("/")[-1],
                "synopsis": synopsis,
                "body": body,
                "tags": tags,
                "dup_synopsis": dup_syn,
            })
    rng = random.Random(SEED)
    sources = sorted({p["source"] for p in packages})
    rng.shuffle(sources)
    n = len(sources)
    order = {}
    for i, s in enumerate(sources):
        order[s] = "train" if i < 0.7 * n else ("val" if i < 0.85 * n else "test")
    by_split = {k: [p for p in packages if order[p["source"]] == k] for k in SPLITS}
    stats = {"seed": SEED, "packages": len(packages), "sources": n,
             "packages_per_split": {k: len(v) for k, v in by_split.items()}, "tasks": {}}
    os.makedirs(args.out, exist_ok=True)

    def write_tsv(task, rows_by_split, extra=None):
        d = os.path.join(args.out, task)
        os.makedirs(d, exist_ok=True)
        info = {}
        for k in SPLITS:
            rows = rows_by_split[k]
            with open(os.path.join(d, f"{k}.tsv"), "w", encoding="utf-8") as fh:
                for r in rows:
                    assert all("\t" not in c and "\n" not in c for c in r)
                    fh.write("\t".join(r) + "\n")
            counts = {}
            for r in rows:
                counts[r[0]] = counts.get(r[0], 0) + 1
            info[k] = {"rows": len(rows), "labels": dict(sorted(counts.items()))}
        stats["tasks"][task] = info | (extra or {})

    def write_jsonl(task, rows_by_split, extra=None):
        d = os.path.join(args.out, task)
        os.makedirs(d, exist_ok=True)
        for k in SPLITS:
            with open(os.path.join(d, f"{k}.jsonl"), "w", encoding="utf-8") as fh:
                for r in rows_by_split[k]:
                    fh.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        stats["tasks"][task] = {k: {"rows": len(v)} for k, v in rows_by_split.items()} | (extra or {})

    def take(rows, k, sizes):
        rng.shuffle(rows)
        return rows[: sizes[k]]

    def facet_task(task, prefix, r):
        """The single `prefix::` debtag from the long description: classes
        with at least USE_MIN_PER_CLASS packages, balanced per split."""
        def facet_of(p):
            u = [t for t in p["tags"] if t.startswith(prefix + "::")]
            return u[0].split("::", 1)[1] if len(u) == 1 else None
        totals = {}
        for p in packages:
            u = facet_of(p)
            if u:
                totals[u] = totals.get(u, 0) + 1
        classes = sorted(c for c, m in totals.items() if m >= USE_MIN_PER_CLASS)
        rows = {}
        for k in SPLITS:
            per = {c: sorted((p for p in by_split[k] if facet_of(p) == c), key=lambda p: p["name"]) for c in classes}
            cap = min(len(v) for v in per.values())
            chosen = []
            for c in classes:
                r.shuffle(per[c])
                chosen.extend((c, p["body"]) for p in per[c][:cap])
            r.shuffle(chosen)
            rows[k] = chosen[: NLU_SIZES[k]]
        write_tsv(task, rows, {"classes": classes, "available": {c: totals[c] for c in classes}})

    # --- use: what the package is for (editing, converting, ...).
    facet_task("use", "use", rng)

    # --- describes: synopsis vs long description, hard negatives from the section.
    rows = {}
    for k in SPLITS:
        pool = [p for p in by_split[k] if not p["dup_synopsis"]]
        pool.sort(key=lambda p: p["name"])
        by_section = {}
        for p in pool:
            by_section.setdefault(p["section"], []).append(p)
        rng.shuffle(pool)
        out = []
        for i, p in enumerate(pool[: NLU_SIZES[k]]):
            if i % 2 == 0:
                out.append(("yes", p["synopsis"], p["body"]))
            else:
                others = [q for q in by_section[p["section"]] if q["source"] != p["source"]]
                if not others:
                    continue
                q = rng.choice(others)
                out.append(("no", p["synopsis"], q["body"]))
        rows[k] = take(out, k, NLU_SIZES)
    write_tsv("describes", rows)

    # --- same-source: two synopses from one source, or lexically close strangers.
    def words(s):
        return set(re.findall(r"[a-z0-9]+", s.lower()))
    rows = {}
    for k in SPLITS:
        pool = [p for p in by_split[k] if not p["dup_synopsis"]]
        pool.sort(key=lambda p: p["name"])
        fam = {}
        for p in pool:
            fam.setdefault(p["source"], []).append(p)
        by_section = {}
        for p in pool:
            by_section.setdefault(p["section"], []).append(p)
        positives = []
        for src in sorted(fam):
            members = fam[src]
            if len(members) >= 2:
                a, b = rng.sample(members, 2)
                if a["synopsis"].lower() != b["synopsis"].lower():
                    positives.append((a, b))
        rng.shuffle(positives)
        positives = positives[: NLU_SIZES[k] // 2]
        out = []
        for a, b in positives:
            out.append(("yes", a["synopsis"], b["synopsis"]))
            cands = [q for q in rng.sample(by_section[a["section"]], min(24, len(by_section[a["section"]])))
                     if q["source"] != a["source"]]
            if cands:
                wa = words(a["synopsis"])
                q = max(cands, key=lambda q: (len(wa & words(q["synopsis"])), q["name"]))
                out.append(("no", a["synopsis"], q["synopsis"]))
        rows[k] = take(out, k, NLU_SIZES)
    write_tsv("same-source", rows)

    # --- word-order: is this synopsis as written, or its words shuffled?
    # (CoLA's kind: acceptability; a bag of words cannot tell.)
    order_rng = random.Random(SEED + 1)
    rows = {}
    for k in SPLITS:
        pool = sorted((p for p in by_split[k] if not p["dup_synopsis"] and len(set(p["synopsis"].split())) >= 5),
                      key=lambda p: p["name"])
        order_rng.shuffle(pool)
        out = []
        for i, p in enumerate(pool[: NLU_SIZES[k]]):
            words_ = p["synopsis"].split()
            if i % 2 == 0:
                out.append(("original", p["synopsis"]))
            else:
                shuffled = words_[:]
                while shuffled == words_:
                    order_rng.shuffle(shuffled)
                out.append(("shuffled", " ".join(shuffled)))
        rows[k] = out
    write_tsv("word-order", rows)

    # --- toolkit: the user-interface toolkit (gtk, qt, ncurses, ...).
    facet_task("toolkit", "uitoolkit", order_rng)

    # --- language: what the package is implemented in (perl, c, python, ...).
    facet_task("language", "implemented-in", random.Random(SEED + 2))

    # --- interface: command line, daemon or text mode.
    facet_task("interface", "interface", random.Random(SEED + 3))

    # --- tags-match: do these debtags describe this synopsis? (pairs;
    # negatives: another package of the same section with at least 3 tags)
    match_rng = random.Random(SEED + 4)
    rows = {}
    for k in SPLITS:
        pool = sorted((p for p in by_split[k] if not p["dup_synopsis"] and len(p["tags"]) >= 3),
                      key=lambda p: p["name"])
        by_section = {}
        for p in pool:
            by_section.setdefault(p["section"], []).append(p)
        match_rng.shuffle(pool)
        out = []
        for i, p in enumerate(pool[: NLU_SIZES[k]]):
            if i % 2 == 0:
                out.append(("yes", p["synopsis"], ", ".join(sorted(p["tags"]))))
                continue
            others = [q for q in by_section[p["section"]] if q["source"] != p["source"] and q["tags"] != p["tags"]]
            if others:
                q = match_rng.choice(others)
                out.append(("no", p["synopsis"], ", ".join(sorted(q["tags"]))))
        rows[k] = out
    write_tsv("tags-match", rows)

    # --- same-section: are these two synopses from the same archive section?
    # (pairs, STS-like; topical sections only, both halves from different sources)
    topical = {"admin", "database", "editors", "electronics", "games", "graphics", "mail",
               "math", "net", "science", "sound", "text", "video", "web"}
    section_rng = random.Random(SEED + 5)
    rows = {}
    for k in SPLITS:
        pool = sorted((p for p in by_split[k] if not p["dup_synopsis"] and p["section"] in topical),
                      key=lambda p: p["name"])
        by_section = {}
        for p in pool:
            by_section.setdefault(p["section"], []).append(p)
        section_rng.shuffle(pool)
        out = []
        for i, p in enumerate(pool[: NLU_SIZES[k]]):
            if i % 2 == 0:
                cands = [q for q in by_section[p["section"]] if q["source"] != p["source"]]
                label = "yes"
            else:
                cands = [q for q in pool if q["section"] != p["section"]]
                label = "no"
            if cands:
                out.append((label, p["synopsis"], section_rng.choice(cands)["synopsis"]))
        rows[k] = out
    write_tsv("same-section", rows)

    # --- generation: tags -> synopsis, long description -> synopsis.
    def tag_input(p):
        return f"section: {p['section']}; tags: " + ", ".join(sorted(p["tags"]))
    rows_t, rows_d = {}, {}
    for k in SPLITS:
        pool = sorted((p for p in by_split[k] if not p["dup_synopsis"]), key=lambda p: p["name"])
        # Short enough for 96 SmolLM2 tokens (checked by tests/smollm2.rs).
        tagged = [p for p in pool if 3 <= len(p["tags"]) and len(tag_input(p)) + len(p["synopsis"]) <= GEN_CHARS]
        pool = [p for p in pool if len(cut_words(p["body"], GEN_WORDS)) + len(p["synopsis"]) <= GEN_CHARS]
        rows_t[k] = [{"prompt": f"Debian package. {tag_input(p)}\nOne-line description:",
                      "completion": " " + p["synopsis"]}
                     for p in take(tagged, k, NLG_SIZES)]
        rows_d[k] = [{"prompt": f"Package description: {cut_words(p['body'], GEN_WORDS)}\nOne-line summary:",
                      "completion": " " + p["synopsis"]}
                     for p in take(pool, k, NLG_SIZES)]
    write_jsonl("tags2syn", rows_t)
    write_jsonl("desc2syn", rows_d)

    # --- instructions: four kinds, several phrasings; test phrasings held out.
    phrasings = {
        "summarise": ["Summarise this package description in one line.",
                      "Write a one-line synopsis for the following description.",
                      "Give a short summary of this software package.",
                      "What is this package, in a few words?"],
        "section": ["Which Debian section does this package belong to? Answer with the section name only.",
                    "Name the archive section of this package (one word).",
                    "Classify this package into its Debian section. Reply with one word.",
                    "In one word, what Debian section fits this package?"],
        "describe": ["Write the one-line description of a package with these tags.",
                     "Describe, in one line, a package tagged like this.",
                     "Here are a package's debtags. Write its synopsis.",
                     "Turn these package tags into a one-line description."],
        "kind": ["Is this package a program or a library? Answer `program` or `library`.",
                 "Answer `program` or `library`: what kind of package is this?",
                 "Does this describe a program or a library? Reply with one word: program or library.",
                 "One word, program or library: which is this package?"],
    }
    sections = sorted({p["section"] for p in packages if p["section"]})
    rows = {}
    for k in SPLITS:
        pool = sorted((p for p in by_split[k] if not p["dup_synopsis"]), key=lambda p: p["name"])
        rng.shuffle(pool)
        out, count = [], {kind: 0 for kind in phrasings}
        quota = INSTRUCT_SIZES[k] // len(phrasings)
        for p in pool:
            roles = {t for t in p["tags"] if t.startswith("role::")}
            if roles == {"role::program"}:
                what = "program"
            elif roles and roles <= {"role::shared-lib", "role::devel-lib"}:
                what = "library"
            else:
                what = None
            fits = {
                "summarise": (p["body"], p["synopsis"]),
                "section": (p["synopsis"], p["section"])
                if p["section"] in sections and p["section"] not in ("libs", "oldlibs", "libdevel") else None,
                "describe": (tag_input(p), p["synopsis"]) if len(p["tags"]) >= 3 else None,
                "kind": (p["synopsis"], what) if what else None,
            }
            # The kind furthest below its quota that this package can serve.
            open_kinds = [kind for kind in phrasings if fits[kind] and count[kind] < quota
                          and len(cut_words(fits[kind][0], GEN_WORDS)) + len(fits[kind][1]) <= GEN_CHARS - 100]
            if not open_kinds:
                continue
            kind = min(open_kinds, key=lambda kind: count[kind])
            count[kind] += 1
            # Phrasings 0-2 in train and val; phrasing 3 only in test (held out), half of it.
            ph = 3 if k == "test" and rng.random() < 0.5 else rng.randrange(3)
            inp, tgt = fits[kind]
            user = phrasings[kind][ph] + "\n\n" + cut_words(inp, GEN_WORDS)
            out.append({"kind": kind + (" (held-out phrasing)" if ph == 3 else ""),
                        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": tgt}]})
            if len(out) >= quota * len(phrasings):
                break
        rows[k] = out
    write_jsonl("instruct", rows, {"kinds": {k: {kind: sum(r["kind"].split(" (")[0] == kind for r in rows[k]) for kind in phrasings}
                                             for k in SPLITS}})

    dates = {}
    for rel in sorted(glob.glob(os.path.join(LISTS, "*InRelease"))):
        with open(rel, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("Date:"):
                    dates[os.path.basename(rel)] = line.split(":", 1)[1].strip()
                    break
    stats["index_files"] = [os.path.basename(f) for f in pkg_files + tr_files]
    stats["index_dates"] = dates
    digest = hashlib.sha256()
    for task in sorted(stats["tasks"]):
        for f in sorted(os.listdir(os.path.join(args.out, task))):
            with open(os.path.join(args.out, task, f), "rb") as fh:
                digest.update(fh.read())
    stats["sha256"] = digest.hexdigest()
    with open(os.path.join(args.out, "stats.json"), "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2, sort_keys=True)
        fh.write("\n")
    print(json.dumps({t: {k: v[k]["rows"] for k in SPLITS} for t, v in stats["tasks"].items()}))


if __name__ == "__main__":
    main()
