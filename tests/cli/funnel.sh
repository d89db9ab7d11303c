#!/usr/bin/env bash
# Sequence compression (Funnel-Transformer; docs/spec.md "pool", "upsample"): examples/funnel-tiny.yaml
# builds, reports fewer forward FLOPs than the same encoder unpooled, refuses token lengths that do
# not pool (and generate) and IR whose time axes are no share of the sequence, evaluates a text whose last window is cut to whole groups, and trains on
# the fortunes corpus (a 64 kB slice: 30 steps, the loss must fall).
set -euo pipefail
source "$(dirname "$0")/lib.bash"

EX=examples/funnel-tiny.yaml
expect_status 0 "$MODELC" dump --passes= "$EX"
expect_in "$TMP/out" "seq_pool(%"
expect_in "$TMP/out" "attention_pool(%"
expect_in "$TMP/out" "upsample(%"
expect_in "$TMP/out" "func @b2(%x: f32[4,64,128]"   # the repeat after the first pool runs at 64 positions

# the same encoder without its pools (an upsample has nothing to undo): more FLOPs per token
flops() { "$TMP/$1" info | awk '/^forward FLOPs:/ { print $3 }'; }
grep -v -e '- pool:' -e '- upsample:' "$EX" > "$TMP/dense.yaml"
expect_status 0 "$MODELC" build "$EX" -o "$TMP/f"
expect_status 0 "$MODELC" build "$TMP/dense.yaml" -o "$TMP/d"
expect_in <("$TMP/f" info) "forward FLOPs:"
[ "$(flops f)" -lt "$(flops d)" ] || fail "funnel-tiny: $(flops f) forward FLOPs per token, unpooled $(flops d)"

# token lengths: 8 pools to 4 and 2; 6 does not (a clear error); generate cannot run growing windows
expect_status 0 "$TMP/f" init --seed 3 --out "$TMP/w.safetensors"
mknpy "$TMP/t8.npy" '<i4' '1, 8' "$(for i in 1 2 3 4 5 6 7 8; do printf '\\x%02x\\x00\\x00\\x00' $i; done)"
mknpy "$TMP/t6.npy" '<i4' '1, 6' "$(for i in 1 2 3 4 5 6; do printf '\\x%02x\\x00\\x00\\x00' $i; done)"
expect_status 0 "$TMP/f" forward --weights "$TMP/w.safetensors" --tokens "$TMP/t8.npy" --out "$TMP/y8.npy"
expect_status 1 "$TMP/f" forward --weights "$TMP/w.safetensors" --tokens "$TMP/t6.npy" --out "$TMP/y6.npy"
expect_in "$TMP/err" "the length must be a multiple of 4"
expect_status 1 "$TMP/f" generate --weights "$TMP/w.safetensors" --prompt 'Hi' -n 4
expect_in "$TMP/err" "pools its sequence"
# eval: 300 bytes are two windows of 128 and a last one of 43, cut to 40 (whole groups of 4)
head -c 300 /dev/urandom > "$TMP/text.bin"
expect_status 0 "$TMP/f" eval --weights "$TMP/w.safetensors" --data "$TMP/text.bin"

# IR the backends cannot run: a time axis (8 of 12) that is no share of the sequence, located
cat > "$TMP/odd.mir" <<'MIR'
module @m {batch=2, context=12, dim=8, kind="encoder", vocab=16}
entry @forward

param @wte.weight : f32[16,8] init=normal(0.02)

func @forward(%tokens: i32[2,12]) -> f32[2,8,16] {
  %0 = param {p=@wte.weight} : f32[16,8]
  %1 = embedding(%tokens, %0) : f32[2,12,8]
  %2 = seq_pool(%1) {scale=0.25, stride=3} : f32[2,4,8]
  %3 = upsample(%2) {scale=1.0, stride=2} : f32[2,8,8]
  %4 = linear(%3, %0) : f32[2,8,16]
  return %4
}
MIR
expect_status 1 "$MODELC" build "$TMP/odd.mir" -o "$TMP/odd"
expect_in "$TMP/err" "odd.mir:10:3: error: backend: in @forward: upsample: a time axis of extent 8 is neither the sequence length 12 nor a divisor of it"

if [ -d /usr/share/games/fortunes ]; then
  scripts/fortunes-corpus.sh "$TMP/fortunes.txt" 2>/dev/null
  head -c 65536 "$TMP/fortunes.txt" > "$TMP/slice.txt"
  expect_status 0 "$TMP/f" train --data "$TMP/slice.txt" --steps 30 --warmup 5 --eval-every 0 --threads 1 \
    --out "$TMP/a.safetensors"
  first=$(awk -F, 'NR == 2 { print $3 }' "$TMP/a.csv") last=$(awk -F, 'END { print $3 }' "$TMP/a.csv")
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' ||
    fail "funnel-tiny: loss $first at step 1, $last at step 30: it did not train"
else
  echo "funnel.sh: the fortunes package is missing; funnel-tiny's training run skipped" >&2
fi
finish
