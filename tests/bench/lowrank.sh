#!/bin/bash
# tests/bench/lowrank.sh [quality|table|all]: the low-rank table (docs/benchmarks.md, "Low-rank
# factorisation (issue 13)"): SVD rank against held-out bits per byte. Quality only: no timing.
#
# Model: examples/gpt-tiny.yaml trained on the fortunes corpus, CKPT (default
# build-bench/lowrank/tiny.safetensors, trained here first when absent: 6000 steps, lr 2e-3,
# seed 1, ~20 minutes) on DATA (default build-bench/lowrank/fortunes.txt, made by
# scripts/fortunes-corpus.sh; tests/bench/bench_lib.bash). The held-out text is the last 10% of DATA (the trainer's own
# validation split), as in tests/bench/prune.sh.
#
# Rows: dense; lowrank<rank=R> for R = 8 16 32 64; lowrank<energy=E> for E = 0.9 0.99, and 0.9 with
# uniform=true (one rank per block weight: its layers' largest). ONLY="NAME ..." runs those rows
# alone (their lines of OUT/quality.res replaced, the others kept). Every block linear is a
# candidate; a matrix whose rank saves nothing stays dense: rank 64 and energy=0.99 leave the
# [128,128] attention output projections dense.
#
# quality  per row: modelc build with the lowrank pass, --weights CKPT --weights-out (the
#          factorised file); parameters and forward FLOPs per token (PROG info); the rank and
#          retained energy range (modelc stats); held-out bits per byte of the factorised weights;
#          with STEPS > 0 (default 0) also after fine-tuning STEPS steps at LR (default 5e-4; warm-up
#          30, cosine to 5e-5, seed 1) a training program compiled with lowrank before autodiff,
#          started from the factorised file (the dense row fine-tuned the same way). THREADS
#          (default 1) for eval and train.
# table    prints the Markdown table (saved as OUT/results.md).
#
# MODELC (default build-bench/modelc, configured Release by scripts/setup.sh) is the compiler.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
PHASE=${1:-all}
OUT=${LOWRANK_OUT:-build-bench/lowrank}
STEPS=${STEPS:-0}
LR=${LR:-5e-4}
THREADS=${THREADS:-1}
P=constfold,cse,fuse,dce,memplan
TP=autodiff,xent_fuse,$P
mkdir -p "$OUT"
M=${MODELC:-}
if [ -z "$M" ]; then
  [ "$PHASE" = table ] || scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1
  M=build-bench/modelc
fi
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS

bench_corpus "$OUT"
CKPT=${CKPT:-$OUT/tiny.safetensors}

# name|lowrank options (empty: dense)
rows=("dense|" "r8|rank=8" "r16|rank=16" "r32|rank=32" "r64|rank=64" "e0.9|energy=0.9" "e0.9u|energy=0.9;uniform"
  "e0.99|energy=0.99")

pipe() { [ -n "$1" ] && echo "lowrank<$1>,$2" || echo "$2"; } # OPTS PIPELINE

quality() {
  bench_checkpoint "$OUT"
  bench_split "$DATA" "$OUT/heldout.txt"
  touch "$OUT/quality.res"
  for r in "${rows[@]}"; do
    local n=${r%%|*} o=${r#*|} f=$OUT/${r%%|*} w=$CKPT wf=() wt=()
    if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $n "* ]]; then continue; fi
    awk -v n="$n" '$1 != n' "$OUT/quality.res" > "$OUT/quality.res.new" && mv "$OUT/quality.res.new" "$OUT/quality.res"
    echo "lowrank.sh: quality: $n" >&2
    if [ -n "$o" ]; then
      w=$f.safetensors
      wf=(--weights "$CKPT" --weights-out "$w")
      wt=(--weights "$CKPT" --weights-out "$f-t.safetensors") # the same factors (the training build's copy)
    fi
    $M build --passes="$(pipe "$o" $P)" "${wf[@]}" examples/gpt-tiny.yaml -o "$f" 2> "$f.notes"
    "$f" info > "$f.info"
    $M stats --passes="$(pipe "$o" $P)" ${o:+--weights "$CKPT"} examples/gpt-tiny.yaml > "$f.stats" 2>/dev/null
    "$f" eval --weights "$w" --data "$OUT/heldout.txt" --threads "$THREADS" > "$f.eval0"
    awk -v n="$n" -F': *' '/^bits per byte:/ { print n, "bpb0", $2 }' "$f.eval0" >> "$OUT/quality.res"
    awk -v n="$n" -F': *' '/^parameters:/ { print n, "params", $2 } /^forward FLOPs:/ { split($2, a, " "); print n, "flops", a[1] }' \
      "$f.info" >> "$OUT/quality.res"
    awk -v n="$n" '/^lowrank: / { for (i = 1; i <= NF; i++) { if ($i == "rank") r = $(i+1) " " $(i+2) " " $(i+3); if ($i == "energy") e = $(i+1) " " $(i+2) " " $(i+3) }
      sub(/,$/, "", r); print n, "rank", r; print n, "energy", e; print n, "nfact", $2 }' "$f.stats" >> "$OUT/quality.res"
    if [ "$STEPS" -gt 0 ]; then
      $M build --passes="$(pipe "$o" $TP)" "${wt[@]}" examples/gpt-tiny.yaml -o "$f-train" 2>/dev/null
      "$f-train" train --weights "$w" --data "$DATA" --steps "$STEPS" --lr "$LR" --warmup 30 --min-lr 5e-5 \
        --schedule cosine --eval-every 0 --seed 1 --threads "$THREADS" --out "$f-ft.safetensors" > "$f.train.log" 2>&1
      "$f" eval --weights "$f-ft.safetensors" --data "$OUT/heldout.txt" --threads "$THREADS" > "$f.eval1"
      awk -v n="$n" -F': *' '/^bits per byte:/ { print n, "bpb1", $2 }' "$f.eval1" >> "$OUT/quality.res"
    fi
  done
}

get() { awk -v n="$1" -v k="$2" '$1 == n && $2 == k { $1 = ""; $2 = ""; sub(/^  /, ""); print; exit }' "$OUT/quality.res"; }

table() {
  local b0 b1
  b0=$(get dense bpb0)
  b1=$(get dense bpb1)
  {
    echo "checkpoint $CKPT, data $DATA (held-out: the last 10%)$([ -n "$b1" ] && echo "; fine-tuning $STEPS steps at lr $LR")"
    echo
    echo "| row | lowrank | weights factorised | rank | retained energy | parameters | FLOPs/token | bits/byte | vs dense |$([ -n "$b1" ] && echo " bits/byte fine-tuned | vs dense fine-tuned |")"
    echo "|---|---|---|---|---|---|---|---|---|$([ -n "$b1" ] && echo "---|---|")"
    for r in "${rows[@]}"; do
      local n=${r%%|*} o=${r#*|} x0 x1=""
      x0=$(get "$n" bpb0)
      [ -n "$b1" ] && x1=$(get "$n" bpb1)
      printf '| %s | %s | %s | %s | %s | %s | %s | %s | %+.3f |' "$n" "${o:--}" "$(get "$n" nfact)" "$(get "$n" rank)" \
        "$(get "$n" energy)" "$(get "$n" params)" "$(get "$n" flops)" "$x0" "$(awk -v a="$x0" -v b="$b0" 'BEGIN { print a - b }')"
      [ -n "$x1" ] && printf ' %s | %+.3f |' "$x1" "$(awk -v a="$x1" -v b="$b1" 'BEGIN { print a - b }')"
      echo
    done
  } | tee "$OUT/results.md"
}

case $PHASE in
  quality) quality ;;
  table) table ;;
  all) quality && table ;;
  *) echo "usage: $0 [quality|table|all]" >&2; exit 1 ;;
esac
