#!/bin/bash
# tests/bench/bf16.sh [ROUNDS]: bf16 inference speed side by side (issue 10, point 5, forward and
# decode), small only. tests/bench/run.sh now covers this (its ours16 and torch16 engines, for
# gpt-tiny and small, with the bf16 training step and the issue's ratios); this script stays as the
# quicker small-only check.
#
# For the small config (tests/bench/small.yaml: vocab 4096, context 256, dim 384, 6 heads, 6 layers,
# batch 4) on the same weights (PROG init --seed 1): our program in f32 and built with
# --precision=bf16 (PROG bench --runs 10: 3 warm-up calls, medians of 10), and PyTorch 1.13 eager
# in f32 and under torch.autocast("cpu", bfloat16) (tests/bench/torch_model.py bench --runs 10:
# 3 warm-up calls, medians of 10), all at 2 threads. ROUNDS rounds (default 3), the engine order
# rotated per round; the figures are the medians over the rounds. Prints a Markdown table.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-3}
OUT=build-bench/bf16speed
PY=/usr/bin/python3
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
M=build-bench/modelc
S=tests/bench/small.yaml
$M build --passes=constfold,cse,fuse,dce,memplan $S -o "$OUT/f32"
$M build --precision=bf16 --passes=constfold,cse,fuse,dce,memplan $S -o "$OUT/bf16"
"$OUT/f32" init --seed 1 --out "$OUT/w.safetensors"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2
run() {
  case $1 in
    ours-f32) "$OUT/f32" bench --weights "$OUT/w.safetensors" --runs 10 --threads 2 ;;
    ours-bf16) "$OUT/bf16" bench --weights "$OUT/w.safetensors" --runs 10 --threads 2 ;;
    torch-f32) $PY tests/bench/torch_model.py bench $S "$OUT/w.safetensors" --runs 10 ;;
    torch-bf16) $PY tests/bench/torch_model.py bench $S "$OUT/w.safetensors" --runs 10 --autocast bf16 ;;
  esac
}
engines=(ours-f32 ours-bf16 torch-f32 torch-bf16)
: > "$OUT/all.res"
for r in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2 3; do
    e=${engines[$(((i + r) % 4))]}
    echo "bf16.sh: round $r: $e" >&2
    run "$e" | awk -v e="$e" -F': ' '/^(forward_tokens_per_s|decode_tokens_per_s):/ { print e, $1, $2 }' >> "$OUT/all.res"
  done
done
med() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
get() { awk -v e="$1" -v k="$2" '$1 == e && $2 == k { print $3 }' "$OUT/all.res" | med; }
echo "| small, 2 threads | ours f32 | ours bf16 | PyTorch f32 | PyTorch autocast bf16 | ours bf16 / PyTorch bf16 | ours bf16 / ours f32 |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for k in forward_tokens_per_s decode_tokens_per_s; do
  a=$(get ours-f32 $k) b=$(get ours-bf16 $k) c=$(get torch-f32 $k) d=$(get torch-bf16 $k)
  awk -v k="$k" -v a="$a" -v b="$b" -v c="$c" -v d="$d" \
    'BEGIN { printf "| %s | %g | %g | %g | %g | %.2f | %.2f |\n", k, a, b, c, d, b / d, b / a }'
done
