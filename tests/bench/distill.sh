#!/bin/bash
# tests/bench/distill.sh: knowledge distillation's quality row (docs/benchmarks.md, "Distillation
# (issue 14)"): a small student distilled from a larger teacher against the same student trained
# alone for the same steps, held-out bits per byte on the fortunes corpus.
#
#   teacher  examples/distill-teacher.yaml (4 layers, 128 wide, context 64) trained TEACHER_STEPS
#            (default 4000) steps on DATA
#   alone    examples/distill-tiny.yaml (2 layers, 64 wide) without its train: distill: key,
#            STEPS (default 3000) steps
#   distill  the same student, the same steps, seed, windows and schedule, distilled from that
#            teacher with each (temperature, alpha) of CONFIGS (default "2:0.5 1:0.5 2:0.9")
#
# Every run: batch 4, lr LR (default 2e-3, warm-up 100, cosine to lr/10), seed 1, 2 threads; DATA
# (default build-bench/distill/fortunes.txt, made by
# scripts/fortunes-corpus.sh): the trainer's own split, the last 10% held out and never trained on.
# The figure is the trainer's final validation loss over that tail in bits per byte (PROG train
# --eval-every, the final step). A quality measurement (no timing): run under nice, no lock.
# Outputs in build-bench/distill/ (OUT); results.md holds the table. MODELC: the compiler
# (default build-bench/modelc, built Release by scripts/setup.sh when missing).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
OUT=${OUT:-build-bench/distill}
TEACHER_STEPS=${TEACHER_STEPS:-4000}
STEPS=${STEPS:-3000}
LR=${LR:-2e-3}
CONFIGS=${CONFIGS:-2:0.5 1:0.5 2:0.9}
mkdir -p "$OUT"
bench_modelc build-bench
bench_corpus "$OUT"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
common=(--data "$DATA" --lr "$LR" --warmup 100 --seed 1 --batch 4 --threads 2)
bpb() { grep -o '([0-9.]* bits per byte)' "$1" | tail -1 | tr -d '(' | cut -d' ' -f1; }

# the teacher (trained once; reused when its weights exist)
cp examples/distill-teacher.yaml "$OUT/distill-teacher.yaml"
"$M" build "$OUT/distill-teacher.yaml" -o "$OUT/teacher"
if [ ! -f "$OUT/teacher.safetensors" ]; then
  nice -n 19 "$OUT/teacher" train "${common[@]}" --steps "$TEACHER_STEPS" --eval-every "$TEACHER_STEPS" \
    --out "$OUT/teacher.safetensors" > "$OUT/teacher.txt"
fi
# the student alone: the example without its distill: key
grep -v 'distill:' examples/distill-tiny.yaml > "$OUT/alone.yaml"
"$M" build "$OUT/alone.yaml" -o "$OUT/alone"
nice -n 19 "$OUT/alone" train "${common[@]}" --steps "$STEPS" --eval-every "$STEPS" --out "$OUT/alone.safetensors" \
  > "$OUT/alone.txt"
{
  echo "| model | steps | held-out bits per byte |"
  echo "|---|---|---|"
  np() { "$1" info | awk '/^parameters:/ { print $2 }'; }
  echo "| teacher (4 layers, 128 wide, $(np "$OUT/teacher") parameters) | $TEACHER_STEPS | $(bpb "$OUT/teacher.txt") |"
  echo "| student alone (2 layers, 64 wide, $(np "$OUT/alone") parameters) | $STEPS | $(bpb "$OUT/alone.txt") |"
} > "$OUT/results.md"
for c in $CONFIGS; do
  t=${c%%:*} a=${c##*:}
  sed "s/temperature: [0-9.]*/temperature: $t/; s/alpha: [0-9.]*/alpha: $a/" examples/distill-tiny.yaml > "$OUT/distill-$t-$a.yaml"
  "$M" build "$OUT/distill-$t-$a.yaml" -o "$OUT/distill-$t-$a"
  nice -n 19 "$OUT/distill-$t-$a" train "${common[@]}" --steps "$STEPS" --eval-every "$STEPS" \
    --teacher-weights "$OUT/teacher.safetensors" --out "$OUT/distill-$t-$a.safetensors" > "$OUT/distill-$t-$a.txt"
  echo "| student distilled, T = $t, alpha = $a | $STEPS | $(bpb "$OUT/distill-$t-$a.txt") |" >> "$OUT/results.md"
done
cat "$OUT/results.md"
