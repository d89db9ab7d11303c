#!/usr/bin/env bash
# The quantised example end to end (examples/gpt-tiny-q8.yaml, the quantize pass): it builds with
# both backends into warning-free C, initialises, runs forward, generate and eval, exports the
# quantised weights and reads them back; an f32 file trained for gpt-tiny loads into it (quantised
# at load); and the errors: a quantised program does not train, a spec's bad scheme or skip name is
# reported where it is written, a q8_0 file does not load into a q4_0 program.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

Q="$TMP/q8"; F="$TMP/f32"
expect_status 0 "$MODELC" build examples/gpt-tiny-q8.yaml -o "$Q"
expect_status 0 "$MODELC" build --backend=llvm examples/gpt-tiny-q8.yaml -o "$TMP/q8l"
expect_status 0 "$MODELC" build --passes=constfold,cse,fuse,dce,memplan examples/gpt-tiny.yaml -o "$F"
expect_status 0 "$MODELC" build --emit=c examples/gpt-tiny-q8.yaml -o "$TMP/q.c"
expect_in "$TMP/q.c" "rt_linear_q8_0("
gcc -std=c11 -Wall -Wextra -Werror -Iruntime -fsyntax-only "$TMP/q.c" || fail "gcc warns on quantised C"

# stats: the parameter bytes fall to q8_0's (the block weights at 8.5 bits, the rest f32)
expect_status 0 "$MODELC" stats examples/gpt-tiny-q8.yaml
expect_in "$TMP/out" "1,059,840"

# info, init, forward, generate, eval, export on the quantised program
expect_status 0 "$Q" info
expect_in "$TMP/out" "weight bytes:"
expect_in "$TMP/out" "q8_0"
expect_status 0 "$F" init --seed 3 --out "$TMP/w32.safetensors"
mknpy "$TMP/tok.npy" '<i4' '1, 4' '\x54\x00\x00\x00\x68\x00\x00\x00\x65\x00\x00\x00\x20\x00\x00\x00'
expect_status 0 "$Q" forward --weights "$TMP/w32.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/a.npy"
expect_status 0 "$TMP/q8l" forward --weights "$TMP/w32.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/l.npy"
cmp -s "$TMP/a.npy" "$TMP/l.npy" || fail "quantised logits: C and LLVM backends differ"
expect_status 0 "$Q" export --weights "$TMP/w32.safetensors" --out "$TMP/wq.safetensors"
expect_status 0 "$Q" forward --weights "$TMP/wq.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/b.npy"
cmp -s "$TMP/a.npy" "$TMP/b.npy" || fail "the exported quantised weights give other logits"
[ "$(stat -c %s "$TMP/wq.safetensors")" -lt "$(( $(stat -c %s "$TMP/w32.safetensors") / 2 ))" ] ||
  fail "the q8_0 file is not below half the f32 file"
expect_status 0 "$Q" generate --weights "$TMP/wq.safetensors" --prompt "The " -n 8 --temperature 0
printf 'The quick brown fox jumps over the lazy dog. ' > "$TMP/text.txt"
expect_status 0 "$Q" eval --weights "$TMP/wq.safetensors" --data "$TMP/text.txt"
expect_in "$TMP/out" "bits per byte:"
expect_status 0 "$Q" init --seed 1 --out "$TMP/wi.safetensors"
expect_status 0 "$Q" forward --weights "$TMP/wi.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/c.npy"

# errors: no training (no autodiff in an inference pipeline); a q8_0 file into a q4_0 program; bad pass options where they are written
expect_status 1 "$Q" train --data "$TMP/text.txt" --steps 1 --out "$TMP/t.safetensors"
expect_in "$TMP/err" "without training support"
expect_status 0 "$MODELC" build --passes='quantize<scheme=q4_0>,constfold,cse,fuse,dce,memplan' examples/gpt-tiny.yaml \
  -o "$TMP/q4"
expect_status 1 "$TMP/q4" forward --weights "$TMP/wq.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/d.npy"
expect_in "$TMP/err" "h.0.attn.c_attn.weight"
sed 's/{scheme: q8_0}/{scheme: q5, skip: [h.0.*, nope]}/' examples/gpt-tiny-q8.yaml > "$TMP/bad.yaml"
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "bad.yaml:"
expect_in "$TMP/err" "invalid value 'q5' for option 'scheme' of pass 'quantize'"
sed 's/{scheme: q8_0}/{scheme: q4_0, skip: [h.0.*, nope]}/' examples/gpt-tiny-q8.yaml > "$TMP/bad.yaml"
expect_status 1 "$MODELC" build "$TMP/bad.yaml" -o "$TMP/x"
expect_in "$TMP/err" "quantize: skip=nope names no parameter"
expect_status 1 "$MODELC" build --passes='autodiff,quantize' examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "quantised weights are for inference"
finish
