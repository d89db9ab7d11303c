#!/usr/bin/env bash
# CLI surface: help, version, unknown commands and flags, build not yet implemented, error exits.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

expect_status 0 "$MODELC" --help;            expect_in "$TMP/out" "usage: modelc COMMAND"
expect_status 0 "$MODELC" --version;         expect_in "$TMP/out" "modelc 0."
expect_status 1 "$MODELC";                   expect_in "$TMP/err" "usage: modelc"
for c in check dump stats graph passes build; do
  expect_status 0 "$MODELC" "$c" --help;     expect_in "$TMP/out" "usage: modelc $c"
done
# every help text ends its last line with a newline (else the shell prompt lands on it)
for h in --help -h help "check --help" "build --help" "run --help" "passes --help"; do
  expect_status 0 "$MODELC" $h
  [ "$(tail -c 1 "$TMP/out" | od -An -tx1 | tr -d ' ')" = 0a ] || fail "'modelc $h' does not end with a newline"
done
expect_status 1 "$MODELC" dumb x.yaml;       expect_in "$TMP/err" "unknown command 'dumb'; did you mean 'dump'?"
expect_status 1 "$MODELC" dump --frobnicate examples/gpt-tiny.yaml
expect_in "$TMP/err" "unknown option '--frobnicate'"
expect_status 1 "$MODELC" dump;              expect_in "$TMP/err" "needs an input file"

# unreadable and missing files
expect_status 1 "$MODELC" check "$TMP/none.yaml"; expect_in "$TMP/err" "$TMP/none.yaml: error: cannot open file"
expect_status 1 "$MODELC" dump "$TMP/none.mir";   expect_in "$TMP/err" "cannot open file"
expect_status 1 "$MODELC" check "$TMP";           expect_in "$TMP/err" "error"

# a bad --passes pipeline is located in the flag's text
expect_status 1 "$MODELC" dump --passes='cse,fsue' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:5: error:"
expect_in "$TMP/err" "did you mean 'fuse'"
expect_status 1 "$MODELC" dump --passes='fuse<max-ops=x>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:"

# passes lists every registered pass with its description
expect_status 0 "$MODELC" passes
for p in dce cse constfold fuse; do expect_in "$TMP/out" "  $p "; done
expect_in "$TMP/out" "max-ops"

# a malformed spec: located error, caret line, exit 1
printf 'model:\n  name: x\n  vocab: -3\n' > "$TMP/bad.yaml"
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "$TMP/bad.yaml:3:10: error:"
expect_in "$TMP/err" "  vocab: -3"
finish
