#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: builds the libFuzzer targets (clang, ASan+UBSan) and runs each for
# SECONDS (default 20) from a seed corpus of the repository's own files; any crash, leak, trap or
# timeout fails. CI runs it with a short budget; run longer by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DMODELC_FUZZ=ON -DMODELC_SANITIZE=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_spec fuzz_ir fuzz_safetensors >&2
work=build-fuzz/corpus
rm -rf "$work" && mkdir -p "$work"/{spec,ir,st}
seed() { local dir=$1; shift; for f in "$@"; do cp "$f" "$work/$dir/$(echo "$f" | tr / _)"; done; }
seed spec examples/*.yaml tests/reference/specs/*.yaml tests/specs/bad/*.yaml
seed ir tests/ir/*.mir tests/passes/*/*.mir
cp tests/reference/fixtures/enc-mean/*.npy "$work/st/"
head -c 4096 tests/reference/fixtures/enc-mean/weights.safetensors > "$work/st/head.safetensors"
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1
for t in spec:fuzz_spec ir:fuzz_ir st:fuzz_safetensors; do
  dir=${t%%:*} bin=${t#*:}
  echo "fuzz: $bin for ${secs}s" >&2
  log=build-fuzz/$bin.log
  if ! build-fuzz/$bin -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/ "$work/$dir" >"$log" 2>&1; then
    # the whole report: the sanitizer's trace, the input in hex and base64, the artifact's name
    grep -v -E '^#[0-9]+' "$log" | tail -60 >&2
    echo "fuzz: $bin FAILED (reproduce: build-fuzz/$bin ARTIFACT)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)|cov:' "$log" | tail -3 >&2
done
