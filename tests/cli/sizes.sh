#!/usr/bin/env bash
# Sizes never truncate: a .mir whose kernel call would pass a count above INT32_MAX as an int (an
# embedding table or a linear with more than 2^31 rows), or whose sinusoid table is above the
# 256 MiB a program compiles in, is rejected by the backend's plan at the op's line:col, naming
# the kernel and the value. Shapes only: nothing large is allocated.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

cat > "$TMP/emb.mir" <<'MIR'
module @big {batch=1, context=4, dim=4, kind="decoder", vocab=3000000000}
entry @main

param @wte : f32[3000000000,4] init=normal(0.02)

func @main(%ids: i32[1,4]) -> f32[1,4,4] {
  %0 = param {p=@wte} : f32[3000000000,4]
  %1 = embedding(%ids, %0) : f32[1,4,4]
  return %1
}
MIR
expect_status 1 "$MODELC" build --emit=c "$TMP/emb.mir" -o "$TMP/emb.c"
expect_in "$TMP/err" "$TMP/emb.mir:8:3: error: backend: in @main: embedding: argument 5 of rt_embedding is 3000000000 at the compiled shapes, above the limit 2147483647 (INT32_MAX)"
[ ! -e "$TMP/emb.c" ] || fail "emb.c was written"

cat > "$TMP/lin.mir" <<'MIR'
module @big {batch=1, context=4, dim=4, kind="decoder", vocab=4}
entry @main

param @wte : f32[4,4] init=normal(0.02)
param @head : f32[3000000000,4] init=normal(0.02)

func @main(%ids: i32[1,4]) -> f32[1,4,3000000000] {
  %0 = param {p=@wte} : f32[4,4]
  %1 = embedding(%ids, %0) : f32[1,4,4]
  %2 = param {p=@head} : f32[3000000000,4]
  %3 = linear(%1, %2) : f32[1,4,3000000000]
  return %3
}
MIR
expect_status 1 "$MODELC" build --emit=c "$TMP/lin.mir" -o "$TMP/lin.c"
expect_in "$TMP/err" "$TMP/lin.mir:11:3: error: backend: in @main: linear: argument 6 of rt_linear is 3000000000 at the compiled shapes"

cat > "$TMP/sin.mir" <<'MIR'
module @big {batch=1, context=1048576, dim=512, kind="decoder", vocab=4}
entry @main

param @wte : f32[4,512] init=normal(0.02)

func @main(%ids: i32[1,1048576]) -> f32[1,1048576,512] {
  %0 = param {p=@wte} : f32[4,512]
  %1 = embedding(%ids, %0) : f32[1,1048576,512]
  %2 = sinusoid {shape=[1048576,512]} : f32[1048576,512]
  %3 = add(%1, %2) : f32[1,1048576,512]
  return %3
}
MIR
expect_status 1 "$MODELC" build --emit=c "$TMP/sin.mir" -o "$TMP/sin.c"
expect_in "$TMP/err" "$TMP/sin.mir:9:3: error: backend: in @main: sinusoid: a position table of [1048576, 512] floats is 2147483648 bytes, above the limit of 268435456 bytes (256 MiB)"

# the same limits from a spec are the checker's (tests/specs/bad/*-int-limit.yaml, sinusoid-too-big.yaml)
expect_status 1 "$MODELC" check tests/specs/bad/sinusoid-too-big.yaml
expect_in "$TMP/err" "above 256 MiB, the largest table a program compiles in"

finish
