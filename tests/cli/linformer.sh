#!/usr/bin/env bash
# The linformer pass from the command line: causal attention is refused at its spec layer's line
# and column (and at the op's line in a .mir), a k beyond the sequence length and bad options are
# reported, the pass must come before autodiff, and a bidirectional spec (bert-tiny) built with it
# runs `forward` on a sequence shorter than its context.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# causal attention: at the attention layer of the spec
expect_status 1 "$MODELC" dump --passes='linformer<k=8>' examples/gpt-tiny.yaml
line=$(grep -n -- '- attention:' examples/gpt-tiny.yaml | head -1 | cut -d: -f1)
expect_in "$TMP/err" "examples/gpt-tiny.yaml:$line:13: error: linformer: this attention in @h is causal"
expect_in "$TMP/err" "it needs bidirectional attention (causal: false), and causal decoding cannot use it"
# ... and at the op in a .mir
expect_status 0 "$MODELC" dump --passes=dce examples/bert-tiny.yaml
sed 's/causal=0/causal=1/' "$TMP/out" > "$TMP/causal.mir"
op=$(grep -n 'attention(' "$TMP/causal.mir" | head -1 | cut -d: -f1)
expect_status 1 "$MODELC" dump --passes='linformer' "$TMP/causal.mir"
expect_in "$TMP/err" "causal.mir:$op:3: error: linformer: this attention in @layer is causal"

# k beyond T, bad options, after autodiff
expect_status 1 "$MODELC" dump --passes='linformer<k=65>' examples/bert-tiny.yaml
expect_in "$TMP/err" "error: linformer: k=65 exceeds the sequence length 64 of the attention in @layer (1 <= k <= T)"
expect_status 1 "$MODELC" dump --passes='linformer<k=-1>' examples/bert-tiny.yaml
expect_in "$TMP/err" "option 'k' of pass 'linformer'"
expect_status 1 "$MODELC" dump --passes='linformer<share=all>' examples/bert-tiny.yaml
expect_in "$TMP/err" "invalid value 'all' for option 'share' of pass 'linformer'"
expect_status 1 "$MODELC" dump --passes='autodiff,linformer' examples/bert-tiny.yaml
expect_in "$TMP/err" "run linformer before autodiff"

# bert-tiny with linformer k = T/4 (the default): two projections per layer; builds, runs forward
# on 2 sequences of 5 tokens (fewer than its 64: the first 5 columns of E and F)
expect_status 0 "$MODELC" dump --passes='linformer' examples/bert-tiny.yaml
expect_in "$TMP/out" "param @layer.1.attn.lin_f.weight : f32[16,64]"
expect_in "$TMP/out" "linformer(%1, %attn.lin_e.weight, %attn.lin_f.weight) {heads=2}"
expect_status 0 "$MODELC" build --passes='linformer<k=16;share=layer>,constfold,cse,fuse,dce,memplan' \
  examples/bert-tiny.yaml -o "$TMP/bt"
expect_status 0 "$TMP/bt" init --seed 3 --out "$TMP/w.safetensors"
mknpy "$TMP/tok.npy" '<i4' '2, 5' \
  '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x05\x00\x00\x00\x06\x00\x00\x00\x07\x00\x00\x00\x08\x00\x00\x00\x09\x00\x00\x00\x0a\x00\x00\x00'
expect_status 0 "$TMP/bt" forward --weights "$TMP/w.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/y.npy"
[ -s "$TMP/y.npy" ] || fail "bert-tiny with linformer wrote no logits"
finish
