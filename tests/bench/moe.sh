#!/bin/bash
# tests/bench/moe.sh: the mixture-of-experts layer (issue 14), from the repository root:
#
#     tests/bench/moe.sh build               builds the speed mode's programs (outside the timing lock)
#     tests/bench/moe.sh speed [ROUNDS]      forward FLOPs and time per token as E grows at fixed K
#     tests/bench/moe.sh kernels             rt_moe and rt_moe_dx alone (tests/bench/moe_kernel.c)
#     tests/bench/moe.sh batch [B]           the forward alone at a compiled batch of B (default 16)
#     tests/bench/moe.sh quality [STEPS]     MoE gpt-tiny against dense gpt-tiny at equal compute
#
# speed: examples/moe-tiny.yaml (gpt-tiny with top-1 MLPs of 4 experts) with E = 1, 4 and 16
# experts at top_k 1, and top_k 2 at E = 4 and 16, against examples/gpt-tiny.yaml (the dense MLP of
# the same width): the compiled forward FLOPs per token (PROG info) and `PROG bench` (--runs 7 at
# the full batch 4 x 128: the forward, one training step; 1 and 2 threads), ROUNDS rounds (default
# 3) of every program one after the other, the medians over the rounds reported. The capacity
# factor is E (capacity = every token): random weights route unevenly (a random router on
# correlated hidden states; 20-35% of the pairs dropped at capacity factor 1.25), so with drops the
# time would measure the drop rate; without, every call runs exactly N K routed pairs, and the time
# measures what E costs at equal routed work (the GEMMs' shapes, the router, gather and scatter).
# With BASE_LIB=path/to/libmodelc_rt.a (a runtime from before a change) every moe program is also
# built against it (MODELC_RUNTIME_LIB) and timed next to the new one in each round, its rows marked
# "(base)". Build first, then take the timing lock around the timing alone:
#     tests/bench/moe.sh build && flock /tmp/modelc-bench.lock tests/bench/moe.sh speed
#
# batch: the dense MLP and E = 1, 4, 16 at top_k 1 compiled for batch B (forward only: no
# autodiff), `PROG bench --runs 5` at 1 thread, 3 rounds: whether the E = 16 cost at batch 4 is the
# experts' weights (read once per call whatever the batch) rather than per-token work.
#
# kernels: moe_kernel at moe-tiny's shapes (N = 512, C = 128, H = 512), E = 1, 4, 16 at top_k 1
# and 2, 1 and 2 threads, 3 rounds (the medians of 21 calls each; capacity factor E).
#
# quality: dense gpt-tiny and moe-tiny (E = 4, top-1: the same FLOPs per token, 4x the MLP
# parameters) train STEPS (default 400) steps of 4 x 128 bytes of the fortunes corpus from
# the same seed (the specs' AdamW settings, cosine schedule, 40 warm-up steps), validation every
# STEPS/4 steps on the held-out last 10% of the corpus; reported: parameters, the final
# validation loss and bits per byte, the mean training loss of the last 10% of the steps (for
# moe-tiny the cross-entropy plus the load-balancing loss), and moe-tiny's expert load.
#
# BUILD (default build-bench, a Release build made here if missing) names the build folder;
# CORPUS (default $BUILD/moe/fortunes.txt, made by scripts/fortunes-corpus.sh) the text.
# The Markdown report goes to stdout and $BUILD/moe/MODE.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=${1:-speed}
STEPS=${2:-400}
ROUNDS=${2:-3}
BUILD=${BUILD:-build-bench}
OUT=$BUILD/moe
log() { echo "moe.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

source tests/bench/bench_lib.bash
bench_modelc "$BUILD"
MODELC=$M
mkdir -p "$OUT"

spec() { # spec E K -> $OUT/moe-E-K.yaml, capacity_factor E: capacity N, nothing dropped
  sed "s/moe: {experts: 4, top_k: 1,/moe: {experts: $1, top_k: $2,/; s/capacity_factor: 1.25/capacity_factor: $1/; s/name: moe-tiny/name: moe-e$1-k$2/" \
    examples/moe-tiny.yaml > "$OUT/moe-e$1-k$2.yaml"
  echo "$OUT/moe-e$1-k$2.yaml"
}
key() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
configs=("dense gpt-tiny" "1 1" "4 1" "16 1" "4 2" "16 2")
progs=() # name label
for c in "${configs[@]}"; do
  read -r e k <<< "$c"
  if [ "$e" = dense ]; then progs+=("dense|dense (mlp)|examples/gpt-tiny.yaml|"); continue; fi
  s=$OUT/moe-e$e-k$k.yaml
  progs+=("e$e-k$k|moe E=$e top_k=$k|$s|")
  [ -n "${BASE_LIB:-}" ] && progs+=("e$e-k$k-base|moe E=$e top_k=$k (base)|$s|$BASE_LIB")
done

if [ "$MODE" = build ] || [ "$MODE" = speed ]; then
  for c in "${configs[@]}"; do read -r e k <<< "$c"; [ "$e" = dense ] || spec "$e" "$k" > /dev/null; done
  for p in "${progs[@]}"; do
    IFS='|' read -r n label s lib <<< "$p"
    [ "$MODE" = speed ] && [ -x "$OUT/$n" ] && continue
    if [ -n "$lib" ]; then MODELC_RUNTIME_LIB=$lib "$MODELC" build "$s" -o "$OUT/$n"; else "$MODELC" build "$s" -o "$OUT/$n"; fi
    "$OUT/$n" info > "$OUT/$n.info"
  done
  [ "$MODE" = build ] && exit 0
fi

if [ "$MODE" = speed ]; then
  cpu=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
  for ((round = 1; round <= ROUNDS; round++)); do
    log "round $round of $ROUNDS"
    for p in "${progs[@]}"; do
      IFS='|' read -r n label s lib <<< "$p"
      for t in 1 2; do "$OUT/$n" bench --runs 7 --threads $t -n 1 > "$OUT/$n.bench$t.r$round" 2>&1; done
    done
  done
  {
    echo "gpt-tiny (4 layers, C = 128, T = 128, batch 4) with its MLP (hidden 512) replaced by a mixture of E experts"
    echo "of hidden 512, capacity factor E (nothing dropped); \`PROG bench --runs 7\` (random weights), the medians of"
    echo "$ROUNDS rounds, $cpu:"
    echo
    echo "| MLP | parameters | forward FLOPs per token | forward ms, 1 thread | forward us per token, 1 thread | vs E = 1 (top_k 2: E = 4) | training step ms, 1 thread | forward ms, 2 threads | training step ms, 2 threads |"
    echo "|---|---|---|---|---|---|---|---|---|"
  } > "$OUT/speed.md"
  for p in "${progs[@]}"; do
    IFS='|' read -r n label s lib <<< "$p"
    med() { for ((r = 1; r <= ROUNDS; r++)); do key "$1" "$OUT/$n.bench$2.r$r"; done | tr '\n' ' ' | median; }
    f1=$(med forward_seconds 1); t1=$(med train_step_seconds 1); f2=$(med forward_seconds 2); t2=$(med train_step_seconds 2)
    eval "F1_${n//-/_}=$f1"
    # vs E = 1 at top_k 1, vs E = 4 at top_k 2 (the fewest experts top_k 2 can choose from)
    case $n in *-k1*) one=${n/e[0-9]*-k1/e1-k1} ;; *) one=${n/e[0-9]*-k2/e4-k2} ;; esac
    ref=F1_${one//-/_}
    rel=$([ "$n" = dense ] || [ -z "${!ref:-}" ] && echo "" || awk -v a="$f1" -v b="${!ref}" 'BEGIN { printf "%.2f", a / b }')
    fl=$(awk '/^forward FLOPs:/ { print $3 }' "$OUT/$n.info")
    pc=$(awk '/^parameters:/ { print $2 }' "$OUT/$n.info")
    awk -v l="$label" -v p="$pc" -v f="$fl" -v f1="$f1" -v r="$rel" -v t1="$t1" -v f2="$f2" -v t2="$t2" \
      'BEGIN { printf "| %s | %d | %d | %.2f | %.1f | %s | %.1f | %.2f | %.1f |\n", l, p, f, f1 * 1e3, f1 * 1e6 / 512, r, t1 * 1e3, f2 * 1e3, t2 * 1e3 }' >> "$OUT/speed.md"
  done
  cat "$OUT/speed.md"
  exit 0
fi

if [ "$MODE" = batch ]; then
  B=${2:-16}
  for n in dense 1 4 16; do
    if [ $n = dense ]; then src=examples/gpt-tiny.yaml; else src=$(spec $n 1); fi
    sed "s/^  batch: 4 .*/  batch: $B/; /^  - autodiff/d; /^  - xent_fuse/d" "$src" > "$OUT/b$B-$n.yaml"
    "$MODELC" build "$OUT/b$B-$n.yaml" -o "$OUT/b$B-$n"
  done
  for round in 1 2 3; do
    for n in dense 1 4 16; do "$OUT/b$B-$n" bench --runs 5 --threads 1 -n 0 > "$OUT/b$B-$n.r$round" 2>&1; done
  done
  echo "| MLP (batch $B x 128) | forward ms, 1 thread (median of 3 rounds) | us per token | vs E = 1 |"
  echo "|---|---|---|---|"
  for n in dense 1 4 16; do
    f=$(for r in 1 2 3; do key forward_seconds "$OUT/b$B-$n.r$r"; done | tr '\n' ' ' | median)
    [ $n = 1 ] && one=$f
    awk -v n=$n -v f="$f" -v o="${one:-}" -v b=$B 'BEGIN { printf "| %s | %.2f | %.1f | %s |\n", n == "dense" ? "dense (mlp)" : "moe E=" n " top_k=1", f * 1e3, f * 1e6 / (b * 128), (o == "" ? "" : sprintf("%.2f", f / o)) }'
  done
  exit 0
fi

if [ "$MODE" = kernels ]; then
  LIBS=(-lopenblas)
  if grep -q '^DNNL_LIB:FILEPATH=/' "$BUILD/CMakeCache.txt"; then LIBS+=(-ldnnl -lgomp); fi
  cc -O2 -Wall -Wextra -Iruntime tests/bench/moe_kernel.c "$BUILD/libmodelc_rt.a" -o "$OUT/moe_kernel" "${LIBS[@]}" -lm -lpthread
  : > "$OUT/kernels.txt"
  for round in 1 2 3; do
    for k in 1 2; do
      es=1,4,16; [ $k = 2 ] && es=4,16 # top_k 2 needs two experts
      for t in 1 2; do MODELC_THREADS=$t "$OUT/moe_kernel" 512 128 512 $k $es 21 | sed "s/^/round=$round /" >> "$OUT/kernels.txt"; done
    done
  done
  cat "$OUT/kernels.txt"
  exit 0
fi

[ "$MODE" = quality ] || { echo "usage: $0 build | speed [ROUNDS] | batch [B] | kernels | quality [STEPS]" >&2; exit 2; }
DATA=${CORPUS:-}
bench_corpus "$OUT"
CORPUS=$DATA
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
