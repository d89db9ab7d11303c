#!/usr/bin/env bash
# tests/bench/sparse_breakeven.sh [M]: the break-even sparsity of the CSR linear kernel against the
# dense f32 linear layer (docs/benchmarks.md, "Sparse kernels: break-even (issue 12)").
#
# Builds the Release runtime (build-bench/, scripts/setup.sh), compiles tests/bench/sparse_gemv.c
# against its libmodelc_rt.a and runs it at 1 thread (MODELC_THREADS=1; OpenBLAS single-threaded
# as always): GPT-2 small's (768x768, 3072x768, 768x3072) and gpt-tiny's (512x128, 128x512) weight
# shapes at M = 1 (decode), 64 and 512, sparsities 30-95%, medians of 31 samples of >= 2 ms each.
# M (1, 64 or 512) runs only that one. Prints a Markdown table (also saved as
# build-bench/sparse/results.md). About 1-2 minutes on the 2-core VM.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
OUT=build-bench/sparse
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
LIBS=(-lopenblas)
if grep -q '^MODELC_HAVE_DNNL:INTERNAL=1\|^DNNL_LIB:FILEPATH=/' build-bench/CMakeCache.txt; then
  LIBS+=(-ldnnl -lgomp)
fi
cc -O2 -Wall -Wextra -Iruntime tests/bench/sparse_gemv.c build-bench/libmodelc_rt.a -o "$OUT/sparse_gemv" \
  "${LIBS[@]}" -lm -lpthread
echo "flags: $(grep -o 'avx512[a-z_]*\|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')" | tee "$OUT/results.md"
MODELC_THREADS=1 OMP_NUM_THREADS=1 "$OUT/sparse_gemv" 1 "${1:-0}" | tee -a "$OUT/results.md"
