#!/usr/bin/env bash
# Transformer-XL segment memory from the command line (examples/xl-tiny.yaml): the program keeps
# 3 state slots per layer and no position table (so generate decodes past its context); train
# reads the text as 4 streams of consecutive segments with the memory carried, eval likewise, and
# --no-memory (the same model resetting its memory at every segment) gives another loss; the
# model without memory refuses --no-memory; grad over two segments runs. The numbers against
# PyTorch are test_program_xl's; the spec errors are tests/specs/bad/memory-*.yaml's.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

X=$TMP/xl
expect_status 0 "$MODELC" build examples/xl-tiny.yaml -o "$X"
expect_status 0 "$X" info
expect_in "$TMP/out" "state bytes:      393216 at batch 1 (12 slots: the segment memory"
expect_in "$TMP/out" "segment memory:   64 positions per layer (Transformer-XL): longer texts run as segments of 64"
expect_in "$TMP/out" "rings: decoding goes past the context"
expect_status 0 "$MODELC" dump examples/xl-tiny.yaml
expect_in "$TMP/out" "param @h.3.attn.r_w_bias : f32[4,32]"
expect_in "$TMP/out" "xl_memory("

# 3396 bytes: 3056 to train on (4 streams of 764 bytes: 11 segments of 64 each), 340 held out
for i in $(seq 1 60); do echo "line $i: the quick brown fox jumps over the lazy dog $((i * 7))"; done > "$TMP/text.txt"
expect_status 0 "$X" train --data "$TMP/text.txt" --steps 4 --eval-every 2 --seed 3 --out "$TMP/w.safetensors"
expect_in "$TMP/out" "step 4: loss"
expect_in "$TMP/out" "val loss"
expect_status 0 "$X" train --data "$TMP/text.txt" --steps 2 --eval-every 0 --seed 3 --no-memory --out "$TMP/w0.safetensors"
expect_in "$TMP/out" "step 2: loss"
expect_status 0 "$X" eval --weights "$TMP/w.safetensors" --data "$TMP/text.txt"
with=$(grep 'bits per byte' "$TMP/out")
expect_in "$TMP/out" "tokens:        3392"   # 4 streams of (3396 - 1) / 4 = 848 predictions
expect_status 0 "$X" eval --weights "$TMP/w.safetensors" --data "$TMP/text.txt" --no-memory
without=$(grep 'bits per byte' "$TMP/out")
[ "$with" != "$without" ] || fail "eval with and without memory agree ($with): the memory is not read"
expect_status 0 "$X" eval --help
expect_in "$TMP/out" "--no-memory resets it at every"

# generate past the 64 positions of the context, the memory its only state
expect_status 0 "$X" generate --weights "$TMP/w.safetensors" --prompt "line 1" -n 100 --seed 1
[ "$(wc -c < "$TMP/out")" -ge 100 ] || fail "generate wrote $(wc -c < "$TMP/out") bytes, expected at least 100"

# grad and forward over 2 rows of 2 segments (128 tokens); train --tokens takes one segment at most
mknpy "$TMP/tok.npy" '<i4' '2, 128' "$(for i in $(seq 1 256); do printf '\\x%02x\\x00\\x00\\x00' $((i % 200 + 32)); done)"
expect_status 0 "$X" forward --weights "$TMP/w.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/y.npy"
[ "$(wc -c < "$TMP/y.npy")" -ge $((2 * 128 * 256 * 4)) ] || fail "forward over two segments wrote too little"
expect_status 0 "$X" grad --weights "$TMP/w.safetensors" --tokens "$TMP/tok.npy" --targets "$TMP/tok.npy" --out "$TMP/g.safetensors"
expect_in "$TMP/out" "loss: "
expect_status 1 "$X" train --tokens "$TMP/tok.npy" --targets "$TMP/tok.npy" --steps 1 --out "$TMP/w1.safetensors"
expect_in "$TMP/err" "--tokens rows of 128 tokens exceed the context 64"

# a model without memory refuses --no-memory
expect_status 0 "$MODELC" build --passes=constfold,cse,fuse,dce,memplan examples/gpt-tiny.yaml -o "$TMP/g"
expect_status 1 "$TMP/g" eval --data "$TMP/text.txt" --no-memory
expect_in "$TMP/err" "--no-memory: this model keeps no segment memory"
finish
