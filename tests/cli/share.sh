#!/usr/bin/env bash
# The share pass from the command line: `modelc stats` shows the parameters falling to one block's
# (the expected counts derived here from the specs' shapes), a spec's bad share options are
# reported at their line and column, and examples/albert-tiny.yaml (shared blocks, factorised
# embedding) trains on the fortunes corpus: its loss falls.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# the parameters column of `modelc stats` after pass $1 (commas removed)
stats_params() { awk -v p="$1" '$1 == p { gsub(",", "", $2); print $2 }' "$TMP/out"; }

# gpt-tiny: V=256, T=128, C=128, 4 blocks of ln_1, attn (c_attn [3C,C]+[3C], c_proj [C,C]+[C]),
# ln_2, mlp (c_fc [4C,C]+[4C], c_proj [C,4C]+[C]); ln_f; the head is tied (no parameter)
V=256 T=128 C=128 HD=512
block=$(( 2*C + 3*C*C + 3*C + C*C + C + 2*C + HD*C + HD + C*HD + C ))
expect_status 0 "$MODELC" stats --passes='share<mode=all>,autodiff,constfold,cse,fuse,dce,memplan' examples/gpt-tiny.yaml
[ "$(stats_params '(input)')" = $(( V*C + T*C + 4*block + 2*C )) ] || fail "gpt-tiny: the unshared count is not 4 blocks'"
[ "$(stats_params 'share<mode=all>')" = $(( V*C + T*C + block + 2*C )) ] ||
  fail "gpt-tiny share<mode=all>: $(stats_params 'share<mode=all>') parameters, want embeddings + one block + ln_f"
[ "$(stats_params autodiff)" = "$(stats_params 'share<mode=all>')" ] || fail "autodiff changed the parameter count"
# attention only, in groups of 2: layers 1 and 3 lose their ln_1 and attention
expect_status 0 "$MODELC" stats --passes='share<mode=attention;group=2>' examples/gpt-tiny.yaml
attn=$(( 2*C + 3*C*C + 3*C + C*C + C ))
[ "$(stats_params 'share<mode=attention;group=2>')" = $(( V*C + T*C + 4*block - 2*attn + 2*C )) ] ||
  fail "gpt-tiny share<mode=attention;group=2>: $(stats_params 'share<mode=attention;group=2>') parameters"

# albert-tiny: a [V,E] table and emb_proj [H,E]+[H], wpe, ln_emb, one post-LN block, lm_head [V,H]
E=32 H=128
block=$(( 3*H*H + 3*H + H*H + H + 2*H + HD*H + HD + H*HD + H + 2*H ))
expect_status 0 "$MODELC" stats examples/albert-tiny.yaml
[ "$(stats_params 'share<mode=all>')" = $(( V*E + H*E + H + T*H + 2*H + block + V*H )) ] ||
  fail "albert-tiny: $(stats_params 'share<mode=all>') parameters after share"

# a bad option in a spec: at its line and column
sed 's/- share: {mode: all}/- share: {mode: all, group: 1}/' examples/albert-tiny.yaml > "$TMP/g1.yaml"
expect_status 1 "$MODELC" check "$TMP/g1.yaml"
expect_in "$TMP/err" "g1.yaml:30:5: error: share: group=1 shares nothing"
sed 's/- share: {mode: all}/- share: {mode: mlp}/' examples/albert-tiny.yaml > "$TMP/m.yaml"
expect_status 1 "$MODELC" check "$TMP/m.yaml"
expect_in "$TMP/err" "invalid value 'mlp' for option 'mode' of pass 'share'"

# albert-tiny trains on the fortunes corpus (a 64 kB slice: 30 steps, no validation pass)
if [ -d /usr/share/games/fortunes ]; then
  scripts/fortunes-corpus.sh "$TMP/fortunes.txt" 2>/dev/null
  head -c 65536 "$TMP/fortunes.txt" > "$TMP/slice.txt"
  expect_status 0 "$MODELC" build examples/albert-tiny.yaml -o "$TMP/albert"
  expect_status 0 "$TMP/albert" train --data "$TMP/slice.txt" --steps 30 --warmup 5 --eval-every 0 --threads 1 \
    --out "$TMP/a.safetensors"
  first=$(awk -F, 'NR == 2 { print $3 }' "$TMP/a.csv") last=$(awk -F, 'END { print $3 }' "$TMP/a.csv")
  awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < a - 1.0) }' ||
    fail "albert-tiny: loss $first at step 1, $last at step 30: it did not train"
  # one copy of the block in the weights file
  grep -aq 'layer\.1\.' "$TMP/a.safetensors" && fail "albert-tiny's weights hold a second layer's parameters"
else
  echo "share.sh: the fortunes package is missing; albert-tiny's training run skipped" >&2
fi
finish
