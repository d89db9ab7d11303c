#!/bin/bash
# tests/bench/profile.sh: where the generated program's time goes, for the small config.
#
#     tests/bench/profile.sh            (after tests/bench/run.sh, which builds build-bench/)
#
# perf record -g (cpu-clock sampling, 2 kHz, all threads) on
#   forward: small-fwd bench --runs 15 -n 1   (16 batch-4 x 256 forwards; decode reduced to 1 token)
#   decode:  small generate -n 254, 4 times   (1-byte prompt, greedy: 254 KV-cache steps at batch 1)
#   train:   small train --steps 8            (8 AdamW steps of batch 4 x 256 on the fortunes corpus)
# small-fwd is tests/bench/small.yaml built without the autodiff pass (--passes=constfold,cse,fuse,
# dce,memplan): the same forward code (the generated forward functions are identical), but its
# bench has no training step to dilute the forward profile. 2 pool threads (OPENBLAS_NUM_THREADS=2).
# Prints the top symbols by self time (perf report --no-children) and by shared object.
# Data: build-bench/bench/perf.{forward,decode,train}.data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=build-bench/bench
P=$OUT/small
W=$OUT/small.safetensors
[ -x "$P" ] && [ -f "$W" ] && [ -f "$OUT/corpus.txt" ] || { echo "profile.sh: run tests/bench/run.sh first" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=2
build-bench/modelc build --passes=constfold,cse,fuse,dce,memplan tests/bench/small.yaml -o "$OUT/small-fwd"

perf record -q -e cpu-clock -F 2000 -g -o "$OUT/perf.forward.data" -- "$OUT/small-fwd" bench --weights "$W" --runs 15 -n 1 >/dev/null
perf record -q -e cpu-clock -F 2000 -g -o "$OUT/perf.decode.data" -- bash -c \
  "for i in 1 2 3 4; do '$P' generate --weights '$W' --prompt A -n 254 --temperature 0 >/dev/null; done"
perf record -q -e cpu-clock -F 2000 -g -o "$OUT/perf.train.data" -- "$P" train --data "$OUT/corpus.txt" \
  --weights "$W" --steps 8 --eval-every 0 --out "$OUT/profile-train.safetensors" >/dev/null 2>&1

for k in forward decode train; do
  echo "== $k: self time by symbol (top 25) =="
  perf report -q -i "$OUT/perf.$k.data" --no-children --sort symbol --percent-limit 0.5 -g none 2>/dev/null | head -25
  echo "== $k: self time by shared object =="
  perf report -q -i "$OUT/perf.$k.data" --no-children --sort dso -g none 2>/dev/null | head -8
done
