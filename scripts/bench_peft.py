#!/usr/bin/env python3
"""Time Hugging Face PEFT (torch, CPU) on the cases `cargo xtask bench --peer peft`
passes, for comparison with wft-adapter in the same run.

Cases (same strings as crates/wft-adapter/examples/adapter_timing.rs):
  delta:METHOD:OUTxIN:N        METHOD db1 | db2 | fourierft
      delta           layer.get_delta_weight("default")
      delta_then_add  W += get_delta_weight()  (what layer.merge() does)
  fb:METHOD:OUTxIN:N:BATCH     METHOD frozen | db1 | db2 | lora8
      forward_backward  y = layer(x); y.backward(g) with x.requires_grad
                        (the adapter's gradient and dL/dx; W frozen)

Prints `case op seconds` (medians after a warm-up) and a `versions` line.
torch runs with as many threads as the machine has cores.

Usage: target/peftref/bin/python scripts/bench_peft.py CASE...
"""

import json
import os
import sys
import time

import peft
import torch
from peft import FourierFTConfig, LoraConfig, WaveFTConfig, get_peft_model


def median(fn, budget):
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget and len(times) < 200):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


class One(torch.nn.Module):
    def __init__(self, out, inp):
        super().__init__()
        self.layer = torch.nn.Linear(inp, out, bias=False)


def adapted(method, out, inp, n):
    torch.manual_seed(0)
    model = One(out, inp)
    if method in ("db1", "db2"):
        cfg = WaveFTConfig(target_modules=["layer"], n_frequency=n, wavelet_family=method, init_weights=False)
    elif method == "fourierft":
        cfg = FourierFTConfig(target_modules=["layer"], n_frequency=n, init_weights=False)
    elif method == "lora8":
        cfg = LoraConfig(target_modules=["layer"], r=8, lora_alpha=16, init_lora_weights=False)
    else:
        raise SystemExit(f"unknown method {method}")
    return get_peft_model(model, cfg).base_model.model.layer


def main():
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    print("versions " + json.dumps({"torch": torch.__version__, "peft": peft.__version__, "threads": threads}))
    for case in sys.argv[1:]:
        parts = case.split(":")
        out, inp = map(int, parts[2].split("x"))
        n = int(parts[3])
        if parts[0] == "delta":
            layer = adapted(parts[1], out, inp, n)
            with torch.no_grad():
                print(f"{case} delta {median(lambda: layer.get_delta_weight('default'), 2.0):.9f}")
                w = layer.base_layer.weight.data

                def merge():
                    w.add_(layer.get_delta_weight("default"))

                print(f"{case} delta_then_add {median(merge, 2.0):.9f}")
        elif parts[0] == "fb":
            batch = int(parts[4])
            g = torch.Generator().manual_seed(1)
            x0 = torch.randn(batch, inp, generator=g)
            gy = torch.randn(batch, out, generator=g)
            if parts[1] == "frozen":
                layer = torch.nn.Linear(inp, out, bias=False)
                layer.weight.requires_grad_(False)
            else:
                layer = adapted(parts[1], out, inp, n)

            def step():
                x = x0.clone().requires_grad_(True)
                layer(x).backward(gy)
                for p in layer.parameters():
                    p.grad = None

            print(f"{case} forward_backward {median(step, 3.0):.9f}")
        else:
            raise SystemExit(f"bad case {case}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
