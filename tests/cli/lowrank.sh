#!/usr/bin/env bash
# The lowrank pass from the command line: `modelc stats` shows what factorising removes (parameters
# and FLOPs fall) and sums up the factors' facts; the driver reads the trained weights with
# --weights and writes the factorised ones with --weights-out, reporting each matrix's rank,
# retained energy, parameters and FLOPs; the program built with the pass runs on the written file;
# every misuse (no --weights, no --weights-out, an output that is the input, a bad or mismatched
# weights file) is a clear error with exit status 1.
set -euo pipefail
source "$(dirname "$0")/lib.bash"
P='constfold,cse,fuse,dce,memplan'

# stats, shapes only: rank 16 on gpt-tiny's 16 block weights, 842,496 -> 187,136 parameters
expect_status 0 "$MODELC" stats --passes='lowrank<rank=16>' examples/gpt-tiny.yaml
expect_in "$TMP/out" "187,136"
expect_in "$TMP/out" "lowrank: 16 weights factorised by SVD into 32 factors"
expect_in "$TMP/err" "no weights given (--weights W.safetensors): the shapes only"
expect_status 1 "$MODELC" stats --passes='lowrank<energy=0.9>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:1: error: lowrank: energy= chooses each rank from the trained weights"
expect_status 1 "$MODELC" dump --passes='lowrank<rank=4;energy=0.5>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "give exactly one of rank=R"

# trained weights in, factorised weights out
expect_status 0 "$MODELC" run --passes="$P" examples/gpt-tiny.yaml -- init --seed 3 --out "$TMP/w.safetensors"
expect_status 0 "$MODELC" stats --passes='lowrank<energy=0.5;scope=ffn>' --weights "$TMP/w.safetensors" \
  --weights-out "$TMP/w5.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "note: lowrank: @h.0.mlp.c_fc.weight [512,128]: rank "
expect_in "$TMP/err" ", params 65,536 -> "
expect_in "$TMP/err" ", FLOPs/token 131,072 -> "
expect_in "$TMP/out" "lowrank: 8 weights factorised by SVD into 16 factors"
expect_in "$TMP/out" "retained energy 0.5"
[ -s "$TMP/w5.safetensors" ] || fail "--weights-out wrote nothing"
expect_status 0 "$MODELC" build --passes="lowrank<rank=32>,$P" --weights "$TMP/w.safetensors" \
  --weights-out "$TMP/w32.safetensors" examples/gpt-tiny.yaml -o "$TMP/lr32"
expect_in "$TMP/err" "@h.0.attn.c_proj.weight [128,128]: rank 32, energy 0."
printf '\x93NUMPY\x01\x00\x76\x00' > "$TMP/t.npy"
printf "%-117s\n" "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 4), }" >> "$TMP/t.npy"
printf '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00' >> "$TMP/t.npy"
expect_status 0 "$TMP/lr32" forward --weights "$TMP/w32.safetensors" --tokens "$TMP/t.npy" --out "$TMP/y.npy"
expect_status 1 "$TMP/lr32" forward --weights "$TMP/w.safetensors" --tokens "$TMP/t.npy" --out "$TMP/y.npy"
expect_in "$TMP/err" "lr_"

# energy= gives the layers of random weights different ranks: a clone of @h per rank set, unless
# uniform=true (one rank per block weight, the largest its layers need: one function)
expect_status 0 "$MODELC" dump --passes='lowrank<energy=0.5>' --weights "$TMP/w.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/out" "callee=@h.lowrank"
expect_status 0 "$MODELC" dump --passes='lowrank<energy=0.5;uniform>' --weights "$TMP/w.safetensors" examples/gpt-tiny.yaml
if grep -q 'callee=@h.lowrank' "$TMP/out"; then fail "uniform=true still clones the block"; fi
[ "$(grep -c 'rank 40, energy 0.5' "$TMP/err")" -ge 4 ] || fail "uniform=true: the MLP weights' common rank is not 40"

# the IR text of a factorised module (lowrank=svd(R,E) facts) round-trips
expect_status 0 "$MODELC" dump --passes='lowrank<energy=0.7;scope=attention>' --weights "$TMP/w.safetensors" \
  examples/gpt-tiny.yaml
expect_in "$TMP/out" "param @h.3.attn.c_proj.weight.lr_u : f32[128,"
expect_in "$TMP/out" " lowrank=svd("
cp "$TMP/out" "$TMP/f.mir"
expect_status 0 "$MODELC" dump "$TMP/f.mir"
cmp -s "$TMP/out" "$TMP/f.mir" || fail "a factorised module's IR does not round-trip"

# energy= decides per matrix, and a block argument is factorised in all layers or none: @h's %v is
# rank 1 in both layers (all ones), %w rank 1 in layer 0 but the identity (full rank) in layer 1,
# so %w stays dense in both (with a note) and leaves no factors behind
cat > "$TMP/mixed.mir" <<'MIR'
module @m {batch=1, context=2, vocab=4}
entry @forward
param @wte : f32[4,8] init=normal(0.02)
param @h.0.w : f32[8,8] init=normal(0.02)
param @h.0.v : f32[8,8] init=normal(0.02)
param @h.1.w : f32[8,8] init=normal(0.02)
param @h.1.v : f32[8,8] init=normal(0.02)
func @h(%x: f32[1,2,8], %w: f32[8,8], %v: f32[8,8]) -> f32[1,2,8] {
  %0 = linear(%x, %w) : f32[1,2,8]
  %1 = linear(%0, %v) : f32[1,2,8]
  %2 = add(%x, %1) : f32[1,2,8]
  return %2
}
func @forward(%tokens: i32[1,2]) -> f32[1,2,4] {
  %e = param {p=@wte} : f32[4,8]
  %x0 = embedding(%tokens, %e) : f32[1,2,8]
  %w0 = param {p=@h.0.w} : f32[8,8]
  %v0 = param {p=@h.0.v} : f32[8,8]
  %x1 = call(%x0, %w0, %v0) {callee=@h, stream=0} : f32[1,2,8]
  %w1 = param {p=@h.1.w} : f32[8,8]
  %v1 = param {p=@h.1.v} : f32[8,8]
  %x2 = call(%x1, %w1, %v1) {callee=@h, stream=1} : f32[1,2,8]
  %y = linear(%x2, %e) : f32[1,2,4]
  return %y
}
MIR
one='\x00\x00\x80\x3f' zero='\x00\x00\x00\x00' h='' off=0
for t in wte:32 h.0.w:64 h.0.v:64 h.1.w:64 h.1.v:64; do
  n=${t#*:}
  h+="${h:+,}\"${t%%:*}\":{\"dtype\":\"F32\",\"shape\":[$((n / 8)),8],\"data_offsets\":[$off,$((off + 4 * n))]}"
  off=$((off + 4 * n))
done
h="{$h}"
{ printf "\\x$(printf %02x $((${#h} & 255)))\\x$(printf %02x $((${#h} >> 8)))\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$h"
  for i in $(seq 32); do printf "$zero"; done
  for i in $(seq 128); do printf "$one"; done
  for i in $(seq 0 63); do if [ $((i % 9)) = 0 ]; then printf "$one"; else printf "$zero"; fi; done
  for i in $(seq 64); do printf "$one"; done; } > "$TMP/mixed.safetensors"
expect_status 0 "$MODELC" dump --passes='lowrank<energy=0.9>' --weights "$TMP/mixed.safetensors" \
  --weights-out "$TMP/mixed-lr.safetensors" "$TMP/mixed.mir"
expect_in "$TMP/err" "@h.1.w [8,8] stays dense: rank 8 saves nothing"
expect_in "$TMP/err" "@h.0.w stays dense: argument %w of @h is bound to weights not all factorised"
expect_in "$TMP/err" "@h.0.v [8,8]: rank 1, energy 1.0000, params 64 -> 16"
expect_in "$TMP/out" "param @h.1.v.lr_u : f32[8,1] init=normal(0.02) lowrank=svd(1,1.0)"
expect_in "$TMP/out" "param @h.0.w : f32[8,8]"
if grep -q 'h\.[01]\.w\.lr_' "$TMP/out"; then fail "factors of a weight left dense remain in the module"; fi
cp "$TMP/out" "$TMP/mixed-lr.mir" # the written file fits the factorised module
expect_status 0 "$MODELC" dump --weights "$TMP/mixed-lr.safetensors" "$TMP/mixed-lr.mir"

# misuse
expect_status 1 "$MODELC" build --passes="lowrank<rank=32>,$P" examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "lowrank needs the trained weights: --weights W.safetensors"
expect_status 1 "$MODELC" build --passes="lowrank<rank=32>,$P" --weights "$TMP/w.safetensors" examples/gpt-tiny.yaml \
  -o "$TMP/x"
expect_in "$TMP/err" "give --weights-out F.safetensors"
expect_status 1 "$MODELC" dump --passes="lowrank<rank=32>" --weights "$TMP/w.safetensors" \
  --weights-out "$TMP/w.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "--weights-out is the same file as --weights"
cmp -s "$TMP/w.safetensors" "$TMP/w.safetensors" # still there
expect_status 1 "$MODELC" dump --passes="lowrank<rank=32>" --weights-out "$TMP/o.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "--weights-out=$TMP/o.safetensors needs --weights"
expect_status 1 "$MODELC" dump --passes="lowrank<rank=32>" --weights "$TMP/none.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "none.safetensors: error: cannot open weights file"
printf 'garbage' > "$TMP/bad.safetensors"
expect_status 1 "$MODELC" dump --passes="lowrank<rank=32>" --weights "$TMP/bad.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "bad.safetensors: error: not a safetensors file"
h='{"wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"wpe.weight":{"dtype":"BF16","shape":[128,128],"data_offsets":[16,32784]}}'
{ printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$h"; head -c 32784 /dev/zero; } > "$TMP/mis.safetensors"
expect_status 1 "$MODELC" dump --passes="lowrank<rank=32>" --weights "$TMP/mis.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "tensor 'wte.weight' is f32[2,2], but the model's parameter is f32[256,128]"
expect_in "$TMP/err" "tensor 'wpe.weight' is BF16: the compiler reads F32 weights only"
expect_in "$TMP/err" "has no tensor 'h.0.ln_1.weight'"
h='{"wte.weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,99]}}'
{ printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$h"; head -c 16 /dev/zero; } > "$TMP/off.safetensors"
expect_status 1 "$MODELC" dump --weights "$TMP/off.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "bad safetensors header: tensor 'wte.weight' has data_offsets [0, 99]"
h='{"wte.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"wpe.weight":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}'
{ printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$h"; head -c 12 /dev/zero; } > "$TMP/ovl.safetensors"
expect_status 1 "$MODELC" dump --weights "$TMP/ovl.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "tensors 'wte.weight' and 'wpe.weight' overlap"
printf '\xff\x00\x00\x00\x00\x00\x00\x00{"a":' > "$TMP/short.safetensors"
expect_status 1 "$MODELC" dump --weights "$TMP/short.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "not a safetensors file: a header length of 255 bytes in a file of 13"
printf '\x05\x00\x00\x00\x00\x00\x00\x00{"a":' > "$TMP/json.safetensors"
expect_status 1 "$MODELC" dump --weights "$TMP/json.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "json.safetensors: error: bad safetensors header: "
h='{"wte.weight":{"dtype":"F32","shape":[281474976710656,281474976710656],"data_offsets":[0,16]}}'
{ printf "\\x$(printf %02x ${#h})\\x00\\x00\\x00\\x00\\x00\\x00\\x00"; printf '%s' "$h"; head -c 16 /dev/zero; } > "$TMP/big.safetensors"
expect_status 1 "$MODELC" check --weights "$TMP/big.safetensors" examples/gpt-tiny.yaml
expect_in "$TMP/err" "tensor 'wte.weight' has more than 2^48 elements"
finish
