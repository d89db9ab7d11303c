#!/bin/bash
# tests/bench/quant.sh [ROUNDS]: the quantisation speed table (docs/benchmarks.md, "Quantisation").
#
# For the small config (tests/bench/small.yaml) and GPT-2 small (examples/gpt2-small.yaml, random
# weights: its 500 MB of f32 weights are far beyond any cache), on the same weights (PROG init --seed
# 1 of the f32 program, which every other program quantises or rounds at load):
#   f32     modelc build --passes=constfold,cse,fuse,dce,memplan
#   bf16    the same with --precision=bf16 (bf16 weights, products on the matrix units)
#   int8, q8_0, q4_0   --passes='quantize<scheme=S;head=true;embeddings=true>,constfold,...': every
#           linear weight, the tied head and the embedding table quantised (decode reads every
#           weight once per token, and the 50257 x 768 head is 31% of GPT-2's, so leaving it f32
#           would cap the gain), the int8 kernels of runtime/kernels/linear_quant.c
#   torch-f32, torch-int8   the peer: PyTorch 1.13 eager (tests/bench/torch_model.py bench, 2
#           threads) in f32, and with torch.ao.quantization.quantize_dynamic on the block nn.Linear
#           layers (qint8 weights per output channel, activations quantised per call; PyTorch's own
#           int8 CPU inference, engine as Debian's build defaults: onednn); its tied head stays f32
# each measured by PROG bench --runs BENCH_RUNS (3 warm-up calls, then the median of the timed
# ones; default 10) at 2 threads: forward tokens/s at the full compiled batch x context (prefill)
# and decode tokens/s at batch 1 with the KV cache (-n 32 tokens per sequence for GPT-2 small, the
# default for small). ROUNDS rounds (default 3), the engine order rotated per round (a shared,
# noisy machine: every engine sees the same conditions); figures are medians over the rounds.
# Also: the weight bytes each program holds (PROG info), which one decoded token reads, and the
# fraction of the machine's measured read bandwidth (tests/bench/sgemm_peak.c's mem_read_gbs, 2
# threads) that bytes-per-token x tokens/s makes.
#
# Prints a Markdown table (saved as build-bench/quant/results.md); raw outputs in build-bench/quant/.
# Takes about 10 minutes per round on the 2-core machine (GPT-2 small's f32 forward of 1024 tokens
# is ~10 s, 13 times).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-3}
RUNS=${BENCH_RUNS:-10}
OUT=build-bench/quant
P=constfold,cse,fuse,dce,memplan
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
M=build-bench/modelc
cc -O2 -march=native -Wall -Wextra tests/bench/sgemm_peak.c -o "$OUT/sgemm_peak" -lopenblas -lpthread
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
engines=(f32 bf16 int8 q8_0 q4_0 torch-f32 torch-int8)
NE=${#engines[@]}
specs=(small:tests/bench/small.yaml gpt2:examples/gpt2-small.yaml)
for s in "${specs[@]}"; do
  n=${s%%:*} f=${s#*:}
  $M build --passes=$P "$f" -o "$OUT/$n-f32"
  $M build --precision=bf16 --passes=$P "$f" -o "$OUT/$n-bf16"
  for q in int8 q8_0 q4_0; do
    $M build --passes="quantize<scheme=$q;head=true;embeddings=true>,$P" "$f" -o "$OUT/$n-$q"
  done
  [ -f "$OUT/$n.safetensors" ] || "$OUT/$n-f32" init --seed 1 --out "$OUT/$n.safetensors"
  for e in "${engines[@]}"; do
    case $e in torch-*) ;; *) "$OUT/$n-$e" info > "$OUT/$n-$e.info" ;; esac
  done
done
decode_n() { [ "$1" = gpt2 ] && echo "$2 32" || echo ""; }
bench() { # NAME SPEC ENGINE
  case $3 in
    # shellcheck disable=SC2046
    torch-f32) /usr/bin/python3 tests/bench/torch_model.py bench "$2" "$OUT/$1.safetensors" --runs "$RUNS" $(decode_n "$1" --decode) ;;
    # shellcheck disable=SC2046
    torch-int8) /usr/bin/python3 tests/bench/torch_model.py bench "$2" "$OUT/$1.safetensors" --runs "$RUNS" --quantize int8 $(decode_n "$1" --decode) ;;
    # shellcheck disable=SC2046
    *) "$OUT/$1-$3" bench --weights "$OUT/$1.safetensors" --runs "$RUNS" --threads 2 $(decode_n "$1" -n) ;;
  esac
}
: > "$OUT/all.res"
for r in $(seq 1 "$ROUNDS"); do
  "$OUT/sgemm_peak" 256 2 | awk -F': ' '/^mem_read_gbs:/ { print "mem", "read_gbs", $2 }' >> "$OUT/all.res"
  for s in "${specs[@]}"; do
    n=${s%%:*} f=${s#*:}
    for i in $(seq 0 $((NE - 1))); do
      e=${engines[$(((i + r) % NE))]}
      echo "quant.sh: round $r: $n $e" >&2
      bench "$n" "$f" "$e" |
        awk -v e="$n-$e" -F': ' '/^(forward_tokens_per_s|decode_tokens_per_s):/ { print e, $1, $2 }' >> "$OUT/all.res"
    done
  done
done
med() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
get() { awk -v e="$1" -v k="$2" '$1 == e && $2 == k { print $3 }' "$OUT/all.res" | med; }
bw=$(get mem read_gbs)
{
  echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -xE 'avx2|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_bf16|amx_int8' | tr '\n' ' ')"
  echo "quant kernels: $(grep -m1 '^quant' "$OUT/small-q8_0.info" || echo '?'); measured read bandwidth (2 threads): $bw GB/s; $ROUNDS rounds, medians"
  echo
  echo "| model | weights | weight bytes | forward tok/s | x f32 | decode tok/s | x f32 | decode GB/s (bytes/token x tok/s) | of bandwidth |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
  for s in "${specs[@]}"; do
    n=${s%%:*}
    f0=$(get "$n-f32" forward_tokens_per_s) d0=$(get "$n-f32" decode_tokens_per_s)
    for e in "${engines[@]}"; do
      wb=$(awk -F'[: ]+' '/^weight bytes:/ { print $3 }' "$OUT/$n-$e.info" 2>/dev/null || echo 0)
      f=$(get "$n-$e" forward_tokens_per_s) d=$(get "$n-$e" decode_tokens_per_s)
      awk -v n="$n" -v e="$e" -v wb="$wb" -v f="$f" -v d="$d" -v f0="$f0" -v d0="$d0" -v bw="$bw" 'BEGIN {
        if (wb > 0)
          printf "| %s | %s | %d | %.0f | %.2f | %.1f | %.2f | %.1f | %.0f%% |\n", n, e, wb, f, f / f0, d, d / d0,
                 wb * d / 1e9, 100 * wb * d / 1e9 / bw
        else
          printf "| %s | %s | - | %.0f | %.2f | %.1f | %.2f | - | - |\n", n, e, f, f / f0, d, d / d0 }'
    done
  done
} | tee "$OUT/results.md"
