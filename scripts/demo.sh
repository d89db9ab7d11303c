#!/usr/bin/env bash
# demo.sh: the main job. Sets up and builds modelc, then: the IR of examples/gpt-tiny.yaml after
# its pass pipeline and its statistics; the standalone program built from it; a short byte-level
# training run on Debian's fortunes corpus (about two minutes on 2 cores); and text generated
# from the trained weights. The full run is in docs/training.md.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
echo "== modelc dump examples/gpt-tiny.yaml   (a block after autodiff,constfold,cse,fuse,dce,memplan)" >&2
build/modelc dump examples/gpt-tiny.yaml | sed -n '/^func @h(/,/^}/p'
echo "== modelc stats examples/gpt-tiny.yaml" >&2
build/modelc stats examples/gpt-tiny.yaml
echo "== modelc build examples/gpt-tiny.yaml -o build/gpt-tiny" >&2
build/modelc build examples/gpt-tiny.yaml -o build/gpt-tiny
build/gpt-tiny info
scripts/fortunes-corpus.sh build/fortunes.txt
echo "== build/gpt-tiny train --data build/fortunes.txt --steps ${DEMO_STEPS:-1500}" >&2
build/gpt-tiny train --data build/fortunes.txt --steps "${DEMO_STEPS:-1500}" --lr 2e-3 --eval-every 500 \
  --out build/gpt-tiny.safetensors --seed 1
echo "== build/gpt-tiny generate --prompt 'The meaning of life is' -n 300 --temperature 0.8" >&2
build/gpt-tiny generate --weights build/gpt-tiny.safetensors --prompt 'The meaning of life is' -n 300 \
  --temperature 0.8 --top-k 40 --seed 1
echo
echo "== loss curve: build/gpt-tiny.svg, log: build/gpt-tiny.csv" >&2
