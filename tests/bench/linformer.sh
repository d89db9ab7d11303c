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
# (tests/bench/linformer_data.py, numpy); the chain of training sessions is tests/bench/topic_lib.bash's.
#
# Two programs train from the same initial weights (`init --seed 1`) with the same rows, batch 32,
# lr 5e-4 (the spec's linear schedule, 100 warm-up steps), one thread:
#   dense       examples/bert-tiny.yaml's pipeline
#   linformer   linformer<k=K> in front of it (E and F per layer, [K, 64])
# Reported: the parameter count, the mean training loss of the last 10% of the steps, and the test
# rows' mean cross-entropy and accuracy (forward on the 1024 test rows, dropout off). Only the
# numbers measured in this run; the Markdown report goes to stdout and $BUILD/linformer/results.md.
# BUILD (default build-bench, a Release build made here if missing) names the build folder;
# CORPUS (default $BUILD/linformer/fortunes.txt, made by scripts/fortunes-corpus.sh) the text.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
STEPS=${1:-1200}
K=${2:-16}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/linformer
log() { echo "linformer.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

bench_modelc "$BUILD"
MODELC=$M
mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
DATA=${CORPUS:-}
bench_corpus "$OUT"
CORPUS=$DATA
source tests/bench/topic_lib.bash
topic_data "$OUT" "$CORPUS" "$STEPS"
ROWS=$TOPIC_ROWS

PASSES="autodiff,constfold,cse,fuse,dce,memplan"
"$MODELC" build --batch=$ROWS --passes="$PASSES" examples/bert-tiny.yaml -o "$OUT/dense"
"$MODELC" build --batch=$ROWS --passes="linformer<k=$K>,$PASSES" examples/bert-tiny.yaml -o "$OUT/linformer"
"$OUT/dense" init --seed 1 --out "$OUT/dense-init.safetensors"
"$OUT/linformer" init --seed 1 --out "$OUT/linformer-init.safetensors"

for n in dense linformer; do
  log "training $n: $STEPS steps"
  topic_train "$OUT" "$n" "$STEPS"
done

{
  echo "bert-tiny, dense attention vs linformer<k=$K> (T = 64), $STEPS steps of 32 rows, the same initial weights"
  echo "and rows (is a 64-byte window from the fortunes' computers or songs-poems file; $((TOPIC_NTRAIN * ROWS)) training rows, each seen once, 1024 held-out test rows):"
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
