#!/usr/bin/env bash
# Block-sparse attention from the command line: the spec's `attention: {sparse: ...}` and the
# sparse-attention pass give the same IR; the spec's bad sparse keys are reported at their line and
# column; `modelc stats` shows the FLOPs falling with the pattern; a program with a local ring
# cache says so in `PROG info` and its state bytes are the ring's, not the context's.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# the spec key and the pass: the same attention attributes
sed 's/attention: {heads: 4, causal: true, bias: true}/attention: {heads: 4, causal: true, bias: true, sparse: {pattern: local, window: 32, tile: 16}}/' \
  examples/gpt-tiny.yaml > "$TMP/local.yaml"
expect_status 0 "$MODELC" dump --passes= "$TMP/local.yaml"
grep 'attention(' "$TMP/out" | sed 's/arena=[^ ]* //' > "$TMP/spec.txt"
expect_status 0 "$MODELC" dump --passes='sparse-attention<pattern=local;window=32;tile=16>' examples/gpt-tiny.yaml
grep 'attention(' "$TMP/out" | sed 's/arena=[^ ]* //' > "$TMP/pass.txt"
cmp -s "$TMP/spec.txt" "$TMP/pass.txt" || fail "the spec's sparse key and the pass give different attention ops"
expect_in "$TMP/pass.txt" 'cache=32, causal=1, heads=4, sparse="local", tile=16, window=32'

# FLOPs: gpt-tiny's attention at T = 128, C = 128, 4 heads: dense causal pairs T(T+1)/2 = 8256,
# local window 32: sum over q of min(q + 1, 32) = 32*33/2 + 96*32 = 3600; 4 layers, per token
# (x (4C + 5 heads) = 532 per pair, over the batch's B*T tokens: B cancels)
flops() { awk -v p="$1" '$1 == p { gsub(",", "", $4); print $4 }' "$TMP/out"; }
expect_status 0 "$MODELC" stats --passes='sparse-attention<pattern=local;window=32>' examples/gpt-tiny.yaml
dense=$(flops '(input)') sparse=$(flops 'sparse-attention<pattern=local;window=32>')
[ $(( dense - sparse )) = $(( 4 * (8256 - 3600) * 532 / 128 )) ] ||
  fail "local window 32 removes $(( dense - sparse )) FLOPs per token, want $(( 4 * (8256 - 3600) * 532 / 128 ))"

# the spec's errors, at their keys
sed 's/attention: {heads: 4, causal: true, bias: true}/attention: {heads: 4, sparse: {pattern: fixed, window: 3, summary: 40}}/' \
  examples/gpt-tiny.yaml > "$TMP/bad.yaml"
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "bad.yaml:17:60: error: sparse pattern fixed takes no 'window'"
expect_in "$TMP/err" "bad.yaml:17:53: error: sparse pattern fixed needs 'block'"
sed 's/attention: {heads: 4, causal: true, bias: true}/attention: {heads: 4, sparse: {pattern: dilated}}/' \
  examples/gpt-tiny.yaml > "$TMP/bad2.yaml"
expect_status 1 "$MODELC" check "$TMP/bad2.yaml"
expect_in "$TMP/err" "bad2.yaml:17:53: error:"
expect_in "$TMP/err" "local"
sed 's/attention: {heads: 4, causal: true, bias: true}/attention: {heads: 4, sparse: {window: 3}}/' \
  examples/gpt-tiny.yaml > "$TMP/bad3.yaml"
expect_status 1 "$MODELC" check "$TMP/bad3.yaml"
expect_in "$TMP/err" "bad3.yaml:17:43: error: missing required key 'pattern' in sparse"
# the pass's option errors, at --passes
expect_status 1 "$MODELC" dump --passes='sparse-attention<pattern=strided;window=4>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "sparse-attention: pattern=strided needs stride="
expect_status 1 "$MODELC" dump --passes='sparse-attention<pattern=fixed;block=8;summary=9>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "summary=9 is above block=8"

# a local ring: PROG info says so, and the state bytes are the ring's: slots x positions x C x 4 bytes
# (sparse-lm's context is 24: a window of 8; a window of the whole context would need no ring)
expect_status 0 "$MODELC" build --passes='sparse-attention<pattern=local;window=8>,constfold,cse,fuse,dce,memplan' \
  tests/specs/sparse-lm.yaml -o "$TMP/lm"
"$TMP/lm" info > "$TMP/info.txt"
expect_in "$TMP/info.txt" "state bytes:      2048 at batch 1 (4 slots: the KV caches; rings: decoding goes past the context"
expect_status 0 "$MODELC" build --passes='sparse-attention<pattern=local;window=32>,constfold,cse,fuse,dce,memplan' \
  examples/gpt-tiny.yaml -o "$TMP/g"
"$TMP/g" info > "$TMP/info2.txt"
expect_in "$TMP/info2.txt" "state bytes:      131072 at batch 1 (8 slots"
if grep -q rings "$TMP/info2.txt"; then fail "gpt-tiny reads a position table: no decoding past the context"; fi
finish
