#!/usr/bin/env bash
# generate on valid but extreme models: a context of 1 (the prompt keeps one byte, the window
# slides by whole steps), non-finite logits from NaN/Inf weights (a clear error, exit 1, in bounds),
# and a bidirectional language model (no KV cache: generate recomputes, as --no-cache does).
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# spec NAME CONTEXT CAUSAL: a 1-layer byte model, small enough to build in a second
spec() {
  cat > "$TMP/$1.yaml" <<YAML
model: {name: $1, vocab: 256, context: $2, batch: 1, dim: 16}
layers:
  - embedding: {}
  - positions: {kind: learned}
  - residual:
      - layernorm: {}
      - attention: {heads: 2, causal: $3}
  - layernorm: {name: ln_f}
  - lm_head: {tied: true}
passes: [memplan]
YAML
  expect_status 0 "$MODELC" build "$TMP/$1.yaml" -o "$TMP/$1"
  expect_status 0 "$TMP/$1" init --out "$TMP/$1.st"
}

# context 1: every step sees one token; with and without the cache, greedy and sampled
spec c1 1 true
for mode in "--temperature 0" "--top-p 0.9 --seed 3"; do
  expect_status 0 "$TMP/c1" generate --weights "$TMP/c1.st" --prompt "Hello" -n 6 $mode; cp "$TMP/out" "$TMP/kv"
  [ "$(wc -c < "$TMP/kv")" -eq 6 ] || fail "context 1 ($mode): generate -n 6 printed $(wc -c < "$TMP/kv") bytes"
  expect_status 0 "$TMP/c1" generate --weights "$TMP/c1.st" --prompt "Hello" -n 6 $mode --no-cache
  cmp -s "$TMP/kv" "$TMP/out" || fail "context 1 ($mode): the KV cache and --no-cache differ"
done
# the prompt's last byte is the whole window: same tokens as prompting with that byte alone
expect_status 0 "$TMP/c1" generate --weights "$TMP/c1.st" --prompt "Hello" -n 6 --temperature 0; cp "$TMP/out" "$TMP/a"
expect_status 0 "$TMP/c1" generate --weights "$TMP/c1.st" --prompt "o" -n 6 --temperature 0
cmp -s "$TMP/a" "$TMP/out" || fail "context 1: the prompt 'Hello' did not reduce to its last byte"
[ ! -s "$TMP/err" ] || fail "context 1: a one-byte prompt was reported as truncated"

# a bidirectional language model has no KV cache: generate equals --no-cache, info says so
spec bi 8 false
expect_status 0 "$TMP/bi" info
expect_in "$TMP/out" "state bytes:      0 (no KV cache: generate recomputes"
if grep -q "slots: the KV caches" "$TMP/out"; then fail "info reports KV caches for a bidirectional model"; fi
# (12 steps past a context of 8: the window slides too; every step's logits, byte for byte)
expect_status 0 "$TMP/bi" generate --weights "$TMP/bi.st" --prompt "Hi" -n 12 --logits-out "$TMP/kv.npy"
expect_status 0 "$TMP/bi" generate --weights "$TMP/bi.st" --prompt "Hi" -n 12 --logits-out "$TMP/re.npy" --no-cache
cmp -s "$TMP/kv.npy" "$TMP/re.npy" || fail "bidirectional: generate's logits differ from --no-cache's"

# non-finite logits: ln_f.weight[0] set to NaN (then +Inf) in the init output
# poke FILE TENSOR HEX4: overwrite the first float32 of TENSOR in safetensors FILE
poke() {
  local hlen off
  hlen=$(od -An -tu4 -N4 "$1" | tr -d ' ')
  off=$(head -c $((8 + hlen)) "$1" | tail -c "$hlen" |
        sed -n "s/.*\"$2\":{[^}]*\"data_offsets\":\[\([0-9]*\),.*/\1/p")
  [ -n "$off" ] || { fail "poke: no tensor $2 in $1"; return; }
  printf "$3" | dd of="$1" bs=1 seek=$((8 + hlen + off)) conv=notrunc status=none
}
for bad in 'NaN:\x00\x00\xc0\x7f' 'Inf:\x00\x00\x80\x7f'; do
  cp "$TMP/c1.st" "$TMP/bad.st"; poke "$TMP/bad.st" ln_f.weight "${bad#*:}"
  for mode in "--temperature 0" "--top-p 0.9" "--top-k 5" "" "--no-cache --top-p 0.5"; do
    expect_status 1 "$TMP/c1" generate --weights "$TMP/bad.st" --prompt "Hi" -n 4 $mode
    expect_in "$TMP/err" "the logits are not finite at step 1"
  done
done
finish
