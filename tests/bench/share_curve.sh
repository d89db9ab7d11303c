#!/bin/bash
# tests/bench/share_curve.sh: the quality of cross-layer sharing (the share pass) measured as loss
# curves, from the repository root:
#
#     tests/bench/share_curve.sh [STEPS] [EVAL_EVERY]    (default 300 steps, validation every 50)
#
# Four programs train for STEPS steps on the fortunes corpus (scripts/fortunes-corpus.sh; the
# trainer holds out its last 10% for validation) from the same seed (the spec's, 1337), one
# thread, each with its spec's train: settings otherwise:
#   albert-tiny            examples/albert-tiny.yaml as written (share<mode=all>: one block)
#   albert-tiny unshared   the same spec without its share entry (4 blocks of parameters)
#   gpt-tiny               examples/gpt-tiny.yaml as written
#   gpt-tiny + share       its pipeline with share<mode=all> in front
# Reported side by side every EVAL_EVERY steps: the mean training loss over the steps since the
# previous report (nats per byte) and the held-out bits per byte, with each program's parameter
# count and training time. Only the numbers measured in this run; the Markdown report goes to
# stdout and $BUILD/share/results.md, the CSV logs next to it. BUILD (default build-bench, a
# Release build made here if missing) names the build folder.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
STEPS=${1:-300}
EVERY=${2:-50}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/share
log() { echo "share_curve.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

bench_modelc "$BUILD"
MODELC=$M
mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
bench_corpus "$OUT"
grep -v -- '- share: {mode: all}' examples/albert-tiny.yaml > "$OUT/albert-tiny-unshared.yaml"
if grep -q -- '- share:' "$OUT/albert-tiny-unshared.yaml"; then log "could not remove the share entry"; exit 1; fi

NAMES=(albert albert-unshared gpt gpt-share)
LABELS=("albert-tiny (shared)" "albert-tiny unshared" "gpt-tiny" "gpt-tiny + share")
GPT_PASSES="autodiff,xent_fuse,constfold,cse,fuse,dce,memplan"
"$MODELC" build examples/albert-tiny.yaml -o "$OUT/albert"
"$MODELC" build "$OUT/albert-tiny-unshared.yaml" -o "$OUT/albert-unshared"
"$MODELC" build --passes="$GPT_PASSES" examples/gpt-tiny.yaml -o "$OUT/gpt"
"$MODELC" build --passes="share<mode=all>,$GPT_PASSES" examples/gpt-tiny.yaml -o "$OUT/gpt-share"

for n in "${NAMES[@]}"; do
  log "training $n: $STEPS steps"
  start=$(date +%s.%N)
  "$OUT/$n" train --data "$DATA" --steps "$STEPS" --eval-every "$EVERY" --threads 1 \
    --out "$OUT/$n.safetensors" --log "$OUT/$n.csv" > "$OUT/$n.log" 2>&1
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f\n", b - a }' > "$OUT/$n.time"
  "$OUT/$n" info | awk '/^parameters:/ { print $2 }' > "$OUT/$n.params"
done

# one row per report: the mean train loss since the last report and the validation bpb
series() { awk -F, -v e="$EVERY" 'NR > 1 { s += $3; k++; if ($1 % e == 0) { printf "%d %.3f %s\n", $1, s / k, $5; s = 0; k = 0 } }' "$1"; }
{
  echo "Weight sharing: $STEPS steps on the fortunes corpus ($(wc -c < "$DATA") bytes, last 10% held out),"
  echo "seed 1337, 1 thread, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')."
  echo "Command: tests/bench/share_curve.sh $STEPS $EVERY"
  echo
  printf '| model |'; for i in "${!NAMES[@]}"; do printf ' %s |' "${LABELS[$i]}"; done; echo
  printf '|---|'; for _ in "${NAMES[@]}"; do printf -- '---|'; done; echo
  printf '| parameters |'; for n in "${NAMES[@]}"; do printf " %'d |" "$(cat "$OUT/$n.params")"; done; echo
  printf '| training time (s) |'; for n in "${NAMES[@]}"; do printf ' %s |' "$(cat "$OUT/$n.time")"; done; echo
  echo
  printf '| step |'; for i in "${!NAMES[@]}"; do printf ' %s: train loss / val bpb |' "${LABELS[$i]}"; done; echo
  printf '|---|'; for _ in "${NAMES[@]}"; do printf -- '---|'; done; echo
  for n in "${NAMES[@]}"; do series "$OUT/$n.csv" > "$OUT/$n.series"; done
  paste -d' ' "$OUT/albert.series" "$OUT/albert-unshared.series" "$OUT/gpt.series" "$OUT/gpt-share.series" |
    awk '{ printf "| %d |", $1; for (i = 0; i < 4; i++) printf " %s / %.4f |", $(3 * i + 2), $(3 * i + 3); print "" }'
} | tee "$OUT/results.md"
