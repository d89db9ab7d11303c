#!/usr/bin/env bash
# The same bytes with any number of threads (issue 9, point 6): for 1, 2, 3 and 4 threads a
# program's logits (forward, generate with and without the KV cache), gradients (grad) and trained
# weights are byte-identical, and a run checkpointed with one thread count and resumed with
# another ends byte-identical to the uninterrupted run, its checkpoint's tensors too. Models:
# gpt-tiny (LayerNorm, GELU, tied head, dropout-free), llama-tiny (RMSNorm, SwiGLU, sinusoidal
# positions, untied head), bert-tiny (bidirectional, dropout, classifier) and gpt-tiny-adamw
# trained in bf16 mixed precision; every thread count for gpt-tiny, 1 against 3 for the others
# (the CLI suite runs twice in CI: kept short). The unit side (the GEMMs' BLAS calls, every threaded kernel)
# is tests/unit/test_rt_threads.c.
set -euo pipefail
source "$(dirname "$0")/lib.bash"
FIX=tests/reference/fixtures
cat README.md docs/*.md > "$TMP/all.txt"; head -c 20000 "$TMP/all.txt" > "$TMP/data.txt" # 2 kB held out: short evaluations
mkdir -p "$TMP/bf16"
sed "s/^train:/train:\n  precision: bf16/" tests/reference/specs/gpt-tiny-adamw.yaml > "$TMP/bf16/gpt-tiny-adamw.yaml"

# tensors of a safetensors file without its JSON header (whose metadata holds the elapsed time)
tensors() { local n; n=$(od -An -t u8 -N 8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
# same FILE_A FILE_B WHAT: byte-identical, or a failure naming WHAT
same() { cmp -s "$1" "$2" || fail "$3: $(basename "$2") differs from $(basename "$1")"; }

for spec in examples/gpt-tiny.yaml tests/reference/specs/llama-tiny.yaml examples/bert-tiny.yaml \
  "$TMP/bf16/gpt-tiny-adamw.yaml"; do
  name=$(basename "$spec" .yaml); fx=$FIX/${name%-adamw}; P="$TMP/$name"; [ "$spec" = "$TMP/bf16/gpt-tiny-adamw.yaml" ] && P="$TMP/$name-bf16"
  flags=(); [ "$name" = llama-tiny ] && flags=(--passes=autodiff,constfold,cse,fuse,dce,memplan) # no train pipeline
  expect_status 0 "$MODELC" build "${flags[@]}" "$spec" -o "$P"
  W=$fx/weights.safetensors
  if [ "$name" = bert-tiny ]; then data=(--tokens $fx/tokens.npy --targets $fx/targets.npy); else data=(--data "$TMP/data.txt"); fi
  threads="1 2 3 4"; resume="3 1 4"   # the whole matrix for gpt-tiny, 1 vs 3 for the others
  [ "$name" != gpt-tiny ] && threads="1 3" && resume="3"
  for t in $threads; do
    expect_status 0 "$P" forward --weights $W --tokens $fx/tokens.npy --out "$P.fwd$t.npy" --threads $t
    expect_status 0 "$P" grad --weights $W --tokens $fx/tokens.npy --targets $fx/targets.npy --out "$P.grad$t.safetensors" --threads $t
    expect_status 0 "$P" train "${data[@]}" --weights $W --steps 4 --eval-every 2 --seed 3 --threads $t \
      --out "$P.train$t.safetensors"
    if [ "$name" != bert-tiny ]; then
      expect_status 0 "$P" generate --weights $W --prompt 'The model' -n 12 --temperature 0.9 --seed 4 --threads $t \
        --logits-out "$P.gen$t.npy"
      cp "$TMP/out" "$P.gen$t.txt"
      expect_status 0 "$P" generate --weights $W --prompt 'The model' -n 12 --temperature 0.9 --seed 4 --threads $t \
        --no-cache --logits-out "$P.nc$t.npy"
    fi
    [ $t = 1 ] && continue
    same "$P.fwd1.npy" "$P.fwd$t.npy" "$name forward logits, $t threads"
    same "$P.grad1.safetensors" "$P.grad$t.safetensors" "$name gradients, $t threads"
    same "$P.train1.safetensors" "$P.train$t.safetensors" "$name trained weights, $t threads"
    if [ "$name" != bert-tiny ]; then
      same "$P.gen1.npy" "$P.gen$t.npy" "$name generate logits, $t threads"
      same "$P.gen1.txt" "$P.gen$t.txt" "$name generated text, $t threads"
      same "$P.nc1.npy" "$P.nc$t.npy" "$name generate --no-cache logits, $t threads"
    fi
  done
  # the losses column of the logs (elapsed and tokens/s differ): every thread count the same
  for t in ${threads#1 }; do
    diff <(cut -d, -f1-5 "$P.train1.csv") <(cut -d, -f1-5 "$P.train$t.csv") >/dev/null ||
      fail "$name: losses with $t threads differ from 1 thread"
  done
  # checkpointed with 2 threads at step 2, resumed with 3 (and with 1 and 4): the uninterrupted bytes
  expect_status 0 "$P" train "${data[@]}" --weights $W --steps 4 --eval-every 2 --seed 3 --threads 2 \
    --checkpoint "$P.ck2.safetensors" --checkpoint-every 2 --stop-at 2 --out "$P.half.safetensors"
  expect_status 0 "$P" train "${data[@]}" --weights $W --steps 4 --eval-every 2 --seed 3 --threads 4 \
    --checkpoint "$P.ck4.safetensors" --checkpoint-every 2 --stop-at 2 --out "$P.half4.safetensors"
  tensors "$P.ck2.safetensors" > "$P.ck2.bin"; tensors "$P.ck4.safetensors" > "$P.ck4.bin"
  [ -s "$P.ck2.bin" ] || fail "$name: empty checkpoint tensors"
  same "$P.ck2.bin" "$P.ck4.bin" "$name checkpoint tensors, 4 threads vs 2"
  for t in $resume; do
    cp "$P.ck2.safetensors" "$P.ck.safetensors"
    expect_status 0 "$P" train "${data[@]}" --steps 4 --eval-every 2 --seed 3 --threads $t \
      --resume "$P.ck.safetensors" --out "$P.resumed$t.safetensors"
    same "$P.train1.safetensors" "$P.resumed$t.safetensors" "$name: checkpointed with 2 threads, resumed with $t"
  done
done
# pre-packed weights (MODELC_GEMM_PACK=1, runtime/gemm/gemm.h): every weight operand is packed,
# whatever the threads, so the bytes are still the same for any thread count, and for gpt2-small
# at batch 1 (decode-sized column blocks: thousands of packed slices), C and LLVM agree too
G2="$TMP/g2"
expect_status 0 "$MODELC" build --batch=1 examples/gpt2-small.yaml -o "$G2.c"
expect_status 0 "$MODELC" build --batch=1 --backend=llvm examples/gpt2-small.yaml -o "$G2.l"
expect_status 0 "$G2.c" init --seed 7 --out "$G2.w.safetensors"
mknpy "$G2.tok.npy" '<i4' '1, 8' "$(for i in 464 2068 7586 21831 18045 625 262 16931; do
  printf '\\x%02x\\x%02x\\x00\\x00' $((i & 255)) $((i >> 8)); done)"
for p in "c 1" "c 3" "l 2"; do
  set -- $p
  MODELC_GEMM_PACK=1 expect_status 0 "$G2.$1" forward --weights "$G2.w.safetensors" --tokens "$G2.tok.npy" --threads $2 \
    --out "$G2.$1$2.npy"
done
same "$G2.c1.npy" "$G2.c3.npy" "gpt2-small, pre-packed weights: 3 threads against 1"
same "$G2.c1.npy" "$G2.l2.npy" "gpt2-small, pre-packed weights: LLVM with 2 threads against C with 1"
MODELC_GEMM_PACK=1 expect_status 0 "$G2.c" info
if grep -q 'onednn' "$TMP/out"; then expect_in "$TMP/out" "weights pre-packed: MODELC_GEMM_PACK=1"; fi
finish
