#!/bin/bash
# tests/bench/backends.sh: the C backend against the LLVM backend (docs/backends.md), from the
# repository root:
#
#     tests/bench/backends.sh [ROUNDS]     (default 5 rounds; BENCH_RUNS=N timed runs per process, default 3)
#
# 1. Compile time: `modelc build --emit=obj examples/gpt2-small.yaml` through each backend (C:
#    generate C, then $CC -O2 -march=native -c; LLVM: build the module with the C API, default<O2>,
#    LLVM's target machine for this CPU), wall time, median of 3 (alternating backends); plus the
#    time to the first result of `modelc run ... -- info` (JIT).
# 2. Run time of the generated code: `PROG bench --weights W --runs BENCH_RUNS` for gpt-tiny
#    (examples/gpt-tiny.yaml) and small (tests/bench/small.yaml) built by each backend (-O2, this
#    CPU), same weights (PROG init --seed 1); forward tokens/s at the full compiled batch and
#    context, decode tokens/s (batch 1, KV cache), one training step; ROUNDS interleaved rounds
#    (backend order alternating), medians over the rounds. OPENBLAS_NUM_THREADS=2, 2 pool threads.
#
# modelc is built in Release in build-bench/ (-DMODELC_WERROR=OFF, as tests/bench/run.sh does).
# The Markdown table goes to stdout and build-bench/backends/results.md; progress to stderr.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-5}
RUNS=${BENCH_RUNS:-3}
BUILD=build-bench
OUT=$BUILD/backends
log() { echo "backends.sh: $*" >&2; }
export OPENBLAS_NUM_THREADS=2

log "building modelc (Release) in $BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j2 >&2
M=$BUILD/modelc
mkdir -p "$OUT"

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", b - a }'; }

# ---- compile time ----
for i in 1 2 3; do
  for b in c llvm; do
    t0=$(now)
    "$M" build --backend=$b --emit=obj examples/gpt2-small.yaml -o "$OUT/gpt2-small.$b.o"
    t1=$(now)
    elapsed "$t0" "$t1" >> "$OUT/compile.$b.$$"
  done
  t0=$(now)
  "$M" run examples/gpt2-small.yaml -- info > /dev/null
  t1=$(now)
  elapsed "$t0" "$t1" >> "$OUT/compile.jit.$$"
done
ct_c=$(median < "$OUT/compile.c.$$"); ct_l=$(median < "$OUT/compile.llvm.$$"); ct_j=$(median < "$OUT/compile.jit.$$")
rm -f "$OUT"/compile.*.$$
log "compile gpt2-small: C $ct_c s, LLVM $ct_l s, JIT to info $ct_j s"

# ---- run time ----
SPECS=(examples/gpt-tiny.yaml tests/bench/small.yaml)
for spec in "${SPECS[@]}"; do
  m=$(basename "$spec" .yaml)
  for b in c llvm; do "$M" build --backend=$b "$spec" -o "$OUT/$m.$b"; done
  "$OUT/$m.c" init --seed 1 --out "$OUT/$m.safetensors" > /dev/null
done
rm -f "$OUT"/raw.*
for r in $(seq "$ROUNDS"); do
  order="c llvm"; [ $((r % 2)) = 0 ] && order="llvm c"
  for spec in "${SPECS[@]}"; do
    m=$(basename "$spec" .yaml)
    for b in $order; do
      log "round $r/$ROUNDS: $m ($b)"
      "$OUT/$m.$b" bench --weights "$OUT/$m.safetensors" --runs "$RUNS" > "$OUT/raw.$m.$b.$r"
    done
  done
done
# stat MODEL BACKEND KEY: the median over the rounds
stat() { cat "$OUT"/raw."$1"."$2".* | awk -v k="$3:" '$1 == k { print $2 }' | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", a / b }'; }

{
  echo "| gpt2-small, \`modelc build --emit=obj\` (wall, median of 3) | C backend (\`cc -O2 -march=native\`) | LLVM backend (\`default<O2>\`) | LLVM / C |"
  echo "|---|---|---|---|"
  echo "| compile time, s | $ct_c | $ct_l | $(ratio "$ct_l" "$ct_c") |"
  echo
  echo "\`modelc run examples/gpt2-small.yaml -- info\` (JIT compile, then the program's info): $ct_j s (median of 3)."
  echo
  echo "| generated code, \`PROG bench\` (medians of $ROUNDS rounds x $RUNS runs) | C backend | LLVM backend | LLVM / C |"
  echo "|---|---|---|---|"
  for spec in "${SPECS[@]}"; do
    m=$(basename "$spec" .yaml)
    for k in forward_tokens_per_s decode_tokens_per_s train_step_seconds; do
      c=$(stat "$m" c $k); l=$(stat "$m" llvm $k)
      [ "$c" = nan ] && continue
      echo "| $m $k | $c | $l | $(ratio "$l" "$c") |"
    done
  done
} | tee "$OUT/results.md"
