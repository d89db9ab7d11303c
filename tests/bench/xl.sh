#!/bin/bash
# tests/bench/xl.sh: Transformer-XL segment memory against the same model without memory, at equal
# segment length and equal steps (docs/benchmarks.md, "Segment recurrence (issue 14)").
#
# Model: examples/xl-tiny.yaml (byte-level, segment T = 64, memory M = 64 per layer, batch 4,
# dim 128, 4 pre-LN layers, 4 heads, relative positions, no position table). Two runs of one
# program on DATA (default $OUT/fortunes.txt, scripts/fortunes-corpus.sh), seed 1, STEPS (default
# 1500) steps, lr LR (default 2e-3), warm-up 60 then constant, validation every EVERY (default 250):
#   memory     PROG train: 4 streams of the training bytes read in consecutive 64-byte segments,
#              each layer's memory carried from one segment to the next (stop-gradient)
#   no memory  PROG train --no-memory: the same streams and segments, the memory reset at every
#              segment (each segment sees only itself: a 64-byte context)
# Held-out bits per byte: PROG eval of each final model on the last 10% of DATA (the trainer's
# held-out tail), read as 4 streams of consecutive segments, with the memory and with --no-memory.
# The memory-trained model read without memory shows how much of its gain comes from the memory.
#
# Quality only (no timing): no lock needed. Raw outputs in build-q/xl/ (XL_OUT).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
OUT=${XL_OUT:-build-q/xl}
STEPS=${STEPS:-1500}
EVERY=${EVERY:-250}
LR=${LR:-2e-3}
SEED=${SEED:-1}
SPEC=examples/xl-tiny.yaml
NICE=(nice -n 19)
mkdir -p "$OUT"
bench_modelc build-release
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2

bench_corpus "$OUT"
bench_split "$DATA" "$OUT/heldout.txt"

"${NICE[@]}" "$M" build "$SPEC" -o "$OUT/xl" >/dev/null
for row in memory no-memory; do
  flags=(); [ $row = no-memory ] && flags=(--no-memory)
  "${NICE[@]}" "$OUT/xl" train --data "$DATA" --steps "$STEPS" --seed "$SEED" --lr "$LR" --warmup 60 \
    --schedule constant --eval-every "$EVERY" "${flags[@]}" --out "$OUT/$row.safetensors" \
    > "$OUT/$row.train.txt" 2> "$OUT/$row.train.err"
  for ev in memory no-memory; do
    eflags=(); [ $ev = no-memory ] && eflags=(--no-memory)
    "${NICE[@]}" "$OUT/xl" eval --weights "$OUT/$row.safetensors" --data "$OUT/heldout.txt" "${eflags[@]}" \
      > "$OUT/$row.eval-$ev.txt"
  done
done

bpb() { sed -n 's/^bits per byte: *//p' "$1"; }
printf '%s\n' "| trained | steps | final train loss | held-out bpb, read with memory | held-out bpb, read without |"
printf '%s\n' "|---|---|---|---|---|"
for row in memory no-memory; do
  loss=$(sed -n 's/^step [0-9]*: loss \([0-9.]*\).*/\1/p' "$OUT/$row.train.txt")
  printf '| %s | %s | %s | %s | %s |\n' "$row" "$STEPS" "$loss" "$(bpb "$OUT/$row.eval-memory.txt")" \
    "$(bpb "$OUT/$row.eval-no-memory.txt")"
done
echo "validation (the trainer's, nats/token, every $EVERY steps):"
for row in memory no-memory; do
  echo "  $row: $(awk -F, 'NR > 1 && $4 != "" { printf "%s:%.4f ", $1, $4 }' "$OUT/$row.csv")"
done
echo "held-out: $(wc -c < "$OUT/heldout.txt") bytes; scored: $(sed -n 's/^tokens: *//p' "$OUT/memory.eval-memory.txt")"
