#!/bin/bash
# tests/bench/gemm_ab.sh [ROUNDS]: the f32 GEMM implementations side by side in one binary
# (runtime/gemm/: MODELC_GEMM=openblas against the machine's default choice, which is oneDNN where
# OpenBLAS runs a pre-AVX core's kernels). For the small config (tests/bench/small.yaml, weights of
# PROG init --seed 1): forward and decode tokens/s and the training step of the f32 program
# (PROG bench --runs 10: 3 warm-up calls, medians of 10), ROUNDS interleaved rounds (default 3),
# medians over rounds. Prints a Markdown table with `PROG info`'s gemm line and OpenBLAS's core.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-3}
OUT=build-bench/gemm_ab
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
build-bench/modelc build tests/bench/small.yaml -o "$OUT/small"
"$OUT/small" init --seed 1 --out "$OUT/w.safetensors" >/dev/null
export OMP_WAIT_POLICY=PASSIVE
: > "$OUT/all.res"
for r in $(seq 1 "$ROUNDS"); do
  for e in openblas default; do
    if [ "$e" = openblas ]; then env=(MODELC_GEMM=openblas); else env=(); fi
    echo "gemm_ab.sh: round $r: $e" >&2
    env "${env[@]}" "$OUT/small" bench --weights "$OUT/w.safetensors" --runs 10 |
      awk -v e="$e" -F': ' '/^(forward_tokens_per_s|decode_tokens_per_s|train_step_seconds):/ { print e, $1, $2 }' >> "$OUT/all.res"
  done
done
echo "gemm: $("$OUT/small" info | sed -n 's/^gemm: *//p')"
echo
echo "| small, f32, 2 threads | MODELC_GEMM=openblas | default | default / openblas |"
echo "|---|---:|---:|---:|"
for k in forward_tokens_per_s decode_tokens_per_s train_step_seconds; do
  a=$(awk -v k=$k '$1 == "openblas" && $2 == k { print $3 }' "$OUT/all.res" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  b=$(awk -v k=$k '$1 == "default" && $2 == k { print $3 }' "$OUT/all.res" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  ratio=$(awk -v a="$a" -v b="$b" -v k=$k 'BEGIN { printf "%.2fx", k == "train_step_seconds" ? a / b : b / a }')
  echo "| $k | $a | $b | $ratio |"
done
