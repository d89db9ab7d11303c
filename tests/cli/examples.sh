#!/usr/bin/env bash
# Every example checks, dumps and round-trips (print(parse(print(m))) == print(m)) as lowered and
# after every pass; stats reports GPT-2's exact parameter count; graph writes DOT.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

for ex in examples/*.yaml; do
  name=$(basename "$ex" .yaml)
  expect_status 0 "$MODELC" check "$ex";  expect_in "$TMP/out" "ok"
  for p in "" dce cse constfold fuse memplan "constfold,cse,fuse,dce,memplan"; do
    expect_status 0 "$MODELC" dump --passes="$p" "$ex"
    cp "$TMP/out" "$TMP/$name.mir"
    expect_status 0 "$MODELC" dump "$TMP/$name.mir"
    cmp -s "$TMP/out" "$TMP/$name.mir" || { fail "$ex: round trip differs after '--passes=$p'";
      diff "$TMP/$name.mir" "$TMP/out" | head -10 >&2; }
  done
  expect_status 0 "$MODELC" dump "$ex"         # default pipeline
  expect_in "$TMP/out" "module @"
  expect_status 0 "$MODELC" graph "$ex";  expect_in "$TMP/out" "digraph"
  if command -v dot >/dev/null; then
    dot -Tsvg "$TMP/out" -o "$TMP/g.svg" || fail "$ex: dot rejects the graph"
  fi
  expect_status 0 "$MODELC" stats "$ex"
  expect_in "$TMP/out" "(input)"; expect_in "$TMP/out" "fuse"
done

# GPT-2 124M: the published parameter count, exactly.
expect_status 0 "$MODELC" stats examples/gpt2-small.yaml
expect_in "$TMP/out" "124,439,808"
expect_status 0 "$MODELC" check examples/gpt2-small.yaml
expect_in "$TMP/out" "124439808 parameters"

# fusion is visible in the default pipeline's output for gpt-tiny
expect_status 0 "$MODELC" dump examples/gpt-tiny.yaml
expect_in "$TMP/out" "epi="
expect_in "$TMP/out" "call("

# --print-after-all / --print-after / --print-before / --print-pass-times go to stderr
expect_status 0 "$MODELC" dump --print-after-all examples/gpt-tiny.yaml
for p in constfold cse fuse dce memplan; do expect_in "$TMP/err" "; *** IR Dump After $p ***"; done
expect_status 0 "$MODELC" dump --print-before=fuse --print-after=dce examples/gpt-tiny.yaml
expect_in "$TMP/err" "; *** IR Dump Before fuse ***"
expect_in "$TMP/err" "; *** IR Dump After dce ***"
if grep -qF "Dump After fuse" "$TMP/err"; then fail "--print-after=dce printed fuse"; fi
expect_status 0 "$MODELC" stats --print-pass-times examples/gpt-tiny.yaml
expect_in "$TMP/err" "fuse"

# an edited IR file goes back in, and an invalid one is rejected with a location
expect_status 0 "$MODELC" dump --passes= examples/gpt-tiny.yaml
sed 's/eps=1e-05/eps=-1.0/' "$TMP/out" > "$TMP/bad.mir"
if ! cmp -s "$TMP/out" "$TMP/bad.mir"; then
  expect_status 1 "$MODELC" dump "$TMP/bad.mir"
  expect_in "$TMP/err" "error"
fi
finish
