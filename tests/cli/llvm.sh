#!/usr/bin/env bash
# The LLVM backend against the C backend (docs/backends.md): for every example and reference spec
# both backends' programs give bit-identical logits (same kernels, same element-wise operations in
# the same order, no fast-math), the training specs bit-identical gradients (PROG grad) and weights
# and losses after AdamW steps (PROG train, fixed seed, the spec's compiled-in train settings);
# LLVM -O0 equals -O2; the JIT (modelc run) gives the same logits and losses; the RtModel and
# RtParamInfo constants the LLVM backend lays out agree with the C structs (PROG info and PROG init
# agree); the outputs (.ll, .bc, .o for this and another target) need no C compiler; bad flags are
# clear errors (exit 1).
set -euo pipefail
source "$(dirname "$0")/lib.bash"
FIX=tests/reference/fixtures

# same A B WHAT: the two files are byte-identical
same() { cmp -s "$1" "$2" || fail "$3: $1 and $2 differ"; }
# losses FILE: the loss figures a PROG train run printed
losses() { grep -o 'loss [0-9.]*' "$1" || true; }

# modelc run under AddressSanitizer: the JIT'd code is not instrumented but calls the sanitised
# runtime in this process; it works, so nothing is skipped. (MODELC_SKIP_JIT=1 would skip the JIT
# checks, saying so.)
# MODELC_TEST_SHARD=I/N (CTest's cli_llvm_I, tests/CMakeLists.txt) runs the I-th of N shards: the
# specs of the loop whose position is I mod N, the flag checks before it in shard 0, the checks
# after it in shard N-1; unset, everything.
shard=${MODELC_TEST_SHARD:-0/1}
si=${shard%/*} sn=${shard#*/}
[[ $si =~ ^[0-9]+$ && $sn =~ ^[1-9][0-9]*$ && $si -lt $sn ]] || { echo "MODELC_TEST_SHARD=$shard: expected I/N, 0 <= I < N" >&2; exit 2; }

jit=1
if [ "${MODELC_SKIP_JIT:-0}" = 1 ]; then echo "NOTE: MODELC_SKIP_JIT=1: skipping the modelc run (JIT) checks" >&2; jit=0; fi

if [ "$si" = 0 ]; then
# ---- flags: clear errors, exit 1 ----
expect_status 1 "$MODELC" build --backend=foo examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--backend=foo: expected c or llvm"
expect_status 1 "$MODELC" build --backend=llvm --emit=obj --target=nonsense examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--target=nonsense"
expect_status 1 "$MODELC" build --emit=bc examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--emit=bc needs --backend=llvm"
expect_status 1 "$MODELC" build --backend=c --emit=llvm examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--emit=llvm needs --backend=llvm"
expect_status 1 "$MODELC" build --backend=llvm --emit=c examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--emit=c is the C backend's output"
expect_status 1 "$MODELC" build --target=x86_64-linux-gnu --emit=obj examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "add --backend=llvm"
expect_status 1 "$MODELC" build --backend=llvm --target=aarch64-linux-gnu examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "cross-compile with --emit=obj"
expect_status 1 "$MODELC" build --backend=llvm --emit=obj --target=aarch64-linux-gnu --mcpu=native \
  examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--mcpu=native describes this machine"
expect_status 1 "$MODELC" build --backend=llvm --emit=obj --mcpu=nosuchcpu examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--mcpu=nosuchcpu: LLVM does not know this CPU"
expect_status 1 "$MODELC" run --mcpu=nosuchcpu examples/gpt-tiny.yaml -- info
expect_in "$TMP/err" "--mcpu=nosuchcpu: LLVM does not know this CPU"
expect_status 1 "$MODELC" build --backend=llvm --emit=wasm examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "--emit=wasm: expected exe, c, obj, llvm or bc"
expect_status 1 "$MODELC" run examples/gpt-tiny.yaml
expect_in "$TMP/err" "needs the program's command after '--'"
expect_status 1 "$MODELC" run --backend=c examples/gpt-tiny.yaml -- info
expect_in "$TMP/err" "'modelc run' compiles with the LLVM JIT"
expect_status 1 "$MODELC" run --target=aarch64-linux-gnu examples/gpt-tiny.yaml -- info
expect_in "$TMP/err" "runs on this machine"
expect_status 0 "$MODELC" run --help;    expect_in "$TMP/out" "modelc run [options] SPEC|FILE.mir -- COMMAND"
expect_status 0 "$MODELC" build --help;  expect_in "$TMP/out" "--backend=c|llvm"
expect_status 0 "$MODELC" --help;        expect_in "$TMP/out" "run SPEC -- CMD ARGS"
[ ! -e "$TMP/x" ] || fail "a failed build left $TMP/x behind"

# ---- outputs: no C compiler for the model code (CC=false would fail any $CC call) ----
CC=false expect_status 0 "$MODELC" build --backend=llvm --emit=llvm examples/gpt-tiny.yaml -o "$TMP/g.ll"
expect_in "$TMP/g.ll" 'void @f.h('                       # one LLVM function per IR function
expect_in "$TMP/g.ll" 'call void @rt_linear('             # runtime kernels through the C ABI
expect_in "$TMP/g.ll" 'call void @rt_parallel_for('       # fused loops split over the pool
expect_in "$TMP/g.ll" 'vector.body'                       # ... and vectorised by LLVM
expect_in "$TMP/g.ll" 'define i32 @main('
expect_in "$TMP/g.ll" '@model = internal constant %RtModel'
CC=false expect_status 0 "$MODELC" build --backend=llvm --emit=bc examples/gpt-tiny.yaml -o "$TMP/g.bc"
[ "$(head -c 2 "$TMP/g.bc")" = "BC" ] || fail "--emit=bc did not write bitcode"
CC=false expect_status 0 "$MODELC" build --backend=llvm --emit=obj examples/gpt-tiny.yaml -o "$TMP/g.o"
nm "$TMP/g.o" | grep " T main" >/dev/null || fail "the LLVM object has no main"
nm "$TMP/g.o" | grep " U rt_main" >/dev/null || fail "the LLVM object does not call rt_main"
CC=false expect_status 0 "$MODELC" build --backend=llvm --emit=obj --target=aarch64-linux-gnu --mcpu=cortex-a72 \
  examples/gpt-tiny.yaml -o "$TMP/a64.o"
od -An -tu2 -j18 -N2 "$TMP/a64.o" | grep -qw 183 || fail "--target=aarch64-linux-gnu did not write an AArch64 object"
CC=false expect_status 0 "$MODELC" build --backend=llvm --emit=llvm -O0 examples/gpt-tiny.yaml -o "$TMP/g0.ll"
if grep -qF 'vector.body' "$TMP/g0.ll"; then fail "-O0 vectorised: the level did not reach LLVM's pipeline"; fi
fi

# ---- every example and reference spec: C and LLVM (-O2, -O0, JIT) give the same outputs ----
# gpt2-small is run at batch 1 on 8 tokens from PROG init weights; the others on their fixtures.
mknpy "$TMP/g2tok.npy" '<i4' '1, 8' "$(for i in 464 2068 7586 21831 18045 625 262 16931; do
  printf '\\x%02x\\x%02x\\x00\\x00' $((i & 255)) $((i >> 8)); done)"
# and gpt-tiny-adamw trained in mixed precision (the cast and loss_scale ops; fp16 scales the loss)
for prec in bf16 fp16; do
  mkdir -p "$TMP/$prec"
  sed "s/^train:/train:\n  precision: $prec/" tests/reference/specs/gpt-tiny-adamw.yaml > "$TMP/$prec/gpt-tiny-adamw.yaml"
done

k=-1
for spec in examples/*.yaml tests/reference/specs/*.yaml "$TMP"/bf16/*.yaml "$TMP"/fp16/*.yaml; do
  k=$((k + 1)); [ $((k % sn)) = "$si" ] || continue
  name=$(basename "$spec" .yaml); fx=${name%-adamw}; fx=${fx%-q8}; fx=${fx%-k[12]}; fx=$FIX/${fx%-bidir} # gpt-tiny-q8: gpt-tiny's (f32) weights; sparse-tiny-bidir: sparse-tiny's
  bx=$fx; case $name in albert-tiny | gpt-local | funnel-tiny) bx=$FIX/gpt-tiny ;; xl-tiny-m9) bx=$FIX/xl-tiny ;; esac # no fixture: PROG init weights on gpt-tiny's batch
  case $name in distill-tiny | distill-teacher) bx=$FIX/distill-ref ;; esac # context 64: distill-ref's short batch
  [ "$name" = distill-ref-teacher ] && fx=$FIX/distill-ref-teacher bx=$FIX/distill-ref
  flags=(); [ "$name" = gpt2-small ] && flags=(--batch=1)
  expect_status 0 "$MODELC" build "${flags[@]}" "$spec" -o "$TMP/c"
  expect_status 0 "$MODELC" build "${flags[@]}" --backend=llvm "$spec" -o "$TMP/l"
  expect_status 0 "$MODELC" build "${flags[@]}" --backend=llvm -O0 "$spec" -o "$TMP/l0"
  if [ -f "$fx/weights.safetensors" ]; then # a fixture (linformer-tiny's has one file per configuration: init weights)
    w=$fx/weights.safetensors; tok=$fx/tokens.npy
  else
    w=$TMP/init.safetensors; tok=$TMP/g2tok.npy; [ -f "$bx/tokens.npy" ] && tok=$bx/tokens.npy
    expect_status 0 "$TMP/c" init --seed 7 --out "$w"
  fi
  # layouts: PROG info reads every RtModel field, PROG init every RtParamInfo field
  for p in c l; do "$TMP/$p" info | grep -v '^compile options' > "$TMP/info.$p"; done
  same "$TMP/info.c" "$TMP/info.l" "$name: PROG info (RtModel layout)"
  if [ "$name" = gpt-tiny ]; then
    for p in c l; do expect_status 0 "$TMP/$p" init --seed 3 --out "$TMP/init.$p.safetensors"; done
    same "$TMP/init.c.safetensors" "$TMP/init.l.safetensors" "$name: PROG init (RtParamInfo layout)"
  fi
  for p in c l l0; do
    expect_status 0 "$TMP/$p" forward --weights "$w" --tokens "$tok" --out "$TMP/y.$p.npy"
  done
  same "$TMP/y.c.npy" "$TMP/y.l.npy" "$name: logits, C vs LLVM"
  same "$TMP/y.c.npy" "$TMP/y.l0.npy" "$name: logits, C vs LLVM -O0"
  if [ $jit = 1 ]; then
    expect_status 0 "$MODELC" run "${flags[@]}" "$spec" -- forward --weights "$w" --tokens "$tok" --out "$TMP/y.j.npy"
    same "$TMP/y.c.npy" "$TMP/y.j.npy" "$name: logits, C vs JIT"
  fi
  # a distilling program's grad needs its teacher's weights: distill-ref's fixture has them (the
  # example's are exercised by tests/cli/distill.sh)
  tw=(); if grep -q '^teacher:' "$TMP/info.c"; then tw=(--teacher-weights "$bx/teacher.safetensors"); fi
  [ "$name" = distill-ref-teacher ] && w=$bx/teacher.safetensors
  if [ -f "$bx/targets.npy" ] && grep -q '^training: *[0-9]' "$TMP/info.c" && { [ ${#tw[@]} = 0 ] || [ "$name" = distill-ref ]; }; then
    tg=$bx/targets.npy
    for p in c l l0; do
      expect_status 0 "$TMP/$p" grad --weights "$w" "${tw[@]}" --tokens "$tok" --targets "$tg" --out "$TMP/g.$p.safetensors"
    done
    same "$TMP/g.c.safetensors" "$TMP/g.l.safetensors" "$name: gradients, C vs LLVM"
    same "$TMP/g.c.safetensors" "$TMP/g.l0.safetensors" "$name: gradients, C vs LLVM -O0"
    case $name in *-adamw)
      for p in c l; do
        expect_status 0 "$TMP/$p" train --weights "$w" --tokens "$tok" --targets "$tg" --steps 3 --seed 5 \
          --eval-every 0 --out "$TMP/t.$p.safetensors"
        cat "$TMP/out" "$TMP/err" > "$TMP/t.$p.log"
      done
      [ -n "$(losses "$TMP/t.c.log")" ] || fail "$name: PROG train printed no loss"
      [ "$(losses "$TMP/t.c.log")" = "$(losses "$TMP/t.l.log")" ] || fail "$name: train losses, C vs LLVM"
      same "$TMP/t.c.safetensors" "$TMP/t.l.safetensors" "$name: trained weights, C vs LLVM"
      if [ $jit = 1 ]; then
        expect_status 0 "$MODELC" run "$spec" -- train --weights "$w" --tokens "$tok" --targets "$tg" --steps 3 \
          --seed 5 --eval-every 0 --out "$TMP/t.j.safetensors"
        cat "$TMP/out" "$TMP/err" > "$TMP/t.j.log"
        [ "$(losses "$TMP/t.c.log")" = "$(losses "$TMP/t.j.log")" ] || fail "$name: train losses, C vs JIT"
        same "$TMP/t.c.safetensors" "$TMP/t.j.safetensors" "$name: trained weights, C vs JIT"
      fi ;;
    esac
  fi
done
if [ $((si + 1)) = "$sn" ]; then

# 16-bit tensors are only stored: both backends reject compute on one, with the op named
cat > "$TMP/half.mir" <<'MIR'
module @m {batch=1, context=2, vocab=4}
entry @forward
param @emb : f32[4,3] init=normal(0.02)
func @forward(%tokens: i32[1,2]) -> f32[1,2,3] {
  %0 = param {p=@emb} : f32[4,3]
  %1 = embedding(%tokens, %0) : f32[1,2,3]
  %2 = cast(%1) {to="bf16"} : bf16[1,2,3]
  %3 = relu(%2) : bf16[1,2,3]
  %4 = cast(%3) {to="f32"} : f32[1,2,3]
  return %4
}
MIR
both_refuse() { # FILE.mir MESSAGE: both backends refuse to build it, saying MESSAGE
  for b in c llvm; do
    expect_status 1 "$MODELC" build --backend=$b "$1" -o "$TMP/refused"
    expect_in "$TMP/err" "$2"
  done
}
both_refuse "$TMP/half.mir" "half.mir:8:3: error: backend: in @forward: relu: a 16-bit (bf16/f16) tensor: the backends compute in f32"

# the entry is what the runtime calls: token ids in, one float tensor out (either backend says so)
cat > "$TMP/entry.mir" <<'MIR'
module @m {batch=1, context=2, vocab=4}
entry @forward
param @emb : f32[4,3] init=normal(0.02)
func @forward(%tokens: i32[1,2]) -> i32[1,2] {
  %0 = add(%tokens, %tokens) : i32[1,2]
  return %0
}
MIR
both_refuse "$TMP/entry.mir" "entry.mir:4:1: error: backend: the entry @forward must take token ids i32[B,T] and return one f32 tensor"

# integer element-wise ops (C's arithmetic: int32 + int32 stays int32), from an IR file
cat > "$TMP/int.mir" <<'MIR'
module @intadd {batch=1, context=4, dim=8, kind="decoder", vocab=16}
entry @forward

param @wte.weight : f32[16,8] init=normal(0.02)

func @forward(%tokens: i32[1,4]) -> f32[1,4,8] {
  %0 = add(%tokens, %tokens) : i32[1,4]
  %1 = param {p=@wte.weight} : f32[16,8]
  %2 = embedding(%0, %1) : f32[1,4,8]
  return %2
}
MIR
mknpy "$TMP/it.npy" '<i4' '1, 4' '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x07\x00\x00\x00'
expect_status 0 "$MODELC" build "$TMP/int.mir" -o "$TMP/ic"
expect_status 0 "$MODELC" build --backend=llvm "$TMP/int.mir" -o "$TMP/il"
expect_status 0 "$TMP/ic" init --seed 1 --out "$TMP/iw.safetensors"
for p in ic il; do
  expect_status 0 "$TMP/$p" forward --weights "$TMP/iw.safetensors" --tokens "$TMP/it.npy" --out "$TMP/$p.npy"
done
same "$TMP/ic.npy" "$TMP/il.npy" "integer add: C vs LLVM"

# embedded weights: the LLVM program carries the file's bytes and needs no --weights
expect_status 0 "$MODELC" build --backend=llvm --embed-weights $FIX/gpt-tiny/weights.safetensors \
  examples/gpt-tiny.yaml -o "$TMP/le"
expect_status 0 "$TMP/le" info; expect_in "$TMP/out" "weights:          embedded"
expect_status 0 "$TMP/le" forward --tokens $FIX/gpt-tiny/tokens.npy --out "$TMP/y.le.npy"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$TMP/c"
expect_status 0 "$TMP/c" forward --weights $FIX/gpt-tiny/weights.safetensors --tokens $FIX/gpt-tiny/tokens.npy \
  --out "$TMP/y.c.npy"
same "$TMP/y.c.npy" "$TMP/y.le.npy" "gpt-tiny: logits with embedded weights (LLVM)"
expect_status 1 "$MODELC" build --backend=llvm --embed-weights $FIX/bert-tiny/weights.safetensors \
  examples/gpt-tiny.yaml -o "$TMP/le2"
expect_in "$TMP/err" "weights do not fit"
if [ $jit = 1 ]; then
  expect_status 0 "$MODELC" run --embed-weights $FIX/gpt-tiny/weights.safetensors examples/gpt-tiny.yaml -- \
    generate --prompt 'Hello' -n 8 --temperature 0
  cp "$TMP/out" "$TMP/gen.j"
  expect_status 0 "$TMP/c" generate --weights $FIX/gpt-tiny/weights.safetensors --prompt 'Hello' -n 8 --temperature 0
  same "$TMP/out" "$TMP/gen.j" "gpt-tiny: greedy generation (KV cache), C vs JIT"
  # the other program commands through the JIT: eval, init, bench
  expect_status 0 "$TMP/c" eval --weights $FIX/gpt-tiny/weights.safetensors --data docs/backends.md
  cp "$TMP/out" "$TMP/eval.c"
  expect_status 0 "$MODELC" run examples/gpt-tiny.yaml -- eval --weights $FIX/gpt-tiny/weights.safetensors \
    --data docs/backends.md
  expect_in "$TMP/out" "bits per byte"
  same "$TMP/eval.c" "$TMP/out" "gpt-tiny: eval, C vs JIT"
  expect_status 0 "$TMP/c" init --seed 4 --out "$TMP/i.c.safetensors"
  expect_status 0 "$MODELC" run examples/gpt-tiny.yaml -- init --seed 4 --out "$TMP/i.j.safetensors"
  same "$TMP/i.c.safetensors" "$TMP/i.j.safetensors" "gpt-tiny: init, C vs JIT"
  expect_status 0 "$MODELC" run examples/gpt-tiny.yaml -- bench --runs 1 -n 4
  expect_in "$TMP/out" "forward_tokens_per_s:"
  expect_status 1 "$MODELC" run examples/gpt-tiny.yaml -- nonsense
  expect_in "$TMP/err" "unknown command 'nonsense'"
fi
fi
finish
