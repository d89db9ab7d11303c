#!/bin/bash
# tests/bench/funnel.sh: sequence compression (Funnel-Transformer; docs/spec.md "pool") against the
# unpooled encoder, from the repository root:
#
#     tests/bench/funnel.sh quality [STEPS]    (default 1200) no lock needed
#     flock /tmp/modelc-bench.lock nice -n 0 tests/bench/funnel.sh time [RUNS]   (default 7)
#
# quality: bert-tiny (examples/bert-tiny.yaml: 2 post-LN layers at T = 64, C = 128, 2 heads, a
# first-token classifier, dropout 0.1) against funnel-bert-tiny (tests/bench/funnel-bert-tiny.yaml:
# the same layers and parameter names, layer 1 after a `pool: {stride: 2}`, so it runs at 32
# positions with pooled queries over the 64 keys) on the topic task of tests/bench/linformer.sh
# (is a 64-byte window from the fortunes' computers or songs-poems file; tests/bench/topic_lib.bash):
# the same initial weights (bert-tiny's `init --seed 1`, loaded by both), the same rows, batch 32,
# lr 5e-4, one thread. Reported: parameters, forward FLOPs per token, the mean training loss of
# the last 10% of the steps, the held-out rows' loss and accuracy, training wall time.
#
# time: forward and training-step time (`PROG bench`, medians of RUNS, 2 threads) of each pair
# side by side in one run: bert-tiny and funnel-bert-tiny (T = 64), and examples/funnel-tiny.yaml
# (T = 128 pooled to 64 and 32, an upsample and a full-length block under a token-level head)
# against the same layers with its pools and upsample removed.
# BUILD (default build-bench, a Release build made here if missing) names the build folder;
# CORPUS (default $BUILD/funnel/quality/fortunes.txt, made by scripts/fortunes-corpus.sh) the text.
# The Markdown report goes to stdout and $BUILD/funnel/<mode>.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
MODE=${1:-quality}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/funnel/$MODE
log() { echo "funnel.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

bench_modelc "$BUILD"
MODELC=$M
mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
flops() { "$1" info | awk '/^forward FLOPs:/ { print $3 }'; }
grep -v -e '- pool:' -e '- upsample:' examples/funnel-tiny.yaml > "$OUT/funnel-tiny-unpooled.yaml"

if [ "$MODE" = quality ]; then
  STEPS=${2:-1200}
  DATA=${CORPUS:-}
  bench_corpus "$OUT"
  CORPUS=$DATA
  source tests/bench/topic_lib.bash
  topic_data "$OUT" "$CORPUS" "$STEPS"
  "$MODELC" build --batch=$TOPIC_ROWS examples/bert-tiny.yaml -o "$OUT/dense"
  "$MODELC" build --batch=$TOPIC_ROWS tests/bench/funnel-bert-tiny.yaml -o "$OUT/funnel"
  "$OUT/dense" init --seed 1 --out "$OUT/dense-init.safetensors"
  cp "$OUT/dense-init.safetensors" "$OUT/funnel-init.safetensors"
  for n in dense funnel; do
    log "training $n: $STEPS steps"
    topic_train "$OUT" "$n" "$STEPS"
  done
  {
    echo "bert-tiny (2 layers at T = 64) vs funnel-bert-tiny (layer 1 after pool stride 2: T = 32), $STEPS steps of 32 rows,"
    echo "the same initial weights and rows (is a 64-byte window from the fortunes' computers or songs-poems file;"
    echo "$((TOPIC_NTRAIN * TOPIC_ROWS)) training rows, each seen once, 1024 held-out test rows):"
    echo
    echo "| model | parameters | forward FLOPs/token | train loss (last 10% of steps) | test loss | test accuracy | training wall time (s, 1 thread, all sessions) |"
    echo "|---|---|---|---|---|---|---|"
    for n in dense funnel; do
      read -r loss acc < "$OUT/$n.score"
      label=bert-tiny; [ "$n" = funnel ] && label=funnel-bert-tiny
      echo "| $label | $(cat "$OUT/$n.params") | $(flops "$OUT/$n") | $(cat "$OUT/$n.train") | $loss | $acc | $(cat "$OUT/$n.time") |"
    done
    echo
    echo "Command: \`tests/bench/funnel.sh quality $STEPS\`; machine: $(nproc) cores, $(uname -m); $(date -u '+%Y-%m-%d %H:%M UTC')."
  } | tee "$OUT/quality.md"
elif [ "$MODE" = time ]; then
  RUNS=${2:-7}
  "$MODELC" build examples/bert-tiny.yaml -o "$OUT/bert-tiny"
  "$MODELC" build tests/bench/funnel-bert-tiny.yaml -o "$OUT/funnel-bert-tiny"
  "$MODELC" build "$OUT/funnel-tiny-unpooled.yaml" -o "$OUT/funnel-tiny-unpooled"
  "$MODELC" build examples/funnel-tiny.yaml -o "$OUT/funnel-tiny"
  key() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }
  for n in bert-tiny funnel-bert-tiny funnel-tiny-unpooled funnel-tiny; do
    log "bench $n"
    "$OUT/$n" bench --runs "$RUNS" --threads 2 > "$OUT/$n.bench" 2>&1
  done
  {
    echo "Forward (batch 4, full context) and one training step (forward + backward + AdamW), medians of $RUNS runs, 2 threads,"
    echo "each pair side by side in one run:"
    echo
    echo "| model | T | forward FLOPs/token | forward s | train step s | FLOPs ratio | forward time ratio | train step ratio |"
    echo "|---|---|---|---|---|---|---|---|"
    set -- bert-tiny funnel-bert-tiny funnel-tiny-unpooled funnel-tiny
    while [ $# -gt 0 ]; do
      d=$1 f=$2; shift 2
      for n in "$d" "$f"; do
        ratio="1"; tr=1; sr=1
        if [ "$n" = "$f" ]; then
          ratio=$(awk -v a="$(flops "$OUT/$f")" -v b="$(flops "$OUT/$d")" 'BEGIN { printf "%.3f", a / b }')
          tr=$(awk -v a="$(key forward_seconds "$OUT/$f.bench")" -v b="$(key forward_seconds "$OUT/$d.bench")" 'BEGIN { printf "%.3f", a / b }')
          sr=$(awk -v a="$(key train_step_seconds "$OUT/$f.bench")" -v b="$(key train_step_seconds "$OUT/$d.bench")" 'BEGIN { printf "%.3f", a / b }')
        fi
        echo "| $n | $(key forward_context "$OUT/$n.bench") | $(flops "$OUT/$n") | $(key forward_seconds "$OUT/$n.bench") | $(key train_step_seconds "$OUT/$n.bench") | $ratio | $tr | $sr |"
      done
    done
    echo
    echo "Command: \`flock /tmp/modelc-bench.lock nice -n 0 tests/bench/funnel.sh time $RUNS\`; machine: $(nproc) cores, $(uname -m),"
    echo "$(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' '); $(date -u '+%Y-%m-%d %H:%M UTC')."
  } | tee "$OUT/time.md"
else
  echo "usage: tests/bench/funnel.sh quality [STEPS] | time [RUNS]" >&2
  exit 2
fi
