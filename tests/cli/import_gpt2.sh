#!/usr/bin/env bash
# `modelc import DIR -o OUT` of a Hugging Face GPT-2 checkpoint: the errors. Each bad checkpoint
# (tests/reference/fixtures/hfgpt2-errors, make_hfgpt2_fixture.py) or edited config.json exits 1
# with a message naming the tensor or the key (at its line:col in config.json), and writes nothing:
# the output directory is not created, and an existing one stays empty. The good cases (logits
# against PyTorch) are tests/unit/test_import_gpt2.c's; here the untied head imports too.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

FIX=tests/reference/fixtures/hfgpt2-errors

# ckpt NAME WEIGHTS: $TMP/NAME holds the fixture's config.json and WEIGHTS as model.safetensors
ckpt() {
  mkdir -p "$TMP/$1"
  cp "$FIX/config.json" "$TMP/$1/config.json"
  cp "$FIX/$2" "$TMP/$1/model.safetensors"
}
# nothing written: OUT absent
none_written() { [ ! -e "$TMP/$1" ] || fail "$1 was written: $(ls -A "$TMP/$1")"; }
# refused NAME MESSAGE: importing $TMP/NAME exits 1 with MESSAGE and writes nothing
refused() {
  expect_status 1 "$MODELC" import "$TMP/$1" -o "$TMP/$1.out"
  expect_in "$TMP/err" "$2"
  none_written "$1.out"
}

# the valid one imports and checks
ckpt ok ok.safetensors
expect_status 0 "$MODELC" import "$TMP/ok" -o "$TMP/ok.out"
expect_status 0 "$MODELC" check "$TMP/ok.out/model.yaml"
expect_in "$TMP/ok.out/model.yaml" "lm_head: {tied: true}"
expect_in "$TMP/ok.out/model.yaml" "mlp: {hidden: 32, activation: gelu_tanh}"
[ -z "$(ls -A "$TMP/ok.out" | grep -v '^model\.\(yaml\|safetensors\)$' || true)" ] || fail "temporary files left: $(ls -A "$TMP/ok.out")"

# a missing tensor, a wrong shape (nn.Linear's layout), a wrong dtype, an unexpected tensor
ckpt missing missing.safetensors
refused missing "$TMP/missing/model.safetensors: error: missing tensor 'transformer.h.0.mlp.c_fc.bias' (every GPT-2 has it)"
ckpt shape shape.safetensors
refused shape "$TMP/shape/model.safetensors: error: tensor 'transformer.h.0.attn.c_attn.weight' is [24, 8], but $TMP/shape/config.json makes it [8, 24] (a Conv1D weight: [in, out])"
ckpt f16 f16.safetensors
refused f16 "error: tensor 'transformer.h.0.ln_1.weight' is F16: modelc import reads F32 checkpoints only"
ckpt extra extra.safetensors
refused extra "error: unexpected tensor 'transformer.h.1.ln_1.weight': not part of a GPT-2 language model of $TMP/extra/config.json"
# an existing output directory stays empty
mkdir "$TMP/empty.out"
expect_status 1 "$MODELC" import "$TMP/missing" -o "$TMP/empty.out"
[ -z "$(ls -A "$TMP/empty.out")" ] || fail "files left in an existing output directory: $(ls -A "$TMP/empty.out")"

# the head: a stored lm_head.weight that is not wte while tied; untied, it is the head
ckpt untied untied.safetensors
refused untied "error: tensor 'lm_head.weight' differs from 'transformer.wte.weight' while $TMP/untied/config.json ties them"
sed -i 's/^{/{\n  "tie_word_embeddings": false,/' "$TMP/untied/config.json"
expect_status 0 "$MODELC" import "$TMP/untied" -o "$TMP/untied.out"
expect_in "$TMP/untied.out/model.yaml" "lm_head: {tied: false}"
expect_status 0 "$MODELC" check "$TMP/untied.out/model.yaml"
sed -i 's/^{/{\n  "tie_word_embeddings": false,/' "$TMP/ok/config.json"
expect_status 1 "$MODELC" import "$TMP/ok" -o "$TMP/ok2.out"
expect_in "$TMP/err" "error: missing tensor 'lm_head.weight' (tie_word_embeddings is false)"
none_written ok2.out

# config.json: KEY_EDIT NAME SED-SCRIPT: a copy of the valid checkpoint with config.json edited
cfg() {
  ckpt "$1" ok.safetensors
  sed -i "$2" "$TMP/$1/config.json"
}
line_of() { grep -n -- "$2" "$TMP/$1/config.json" | head -1 | cut -d: -f1; }
cfg unknown 's/^{/{\n  "rotary_dim": 8,/'
refused unknown "$TMP/unknown/config.json:2:3: error: unknown config key 'rotary_dim': modelc import does not know whether it changes the architecture"
cfg typo 's/"n_embd"/"n_embed"/'
refused typo "config.json:$(line_of typo n_embed):3: error: unknown config key 'n_embed': modelc import does not know whether it changes the architecture (did you mean 'n_embd'?)"
expect_in "$TMP/err" "config.json: error: no 'n_embd': modelc import needs it"
cfg scale 's/"scale_attn_weights": true/"scale_attn_weights": false/'
refused scale "config.json:$(line_of scale scale_attn_weights):3: error: 'scale_attn_weights' other than true changes the architecture: not supported by modelc import"
cfg act 's/"gelu_new"/"swish"/'
refused act "error: 'activation_function' 'swish' is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu or relu)"
cfg heads 's/"n_head": 2/"n_head": 3/'
refused heads "error: 'n_head' (3) must divide 'n_embd' (8)"
cfg ctx 's/"n_ctx": 4/"n_ctx": 8/'
refused ctx "error: 'n_ctx' (8) differs from 'n_positions' (4)"
cfg width 's/"n_embd": 8/"n_embd": 16/'
refused width "error: tensor 'transformer.wte.weight' is [16, 8], but $TMP/width/config.json makes it [16, 16]"
cfg model 's/"model_type": "gpt2"/"model_type": "llama"/'
refused model "error: 'model_type' is 'llama': modelc import reads GPT-2 ('gpt2') directories"
cfg json 's/"n_layer": 1,/"n_layer": 1/'
refused json "config.json:$(( $(line_of json n_layer) + 1 )):3: error: bad JSON: expected ',' or '}'"

# the directory itself
mkdir "$TMP/empty"
expect_status 1 "$MODELC" import "$TMP/empty" -o "$TMP/x.out"
expect_in "$TMP/err" "$TMP/empty/config.json"
ckpt noweights ok.safetensors
rm "$TMP/noweights/model.safetensors"
expect_status 1 "$MODELC" import "$TMP/noweights" -o "$TMP/x.out"
expect_in "$TMP/err" "$TMP/noweights/model.safetensors: error: cannot open: No such file or directory"
expect_status 1 "$MODELC" import "$TMP/ok"
expect_in "$TMP/err" "modelc: error: 'modelc import' needs -o OUT, the output directory"
none_written x.out

finish
