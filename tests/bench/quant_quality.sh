#!/bin/bash
# tests/bench/quant_quality.sh: the quantisation quality table (docs/benchmarks.md, "Quantisation").
#
# Trains two byte-level models on the fortunes corpus (scripts/fortunes-corpus.sh) with modelc's
# own f32 training program, at 2 threads, unless their weights are already in build-bench/qq/:
#   gpt-tiny      examples/gpt-tiny.yaml, 6000 steps, lr 2e-3, seed 1 (docs/training.md's run:
#                 2.55 bits per byte);
#   quant-medium  tests/bench/quant-medium.yaml (4.9M parameters, dim 256, 6 layers, context 256,
#                 batch 8), 1200 steps, lr 2e-3, seed 1 (about 20 minutes on the 2-core machine);
# then runs tests/bench/quant_quality.py on each: bits per byte on the held-out tail, mean KL
# divergence from the f32 model's next-byte distribution, top-1 agreement and greedy-generation
# agreement, for int8, q8_0, q4_0 (and q8_0/q4_0 with the tied head and embeddings quantised too).
# Prints the tables and writes build-bench/qq/results.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=build-bench/qq
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
M=build-bench/modelc
[ -f "$OUT/fortunes.txt" ] || scripts/fortunes-corpus.sh "$OUT/fortunes.txt"
train() { # NAME SPEC STEPS
  [ -f "$OUT/$1.safetensors" ] && return
  $M build "$2" -o "$OUT/$1-train"
  "$OUT/$1-train" train --data "$OUT/fortunes.txt" --steps "$3" --lr 2e-3 --eval-every 0 --seed 1 --threads 2 \
    --out "$OUT/$1.safetensors"
}
train gpt-tiny examples/gpt-tiny.yaml 6000
train quant-medium tests/bench/quant-medium.yaml 1200
: > "$OUT/results.md"
for m in gpt-tiny:examples/gpt-tiny.yaml quant-medium:tests/bench/quant-medium.yaml; do
  /usr/bin/python3 tests/bench/quant_quality.py $M "${m#*:}" "$OUT/${m%%:*}.safetensors" "$OUT/fortunes.txt" \
    "${m%%:*}" "$OUT" | tee -a "$OUT/results.md"
done
