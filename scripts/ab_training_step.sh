#!/usr/bin/env bash
# Same-run before/after of the MiniLM training step across commits:
# builds `wft-train` at each commit given (a git worktree per commit, the
# shared target directory, each binary copied out right after its build),
# then runs them in alternating blocks, with PEFT's script once per block,
# so that a burst of load on a shared machine lands on every side.
#
#   scripts/ab_training_step.sh BLOCKS COMMIT[+ENV=VALUE] ...
#
# A commit may carry one environment setting (`abc123+RAYON_NUM_THREADS=2`)
# to time one change inside a commit. Prints one line per run:
# `label frozen_ms head_ms lora-r8_ms waveletft-1000_ms`, and PEFT's line.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
blocks=$1; shift
work=$root/target/ab; mkdir -p "$work/bin"
for spec in "$@"; do
  c=${spec%%+*}
  [ -x "$work/bin/$c" ] && continue
  rm -rf "$work/tree"; git -C "$root" worktree add -f -q "$work/tree" "$c"
  (cd "$work/tree" && CARGO_TARGET_DIR=$root/target cargo build --release -q -j2 -p wft-train)
  cp "$root/target/release/wft-train" "$work/bin/$c"
  git -C "$root" worktree remove --force "$work/tree"
done
for _ in $(seq "$blocks"); do
  for spec in "$@"; do
    c=${spec%%+*}; e=X_AB=1; [ "$spec" != "$c" ] && e=${spec#*+}
    env "$e" "$work/bin/$c" bench --rounds 6 --methods head,lora-r8,waveletft-1000 --out "$work/run.json"
    python3 -c "import json;d=json.load(open('$work/run.json'));print('$spec', round(d['frozen_step_secs']*1000), *[round(r['step_secs']*1000) for r in d['rows']])"
  done
  "$root/target/peftref/bin/python" "$root/scripts/bench_peft_training.py" 3 2 2>/dev/null | python3 -c "import json,sys;d=json.load(sys.stdin);print('peft', round(d['frozen_step_secs']*1000), *[r['method']+'='+str(round(r['step_secs']*1000)) for r in d['rows']])"
done
