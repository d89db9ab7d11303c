#!/bin/bash
# tests/bench/moe.sh: the mixture-of-experts layer (issue 14), from the repository root:
#
#     tests/bench/moe.sh speed               forward FLOPs and time per token as E grows at fixed K
#     tests/bench/moe.sh quality [STEPS]     MoE gpt-tiny against dense gpt-tiny at equal compute
#
# speed: examples/moe-tiny.yaml (gpt-tiny with top-1 MLPs of 4 experts) with E = 1, 4 and 16
# experts at top_k 1, and top_k 2 at E = 4 and 16, against examples/gpt-tiny.yaml (the dense MLP of
# the same width): the compiled forward FLOPs per token (PROG info) and `PROG bench` (medians of
# --runs 7 at the full batch 4 x 128: the forward, one training step; 1 and 2 threads). The
# capacity factor is E (capacity = every token): random weights route unevenly (a random router
# on correlated hidden states; 20-35% of the pairs dropped at capacity factor 1.25), so with drops
# the time would measure the drop rate; without, every call runs exactly N K routed pairs, and
# the time measures what E costs at equal routed work (the GEMMs' shapes, the router, gather and
# scatter). All built here, run one after the other in one session. Take the timing lock around
# it: flock /tmp/modelc-bench.lock nice -n 0 tests/bench/moe.sh speed
#
# quality: dense gpt-tiny and moe-tiny (E = 4, top-1: the same FLOPs per token, 4x the MLP
# parameters) train STEPS (default 400) steps of 4 x 128 bytes of the fortunes corpus from
# the same seed (the specs' AdamW settings, cosine schedule, 40 warm-up steps), validation every
# STEPS/4 steps on the held-out last 10% of the corpus; reported: parameters, the final
# validation loss and bits per byte, the mean training loss of the last 10% of the steps (for
# moe-tiny the cross-entropy plus the load-balancing loss), and moe-tiny's expert load.
#
# BUILD (default build-bench, a Release build made here if missing) names the build folder;
# CORPUS (default /work/qtrain/fortunes.txt if present, else scripts/fortunes-corpus.sh's) the text.
# The Markdown report goes to stdout and $BUILD/moe/MODE.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${1:-speed}
STEPS=${2:-400}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/moe
log() { echo "moe.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

if [ ! -x "$BUILD/modelc" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null
  cmake --build "$BUILD" -j2 >/dev/null
fi
MODELC=$BUILD/modelc
mkdir -p "$OUT"

spec() { # spec E K -> $OUT/moe-E-K.yaml, capacity_factor E: capacity N, nothing dropped
  sed "s/moe: {experts: 4, top_k: 1,/moe: {experts: $1, top_k: $2,/; s/capacity_factor: 1.25/capacity_factor: $1/; s/name: moe-tiny/name: moe-e$1-k$2/" \
    examples/moe-tiny.yaml > "$OUT/moe-e$1-k$2.yaml"
  echo "$OUT/moe-e$1-k$2.yaml"
}
key() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }

if [ "$MODE" = speed ]; then
  cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
  configs=("dense gpt-tiny" "1 1" "4 1" "16 1" "4 2" "16 2")
  {
    echo "gpt-tiny (4 layers, C = 128, T = 128, batch 4) with its MLP (hidden 512) replaced by a mixture of E experts"
    echo "of hidden 512, capacity factor E (nothing dropped); \`PROG bench --runs 7\` (random weights), $cpu:"
    echo
    echo "| MLP | parameters | forward FLOPs per token | forward ms, 1 thread | forward us per token, 1 thread | training step ms, 1 thread | forward ms, 2 threads | training step ms, 2 threads |"
    echo "|---|---|---|---|---|---|---|---|"
  } > "$OUT/speed.md"
  for c in "${configs[@]}"; do
    read -r e k <<< "$c"
    if [ "$e" = dense ]; then s=examples/gpt-tiny.yaml; label="dense (mlp)"; n=dense
    else s=$(spec "$e" "$k"); label="moe E=$e top_k=$k"; n=e$e-k$k; fi
    "$MODELC" build "$s" -o "$OUT/$n"
    "$OUT/$n" info > "$OUT/$n.info"
    "$OUT/$n" bench --runs 7 --threads 1 -n 1 > "$OUT/$n.bench1" 2>&1
    "$OUT/$n" bench --runs 7 --threads 2 -n 1 > "$OUT/$n.bench2" 2>&1
    fl=$(awk '/^forward FLOPs:/ { print $3 }' "$OUT/$n.info")
    pc=$(awk '/^parameters:/ { print $2 }' "$OUT/$n.info")
    f1=$(key forward_seconds "$OUT/$n.bench1"); t1=$(key train_step_seconds "$OUT/$n.bench1")
    f2=$(key forward_seconds "$OUT/$n.bench2"); t2=$(key train_step_seconds "$OUT/$n.bench2")
    awk -v l="$label" -v p="$pc" -v f="$fl" -v f1="$f1" -v t1="$t1" -v f2="$f2" -v t2="$t2" \
      'BEGIN { printf "| %s | %d | %d | %.2f | %.1f | %.1f | %.2f | %.1f |\n", l, p, f, f1 * 1e3, f1 * 1e6 / 512, t1 * 1e3, f2 * 1e3, t2 * 1e3 }' >> "$OUT/speed.md"
  done
  cat "$OUT/speed.md"
  exit 0
fi

[ "$MODE" = quality ] || { echo "usage: $0 speed | quality [STEPS]" >&2; exit 2; }
CORPUS=${CORPUS:-/work/qtrain/fortunes.txt}
if [ ! -f "$CORPUS" ]; then
  scripts/fortunes-corpus.sh "$OUT/corpus.txt" 2>/dev/null
  CORPUS=$OUT/corpus.txt
fi
EVAL=$((STEPS / 4))
"$MODELC" build examples/gpt-tiny.yaml -o "$OUT/q-dense"
"$MODELC" build examples/moe-tiny.yaml -o "$OUT/q-moe"
for n in dense moe; do
  log "training $n: $STEPS steps"
  "$OUT/q-$n" train --data "$CORPUS" --steps "$STEPS" --warmup 40 --eval-every "$EVAL" --seed 1 \
    --out "$OUT/q-$n.safetensors" --log "$OUT/q-$n.csv" > "$OUT/q-$n.out" 2> "$OUT/q-$n.log"
  "$OUT/q-$n" info | awk '/^parameters:/ { print $2 }' > "$OUT/q-$n.params"
done
{
  echo "dense gpt-tiny against moe-tiny (4 experts, top-1, capacity factor 1.25, aux_loss 0.01: the same forward"
  echo "FLOPs per token) trained $STEPS steps of 4 x 128 bytes of the fortunes corpus (seed 1, lr 1e-3 cosine, 40 warm-up"
  echo "steps), validation on its held-out last 10%:"
  echo
  echo "| model | parameters | train loss (mean of the last 10% of steps) | val loss (nats/byte) | val bits per byte |"
  echo "|---|---|---|---|---|"
  for n in dense moe; do
    tl=$(awk -F, -v s="$STEPS" 'NR > 1 && $1 > s - s / 10 { t += $3; k++ } END { printf "%.4f", t / k }' "$OUT/q-$n.csv")
    vl=$(awk -F, 'NR > 1 && $4 != "" { v = $4; b = $5 } END { printf "%.4f %.4f", v, b }' "$OUT/q-$n.csv")
    read -r v b <<< "$vl"
    echo "| $([ $n = dense ] && echo "gpt-tiny (dense MLP)" || echo "moe-tiny") | $(cat "$OUT/q-$n.params") | $tl | $v | $b |"
  done
  echo
  echo "moe-tiny's load (\`PROG train\`'s report, the mean over the run's train calls):"
  echo
  echo '```'
  sed -n '/^step /,$p' "$OUT/q-moe.out" | grep -v '^wrote'
  echo '```'
} > "$OUT/quality.md"
cat "$OUT/quality.md"
