#!/usr/bin/env bash
# The moe layer from the command line: bad keys are reported at their line and column; the example
# examples/moe-tiny.yaml builds with both backends, which give the same logits, and trains a few
# steps (the loss falls), printing the load-balancing loss and each layer's expert load; fp16
# training of a moe layer is refused clearly.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

sed 's/moe: {experts: 4, top_k: 1,/moe: {experts: 4, top_k: 5,/' examples/moe-tiny.yaml > "$TMP/bad.yaml"
line=$(grep -n -- '- moe:' "$TMP/bad.yaml" | cut -d: -f1)
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "bad.yaml:$line:38: error: moe 'top_k' (5) must be in [1, experts] (experts 4)"
sed 's/capacity_factor: 1.25/capacity_factor: -1/' examples/moe-tiny.yaml > "$TMP/bad.yaml"
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "moe 'capacity_factor' must be in (0, 1e6], got -1"

# the example: one moe op per block, FLOPs per token within 1% of gpt-tiny's (one expert of the
# same width per token, plus the router)
expect_status 0 "$MODELC" dump examples/moe-tiny.yaml
expect_in "$TMP/out" 'moe(%'
f_moe=$("$MODELC" stats examples/moe-tiny.yaml | awk '/^memplan/ { gsub(",", ""); print $4 }')
f_gpt=$("$MODELC" stats examples/gpt-tiny.yaml | awk '/^memplan/ { gsub(",", ""); print $4 }')
[ -n "$f_moe" ] && [ $((f_moe * 100)) -ge $((f_gpt * 99)) ] && [ $((f_moe * 100)) -le $((f_gpt * 101)) ] ||
  fail "moe-tiny forward FLOPs per token $f_moe vs gpt-tiny's $f_gpt"

expect_status 0 "$MODELC" build examples/moe-tiny.yaml -o "$TMP/mc"
expect_status 0 "$MODELC" build --backend=llvm examples/moe-tiny.yaml -o "$TMP/ml"
expect_status 0 "$TMP/mc" init --seed 4 --out "$TMP/w.safetensors"
head -c 3000 /dev/urandom | od -An -tu1 | tr -s ' ' '\n' | awk 'NF { printf "%c", 97 + $1 % 26 }' > "$TMP/data.txt"
mknpy "$TMP/tok.npy" '<i4' '1, 8' \
  '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04\x00\x00\x00\x05\x00\x00\x00\x06\x00\x00\x00\x07\x00\x00\x00\x08\x00\x00\x00'
for b in mc ml; do
  expect_status 0 "$TMP/$b" forward --weights "$TMP/w.safetensors" --tokens "$TMP/tok.npy" --out "$TMP/$b.npy"
done
cmp -s "$TMP/mc.npy" "$TMP/ml.npy" || fail "moe-tiny: C and LLVM logits differ"
expect_status 0 "$TMP/mc" train --data "$TMP/data.txt" --steps 4 --lr 3e-3 --warmup 0 --eval-every 0 --seed 2 \
  --out "$TMP/t.safetensors"
expect_in "$TMP/err" "| aux 0.0"                  # the load-balancing loss on the progress line
expect_in "$TMP/out" "(of which load-balancing 0.0"
expect_in "$TMP/out" "expert load, mean over 4 train call(s) of 4 rows:"
expect_in "$TMP/out" "moe layer 3: aux 0.0"
expect_in "$TMP/out" "of 512 ("                     # B T top_k pairs per call
first=$(awk -F, 'NR == 2 { print $3 }' "$TMP/t.csv"); last=$(awk -F, 'END { print $3 }' "$TMP/t.csv")
awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a) }' || fail "moe-tiny: the loss did not fall ($first -> $last)"

expect_status 1 "$MODELC" build --passes='autodiff,precision<fp16>,constfold,cse,fuse,dce,memplan' examples/moe-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "precision: fp16 training of a moe layer is not implemented"
finish
