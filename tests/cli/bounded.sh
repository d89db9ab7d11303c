#!/usr/bin/env bash
# Bounded time: compiling a deep model is near-linear in its layer count (issue 9, point 3). A
# 2,048-layer tiny GPT goes through the full pipeline (autodiff, constfold, cse, fuse, dce, memplan)
# and the C backend in about 2 s in a debug build; before the name lookups were hashed and the
# per-value scans of the training function's results removed, autodiff alone was cubic and 256
# layers took minutes. The timeout is generous: only a super-linear blow-up breaks it.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

sed -e 's/repeat: 4$/repeat: 2048/' -e 's/dim: 128/dim: 8/' -e 's/context: 128/context: 8/' \
    -e 's/heads: 4/heads: 2/' -e 's/hidden: 512/hidden: 16/' examples/gpt-tiny.yaml > "$TMP/deep.yaml"
expect_in "$TMP/deep.yaml" "repeat: 2048"
expect_status 0 timeout 120 "$MODELC" build "$TMP/deep.yaml" --emit=c -o "$TMP/deep.c"
expect_in "$TMP/deep.c" "h.2047.mlp.c_proj.weight"
expect_in "$TMP/deep.c" "f_train"
finish
