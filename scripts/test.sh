#!/usr/bin/env bash
# test.sh: the whole test suite. Sets up, builds and runs every test with CTest.
#   scripts/test.sh             gcc, warnings as errors, debug build in build/
#   scripts/test.sh --sanitize  clang with AddressSanitizer + UndefinedBehaviorSanitizer in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--sanitize" ]; then
  export CC=clang ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  scripts/setup.sh build-asan -DMODELC_SANITIZE=ON
  ctest --test-dir build-asan --output-on-failure -j"$(nproc)"
else
  scripts/setup.sh build
  ctest --test-dir build --output-on-failure -j"$(nproc)"
fi
