#!/usr/bin/env python3
"""Seed corpora for the cargo fuzz targets in fuzz/ (standard library only).

Writes crates/wft-adapter/tests/fuzz/seeds/<target>/<name>: valid inputs the fuzzer mutates from, in
the layout crates/wft-adapter/tests/fuzz/harness.rs reads (parts joined by
little-endian u32 length prefixes):

* adapter_folder: config | weights | base, one per PEFT reference folder in
  crates/wft-adapter/tests/peft_refs (real PEFT 0.21.2 output);
* native_folder: config | weights, native WAVELETFT folders written here;
* merge_header: mode | index | shard, each reference base alone (mode 0),
  and a one-shard checkpoint with an index and a LoRA-adaptable `w.weight`
  (mode 1).

    python3 scripts/make_fuzz_seeds.py
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REFS = os.path.join(ROOT, "crates", "wft-adapter", "tests", "peft_refs")
OUT = os.path.join(ROOT, "crates", "wft-adapter", "tests", "fuzz", "seeds")


def join(*parts):
    out = b""
    for i, p in enumerate(parts):
        if i + 1 < len(parts):
            out += struct.pack("<I", len(p))
        out += p
    return out


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(text)) + text + data


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for case in sorted(os.listdir(REFS)):
        if not os.path.exists(os.path.join(REFS, case, "base.safetensors")):
            continue  # reference vectors only, no folder
        read = lambda *p: open(os.path.join(REFS, case, *p), "rb").read()
        base = read("base.safetensors")
        write("adapter_folder", case, join(read("adapter", "adapter_config.json"),
                                           read("adapter", "adapter_model.safetensors"), base))
        write("merge_header", case, join(b"\x00", b"", base))

    floats = lambda vals: struct.pack(f"<{len(vals)}f", *vals)
    longs = lambda vals: struct.pack(f"<{len(vals)}q", *vals)
    for name, wavelet, level, mode, layout, shape, locs in [
        ("db2_l2_wavedec", "db2", 2, "periodization", "wavedec", [16, 16], [[0, 0, 0], [1, 2, 3], [3, 1, 1]]),
        ("sym3_l1_wavedec", "sym3", 1, "periodization", "wavedec", [12, 20], [[0, 1, 1], [2, 0, 4]]),
        ("bior22_identity", "bior2.2", 1, "symmetric", "identity", [9, 7], [[0, 8, 6]]),
    ]:
        config = {
            "peft_type": "WAVELETFT",
            "target_modules": ["m"],
            "waveletft": {"wavelet": wavelet, "level": level, "mode": mode, "layout": layout,
                          "n_frequency": len(locs), "scaling": 2.0, "seed": 1},
            "shapes": {"m": shape},
        }
        weights = safetensors([
            ("base_model.model.m.waveletft_coefficients", "F32", [len(locs)], floats([0.5] * len(locs))),
            ("base_model.model.m.waveletft_locations", "I64", [len(locs), 3], longs(sum(locs, []))),
        ])
        write("native_folder", name, join(json.dumps(config).encode(), weights))

    w = safetensors([("w.weight", "F32", [4, 3], floats([0.1] * 12)),
                     ("b", "BF16", [2], b"\x80\x3f\x00\x40")])
    index = json.dumps({"metadata": {"total_size": len(w)},
                        "weight_map": {"w.weight": "model-00001-of-00001.safetensors",
                                       "b": "model-00001-of-00001.safetensors"}}).encode()
    write("merge_header", "sharded_lora_w", join(b"\x01", index, w))
    write("merge_header", "single_lora_w", join(b"\x00", b"", w))
    print(f"wrote seeds under {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
