#!/usr/bin/env bash
# Facts a spec states travel in the IR module (docs/ir.md, "Training settings"): a spec's dump
# builds the same program as the spec. `modelc dump` prints the IR after the pipeline, so the
# dumped .mir has already been through autodiff, precision and memplan; building it runs no passes
# but memplan, and the generated C must equal the spec's byte for byte (but for the recorded
# command line, .compile_options). An unprocessed dump (--passes=) carries the train record too:
# its pipeline gets precision<...> from the record, as the spec's does.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

same_c() { # same_c A.c B.c WHAT: equal but for the compile_options line
  if ! cmp -s <(grep -v '\.compile_options = ' "$1") <(grep -v '\.compile_options = ' "$2"); then
    fail "$3: the generated C differs"
    diff <(grep -v '\.compile_options = ' "$1") <(grep -v '\.compile_options = ' "$2") | head -10 >&2
  fi
}

for p in fp32 bf16 fp16; do
  sed "s/^train:/train:\n  precision: $p/" examples/gpt-tiny.yaml > "$TMP/$p.yaml"
  expect_status 0 "$MODELC" dump "$TMP/$p.yaml"
  cp "$TMP/out" "$TMP/$p.mir"
  expect_in "$TMP/$p.mir" "train {steps=1000, batch=4, micro_batch=4, warmup=100, seed=1337,"
  expect_in "$TMP/$p.mir" "schedule=cosine, optimizer=adamw, precision=$p, data=\"data/tinyshakespeare.txt\"}"
  [ "$p" = fp32 ] || expect_in "$TMP/$p.mir" "precision=\"${p/fp16/f16}\""   # the attribute the pass sets
  expect_status 0 "$MODELC" build --emit=c "$TMP/$p.yaml" -o "$TMP/$p-spec.c"
  expect_status 0 "$MODELC" build --emit=c "$TMP/$p.mir" -o "$TMP/$p-mir.c"
  same_c "$TMP/$p-spec.c" "$TMP/$p-mir.c" "$p: spec and its dump"
  expect_in "$TMP/$p-mir.c" ".train_config = {.steps = 1000, .batch = 4, .micro_batch = 4, .warmup = 100"
  # unprocessed: the .mir's pipeline places precision from the record
  expect_status 0 "$MODELC" dump --passes= "$TMP/$p.yaml"
  cp "$TMP/out" "$TMP/$p-raw.mir"
  pipe="autodiff,constfold,cse,fuse,dce,memplan"
  expect_status 0 "$MODELC" build --emit=c --passes="$pipe" "$TMP/$p.yaml" -o "$TMP/$p-spec2.c"
  expect_status 0 "$MODELC" build --emit=c --passes="$pipe" "$TMP/$p-raw.mir" -o "$TMP/$p-raw.c"
  same_c "$TMP/$p-spec2.c" "$TMP/$p-raw.c" "$p: spec and its unprocessed dump under --passes=$pipe"
done
# the record reaches the program: the built .mir says bf16 and its training defaults
expect_status 0 "$MODELC" build "$TMP/bf16.mir" -o "$TMP/prog"
expect_status 0 "$TMP/prog" info; expect_in "$TMP/out" "precision:        bf16"
expect_status 0 "$TMP/prog" train --help; expect_in "$TMP/out" "Defaults (from the spec): steps 1000, batch 4"
# an inference-only pipeline leaves precision out (nothing trains)
expect_status 0 "$MODELC" dump --passes=constfold,dce "$TMP/bf16-raw.mir"
grep -qF 'precision="' "$TMP/out" && fail "precision ran without autodiff"
# a bad value in the train line is an error at its column
sed 's/^train {steps=1000,/train {steps=0,/' "$TMP/bf16.mir" > "$TMP/bad.mir"
expect_status 1 "$MODELC" build --emit=c "$TMP/bad.mir" -o "$TMP/bad.c"
expect_in "$TMP/err" "bad.mir:3:14: error: 'steps' must be positive, got 0"
finish
