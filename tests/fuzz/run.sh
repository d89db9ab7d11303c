#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: builds the libFuzzer targets (clang, ASan+UBSan) and runs each for
# SECONDS (default 20) from a seed corpus of the repository's own files; any crash, leak, trap or
# timeout fails. CI runs it with a short budget; run longer by hand. Targets: fuzz_spec (the spec
# frontend), fuzz_ir (the IR parser and verifier), fuzz_safetensors (safetensors and .npy readers:
# the runtime's, and the compiler's --weights reader), fuzz_opts (PROG's option parser and output
# checks), fuzz_checkpoint (checkpoint metadata on --resume), fuzz_tokens (token files, whole-file
# reading, the byte tokenizer), fuzz_tokenizer (--tokenizer's llama2.c tokenizer.bin and Hugging Face
# tokenizer.json loaders, encoding and decoding).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-20}
cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DMODELC_FUZZ=ON -DMODELC_SANITIZE=ON >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_spec fuzz_ir fuzz_safetensors fuzz_opts fuzz_checkpoint \
  fuzz_tokens fuzz_tokenizer >&2
work=build-fuzz/corpus
rm -rf "$work" && mkdir -p "$work"/{spec,ir,st,opts,ck,tok,tkz}
seed() { local dir=$1; shift; for f in "$@"; do cp "$f" "$work/$dir/$(echo "$f" | tr / _)"; done; }
seed spec examples/*.yaml tests/reference/specs/*.yaml tests/specs/bad/*.yaml
seed ir tests/ir/*.mir tests/passes/*/*.mir
cp tests/reference/fixtures/enc-mean/*.npy "$work/st/"
head -c 4096 tests/reference/fixtures/enc-mean/weights.safetensors > "$work/st/head.safetensors"
# opts: a verb byte (fuzz_opts.c's table) and the arguments of each PROG command the CLI tests run
verbs=(info init forward eval generate bench grad train)
for i in "${!verbs[@]}"; do
  k=0
  while IFS= read -r line && [ $k -lt 40 ]; do
    { printf "\\x$(printf %02x "$i")"; printf '%s' "$line" | tr -s ' ' '\n'; } > "$work/opts/${verbs[$i]}-$k"
    k=$((k + 1))
  done < <(grep -ho -- "\" ${verbs[$i]} --.*" tests/cli/*.sh | sed -E "s/^\" ${verbs[$i]} //; s/[\\]\$//")
done
# ck: a run's optimiser and --tokens rows, then a checkpoint's metadata (the fields rt_write_checkpoint
# writes) as key=value lines, or (byte 0 bit 1) as the header of a safetensors file
meta='modelc_checkpoint=1 model=gpt-tiny optimizer=adamw step=2 steps=5 rng_state=12451767485222275644
rng_inc=13005396917011789751 elapsed_s=0.062 dropout_seed=2 loss_scale=1 loss_scale_good=0 skipped_steps=0'
{ printf '\x00\x00'; printf '%s' "$meta" | tr ' ' '\n'; } > "$work/ck/adamw"
{ printf '\x01\x03'; printf '%s' "${meta/adamw/sgd} tokens_rows=3 tokens_next=1" | tr ' ' '\n'; } > "$work/ck/sgd-rows"
json="{\"__metadata__\":{$(printf '%s' "$meta" | tr '\n' ' ' | sed -E 's/([^ =]+)=([^ ]+)/"\1":"\2"/g; s/ /,/g')}}"
while [ $(( ${#json} % 8 )) -ne 0 ]; do json+=' '; done
{ printf '\x02\x00'; for b in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (${#json} >> (8 * b)) & 255 )))"; done
  printf '%s' "$json"; } > "$work/ck/st"
# tok: a fake model's batch, context and vocab bytes, then each token .npy of the fixtures
for f in tests/reference/fixtures/*/tokens.npy tests/reference/fixtures/*/targets.npy; do
  { printf '\x03\x7f\x80'; cat "$f"; } > "$work/tok/$(echo "$f" | tr / _)"
done
# tkz: a format byte (even tokenizer.bin, odd tokenizer.json), a text length and the text, then the
# llama2.c fixture, and a small byte-level BPE tokenizer.json (GPT-2's 256 byte letters and a few merges)
{ printf '\x00\x0bHello there'; cat tests/reference/fixtures/tokenizer/llama2c/tokenizer.bin; } > "$work/tkz/llama2c"
python3 - > "$work/tkz/hf" <<'PY'
import json, sys
bs = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
m = {b: chr(b) for b in bs}
m.update({b: chr(256 + i) for i, b in enumerate(b for b in range(256) if b not in bs)})
vocab = {m[b]: b for b in range(256)}
merges = ["\u0120 t", "h e", "\u0120t he", "l l", "e ll"]
for a in merges:
    vocab.setdefault(a.replace(" ", ""), len(vocab))
tok = {"added_tokens": [{"id": len(vocab), "content": "<|endoftext|>"}],
       "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
       "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
sys.stdout.write("\x01\x10 hello the shell" + json.dumps(tok))
PY
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1
for t in spec:fuzz_spec ir:fuzz_ir st:fuzz_safetensors opts:fuzz_opts ck:fuzz_checkpoint tok:fuzz_tokens \
  tkz:fuzz_tokenizer; do
  dir=${t%%:*} bin=${t#*:}
  echo "fuzz: $bin for ${secs}s" >&2
  log=build-fuzz/$bin.log
  if ! build-fuzz/$bin -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/ "$work/$dir" >"$log" 2>&1; then
    # the whole report: the sanitizer's trace, the input in hex and base64, the artifact's name
    grep -v -E '^#[0-9]+' "$log" | tail -60 >&2
    echo "fuzz: $bin FAILED (reproduce: build-fuzz/$bin ARTIFACT)" >&2
    exit 1
  fi
  grep -E '^stat::(number_of_executed_units|new_units_added)|cov:' "$log" | tail -3 >&2
done
