#!/bin/bash
# tests/bench/linformer.sh: the quality of Linformer attention (the linformer pass) against dense
# attention on bert-tiny at equal steps, from the repository root:
#
#     tests/bench/linformer.sh [STEPS] [K]      (default 1200 steps, K = T/4 = 16)
#
# bert-tiny is a sequence classifier (pool first), and classifiers train on labelled rows
# (`PROG train --tokens --targets`), not on raw text (docs/training.md). So the task is built from
# the fortunes corpus: 64-byte windows of two of its fortune files, `computers` (label 0) and
# `songs-poems` (label 1), half and half (found in the corpus by their text, so the fortunes
# package must be installed). One token sees nothing of the others, so the model must gather the
# window into its first token through attention. STEPS x 32 training rows (each seen once) come
# from the first 90% of each file, 1024 test rows from the last 10% of each, never trained on
# (tests/bench/linformer_data.py, numpy), in files of 128 rows: `PROG train --tokens` takes at most
# the compiled batch (128 here, built with --batch=128), so the run is a chain of sessions of 4
# steps of 32 rows, each on the next file, resumed from the previous one's checkpoint (optimiser
# state, schedule and step carried over; the row cursor is back at 0 after 4 steps of 32 of 128).
#
# Two programs train from the same initial weights (`init --seed 1`) with the same rows, batch 32,
# lr 5e-4 (the spec's linear schedule, 100 warm-up steps), one thread:
#   dense       examples/bert-tiny.yaml's pipeline
#   linformer   linformer<k=K> in front of it (E and F per layer, [K, 64])
# Reported: the parameter count, the mean training loss of the last 10% of the steps, and the test
# rows' mean cross-entropy and accuracy (forward on the 1024 test rows, dropout off). Only the
# numbers measured in this run; the Markdown report goes to stdout and $BUILD/linformer/results.md.
# BUILD (default build-bench, a Release build made here if missing) names the build folder;
# CORPUS (default /work/qtrain/fortunes.txt if present, else scripts/fortunes-corpus.sh's) the text.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
STEPS=${1:-1200}
K=${2:-16}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/linformer
log() { echo "linformer.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

if [ ! -x "$BUILD/modelc" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null
  cmake --build "$BUILD" -j2 >/dev/null
fi
MODELC=$BUILD/modelc
mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
CORPUS=${CORPUS:-/work/qtrain/fortunes.txt}
if [ ! -f "$CORPUS" ]; then
  scripts/fortunes-corpus.sh "$OUT/corpus.txt" 2>/dev/null
  CORPUS=$OUT/corpus.txt
fi
ROWS=128
PER=$((ROWS / 32)) NTEST=$((1024 / ROWS))
NTRAIN=$(( (STEPS + PER - 1) / PER ))
/usr/bin/python3 tests/bench/linformer_data.py "$CORPUS" "$OUT" 64 $((NTRAIN * ROWS)) 1024 $ROWS

PASSES="autodiff,constfold,cse,fuse,dce,memplan"
"$MODELC" build --batch=$ROWS --passes="$PASSES" examples/bert-tiny.yaml -o "$OUT/dense"
"$MODELC" build --batch=$ROWS --passes="linformer<k=$K>,$PASSES" examples/bert-tiny.yaml -o "$OUT/linformer"
"$OUT/dense" init --seed 1 --out "$OUT/dense-init.safetensors"
"$OUT/linformer" init --seed 1 --out "$OUT/linformer-init.safetensors"

for n in dense linformer; do
  log "training $n: $STEPS steps"
  start=$(date +%s.%N)
  for ((c = 0; c * PER < STEPS; c++)); do
    from=(--weights "$OUT/$n-init.safetensors")
    [ "$c" -gt 0 ] && from=(--resume "$OUT/$n.ckpt.safetensors")
    stop=$(( (c + 1) * PER < STEPS ? (c + 1) * PER : STEPS ))
    "$OUT/$n" train "${from[@]}" --tokens "$OUT/train_x.$((c % NTRAIN)).npy" --targets "$OUT/train_y.$((c % NTRAIN)).npy" \
      --steps "$STEPS" --stop-at "$stop" --batch 32 --lr 5e-4 --warmup 100 --eval-every 0 --threads 1 \
      --checkpoint "$OUT/$n.ckpt.safetensors" --out "$OUT/$n.safetensors" --log "$OUT/$n.csv" >> "$OUT/$n.log" 2>&1
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f\n", b - a }' > "$OUT/$n.time"
  "$OUT/$n" info | awk '/^parameters:/ { print $2 }' > "$OUT/$n.params"
  for ((i = 0; i < NTEST; i++)); do
    "$OUT/$n" forward --weights "$OUT/$n.safetensors" --tokens "$OUT/test_x.$i.npy" --out "$OUT/$n.logits.$i.npy" --threads 1
  done
  /usr/bin/python3 tests/bench/linformer_data.py --score "$OUT" "$n" "$NTEST" > "$OUT/$n.score"
  awk -F, -v s="$STEPS" 'NR > 1 && $1 > s - s / 10 { t += $3; k++ } END { printf "%.4f\n", t / k }' "$OUT/$n.csv" \
    > "$OUT/$n.train"
done

{
  echo "bert-tiny, dense attention vs linformer<k=$K> (T = 64), $STEPS steps of 32 rows, the same initial weights"
  echo "and rows (is a 64-byte window from the fortunes' computers or songs-poems file; $((NTRAIN * ROWS)) training rows, each seen once, 1024 held-out test rows):"
  echo
  echo "| attention | parameters | train loss (last 10% of steps) | test loss | test accuracy | training wall time (s, 1 thread, all sessions) |"
  echo "|---|---|---|---|---|---|"
  for n in dense linformer; do
    read -r loss acc < "$OUT/$n.score"
    label=$n; [ "$n" = linformer ] && label="linformer<k=$K>"
    echo "| $label | $(cat "$OUT/$n.params") | $(cat "$OUT/$n.train") | $loss | $acc | $(cat "$OUT/$n.time") |"
  done
  echo
  echo "Command: \`tests/bench/linformer.sh $STEPS $K\`; machine: $(nproc) cores, $(uname -m); $(date -u '+%Y-%m-%d %H:%M UTC')."
} | tee "$OUT/results.md"
