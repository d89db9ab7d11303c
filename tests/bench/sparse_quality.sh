#!/bin/bash
# tests/bench/sparse_quality.sh [train|table|generate|all]: block-sparse attention next to dense
# attention at equal steps (docs/benchmarks.md, "Block-sparse attention: quality (issue 13)").
#
# Model: examples/gpt-local.yaml's shapes (byte-level, context 1024, batch 4, dim 128, 4 layers,
# 4 heads, no position table), one program per row, the spec's `sparse:` mapping edited with sed:
#   dense     the sparse key removed (full causal attention)
#   local     pattern local, window 128 (the example itself)
#   local+g8  local window 128 with 8 global tokens
#   strided   pattern strided, stride 32 (~ sqrt(1024)): the 32 keys before and every 32nd
#   fixed     pattern fixed, block 128, summary 16: the query's own block of 128 and the last 16
#             positions of every earlier block
# Every run: DATA (default $OUT/fortunes.txt, made by
# scripts/fortunes-corpus.sh), seed 1, batch 4, lr LR (default 2e-3), warm-up 30 steps then a
# constant rate (--schedule constant: the rate at step s does not depend on --steps, and neither
# does the window stream, so the validation point at step s of a longer run *is* the end of an
# s-step run), validation every EVERY (default 100) steps on the trainer's held-out tail (the last
# 10% of DATA). dense, local and local+g8 train STEPS (default 300) steps; strided and fixed, whose
# kernels are slow at the moment (being reworked), SHORT (default 100) steps, and are compared with
# the others' validation at step SHORT (exactly a SHORT-step run of those, see above). The final
# held-out bits per byte is `PROG eval` of the final weights on the last 10% of DATA (as
# tests/bench/prune.sh evaluates). The allowed-pairs fraction is counted from the pattern
# definitions (docs/runtime.md, "Block-sparse attention") over the causal T x T mask, as a
# fraction of the dense causal pairs T(T+1)/2; FLOPs/token comes from `PROG info`.
# generate: the trained local model decodes 1500 bytes (> the compiled 1024) through its ring KV
# cache; `PROG info`'s state bytes are the fixed decode memory.
#
# Raw outputs in build-q/sparse-quality/ (SQ_OUT). The machine is shared: every run is niced.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
PHASE=${1:-all}
OUT=${SQ_OUT:-build-q/sparse-quality}
STEPS=${STEPS:-300}
SHORT=${SHORT:-100}
EVERY=${EVERY:-100}
LR=${LR:-2e-3}
SEED=${SEED:-1}
T=1024
SPEC=examples/gpt-local.yaml
NICE=(nice -n 10)
mkdir -p "$OUT"
bench_modelc build-q
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2

bench_corpus "$OUT"

# name|sparse mapping ("" = none: dense)|steps
rows=(
  "dense||$STEPS"
  "local|{pattern: local, window: 128}|$STEPS"
  "local+g8|{pattern: local, window: 128, global: 8}|$STEPS"
  "strided|{pattern: strided, stride: 32}|$SHORT"
  "fixed|{pattern: fixed, block: 128, summary: 16}|$SHORT"
)
# kind size summary global for the pairs count
geom() {
  case $1 in
    dense) echo dense 0 0 0 ;; local) echo local 128 0 0 ;; local+g8) echo local 128 0 8 ;;
    strided) echo strided 32 0 0 ;; fixed) echo fixed 128 16 0 ;;
  esac
}

spec_for() { # NAME MAPPING -> OUT/NAME.yaml
  if [ -z "$2" ]; then
    sed -e 's/, sparse: {[^}]*}//' "$SPEC" > "$OUT/$1.yaml"
  else
    sed -e "s/sparse: {[^}]*}/sparse: $2/" "$SPEC" > "$OUT/$1.yaml"
  fi
  grep -q 'attention:' "$OUT/$1.yaml"
}

pairs() { # KIND SIZE SUMMARY GLOBAL: allowed causal pairs at T (the definitions, element by element)
  awk -v kind="$1" -v s="$2" -v c="$3" -v g="$4" -v T=$T 'BEGIN {
    n = 0
    for (q = 0; q < T; q++) for (k = 0; k <= q; k++) {
      d = q - k
      if (k < g) ok = 1
      else if (kind == "dense") ok = 1
      else if (kind == "local") ok = d < s
      else if (kind == "strided") ok = d < s || d % s == 0
      else ok = int(q / s) == int(k / s) || k % s >= s - c
      n += ok
    }
    printf "%d %.4f\n", n, n / (T * (T + 1) / 2) }'
}

train() {
  local n
  bench_split "$DATA" "$OUT/heldout.txt"
  : > "$OUT/results.res"
  for r in "${rows[@]}"; do
    local name=${r%%|*} rest=${r#*|} map steps f
    map=${rest%|*} steps=${rest##*|}
    f=$OUT/$name
    spec_for "$name" "$map"
    $M build "$OUT/$name.yaml" -o "$f"
    "$f" info > "$f.info"
    $M stats "$OUT/$name.yaml" > "$f.stats"
    echo "sparse_quality.sh: $name: $steps steps ($(date -u +%H:%M:%S))" >&2
    /usr/bin/time -f "%e s wall" -o "$f.time" "${NICE[@]}" "$f" train --data "$DATA" --steps "$steps" --batch 4 --lr "$LR" \
      --warmup 30 --schedule constant --seed "$SEED" --eval-every "$EVERY" --threads 2 \
      --out "$f.safetensors" > "$f.train.log" 2>&1
    "${NICE[@]}" "$f" eval --weights "$f.safetensors" --data "$OUT/heldout.txt" --threads 2 > "$f.eval"
    # shellcheck disable=SC2046 # geom prints the four words pairs takes
    read -r np fr < <(pairs $(geom "$name"))
    {
      echo "$name steps $steps"
      echo "$name pairs $np"
      echo "$name frac $fr"
      awk -v e="$name" '/^parameters:/ { print e, "params", $2 } /^forward FLOPs:/ { print e, "flops", $3 }
        /^state bytes:/ { print e, "state", $3 }' "$f.info"
      awk -v e="$name" -F': *' '/^bits per byte:/ { print e, "bpb", $2 }' "$f.eval"
      awk -v e="$name" -F, 'NR > 1 && $5 != "" { print e, "val@" $1, $5 }' "$f.csv"
      awk -v e="$name" '{ print e, "wall", $1 }' "$f.time"
    } >> "$OUT/results.res"
  done
}

get() { awk -v e="$1" -v k="$2" '$1 == e && $2 == k { v = $3 } END { print v }' "$OUT/results.res"; }

table() {
  local pts d0 ds
  pts=$(awk '$2 ~ /^val@/ { sub("val@", "", $2); print $2 }' "$OUT/results.res" | sort -n -u | tr '\n' ' ')
  d0=$(get dense bpb) ds=$(get dense "val@$SHORT")
  {
    echo "CPU flags: $(grep -o 'avx512[a-z_]*\|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "data $DATA (held-out: the last 10%), T = $T, batch 4, lr $LR (warm-up 30, then constant), seed $SEED"
    echo
    printf "| pattern | sparse: | allowed pairs at T=%d (of causal dense) | parameters | FLOPs/token (forward) | steps |" $T
    printf " held-out bpb at the end (PROG eval) | vs dense at the end |"
    for p in $pts; do printf " val bpb @%s |" "$p"; done
    echo " vs dense @$SHORT |"
    printf "|---|---|---:|---:|---:|---:|---:|---:|"
    for p in $pts; do printf -- "---:|"; done
    echo "---:|"
    for r in "${rows[@]}"; do
      local name=${r%%|*} rest=${r#*|} map st b vs
      map=${rest%|*} st=$(get "$name" steps) b=$(get "$name" bpb) vs=$(get "$name" "val@$SHORT")
      printf "| %s | \`%s\` | %s (%s pairs) | %s | %s | %s | %.4f | %s |" "$name" "${map:-(none)}" "$(get "$name" frac)" \
        "$(get "$name" pairs)" "$(get "$name" params)" "$(get "$name" flops)" "$st" "$b" \
        "$(awk -v a="$b" -v b0="$d0" -v s="$st" -v s0="$(get dense steps)" 'BEGIN { print (s == s0) ? sprintf("%+.2f%%", 100 * (a / b0 - 1)) : "(other steps)" }')"
      for p in $pts; do local v; v=$(get "$name" "val@$p"); [ -n "$v" ] && printf " %.4f |" "$v" || printf " - |"; done
      awk -v a="$vs" -v b0="$ds" 'BEGIN { printf " %s |\n", (a == "" || b0 == "") ? "-" : sprintf("%+.2f%%", 100 * (a / b0 - 1)) }'
    done
  } | tee "$OUT/results.md"
}

generate() {
  local f=$OUT/local
  [ -f "$f.safetensors" ] || { echo "sparse_quality.sh: train first (no $f.safetensors)" >&2; exit 1; }
  "${NICE[@]}" "$f" generate --weights "$f.safetensors" --prompt "${PROMPT:-The meaning of life is}" -n 1500 \
    --temperature 0.8 --seed 1 --threads 2 > "$OUT/generate.txt"
  "$f" info | grep '^state bytes:' | tee "$OUT/generate.state"
  echo "sparse_quality.sh: $(wc -c < "$OUT/generate.txt") bytes generated (context $T): $OUT/generate.txt" >&2
}

case $PHASE in
  train) train ;;
  table) table ;;
  generate) generate ;;
  all) train && table && generate ;;
  *) echo "usage: tests/bench/sparse_quality.sh [train|table|generate|all]" >&2; exit 2 ;;
esac
