#!/usr/bin/env bash
# demo.sh: the main job. Sets up and builds modelc, then compiles examples/gpt-tiny.yaml, prints
# its IR after the default pass pipeline and its statistics before and after each pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
echo "== modelc dump examples/gpt-tiny.yaml (IR after the default pipeline)" >&2
build/modelc dump examples/gpt-tiny.yaml
echo "== modelc stats examples/gpt-tiny.yaml" >&2
build/modelc stats examples/gpt-tiny.yaml
