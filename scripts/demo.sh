#!/usr/bin/env bash
# demo.sh: the main job. Sets up and builds modelc, then: the IR of examples/gpt-tiny.yaml after
# the default pass pipeline and its statistics; the standalone program built from it; weights
# initialised by the program; and text generated with them (random weights: noise until the
# training milestone).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
echo "== modelc dump examples/gpt-tiny.yaml   (the IR after constfold,cse,fuse,dce,memplan; one block shown)" >&2
build/modelc dump examples/gpt-tiny.yaml | sed -n '/^func @h/,/^}/p'
echo "== modelc stats examples/gpt-tiny.yaml" >&2
build/modelc stats examples/gpt-tiny.yaml
echo "== modelc build examples/gpt-tiny.yaml -o build/gpt-tiny" >&2
build/modelc build examples/gpt-tiny.yaml -o build/gpt-tiny
build/gpt-tiny info
echo "== build/gpt-tiny init --seed 1 --out build/gpt-tiny.safetensors" >&2
build/gpt-tiny init --seed 1 --out build/gpt-tiny.safetensors
echo "== build/gpt-tiny generate --prompt 'Once upon a time' -n 80 --seed 1" >&2
build/gpt-tiny generate --weights build/gpt-tiny.safetensors --prompt 'Once upon a time' -n 80 --seed 1 | od -An -c | head -5
echo "== build/gpt-tiny bench --runs 3" >&2
build/gpt-tiny bench --weights build/gpt-tiny.safetensors --runs 3
