#!/usr/bin/env bash
# modelc build and the generated program's command line: outputs of every --emit, warning-free
# generated C, and clear errors (exit 1, never a crash) for bad flags, files, shapes and ids.
set -euo pipefail
source "$(dirname "$0")/lib.bash"
FIX=tests/reference/fixtures

G="$TMP/gpt"; B="$TMP/bert"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$G"
expect_status 0 "$MODELC" build examples/bert-tiny.yaml -o "$B"

# --emit=c: readable C that compiles with no warnings under gcc and clang
expect_status 0 "$MODELC" build --emit=c examples/gpt-tiny.yaml -o "$TMP/g.c"
expect_in "$TMP/g.c" "/* %v"                   # the IR op behind each statement
expect_in "$TMP/g.c" "static void f_h("        # one C function per IR function
expect_in "$TMP/g.c" "rt_linear("
expect_in "$TMP/g.c" "rt_parallel_for("
for cc in gcc clang; do
  if command -v $cc >/dev/null; then
    $cc -std=c11 -Wall -Wextra -Werror -O2 -Iruntime -c "$TMP/g.c" -o "$TMP/g.o" || fail "$cc warns on generated C"
  fi
done
for ex in examples/bert-tiny.yaml examples/gpt2-small.yaml; do
  expect_status 0 "$MODELC" build --emit=c "$ex" -o "$TMP/x.c"
  gcc -std=c11 -Wall -Wextra -Werror -Iruntime -fsyntax-only "$TMP/x.c" || fail "gcc warns on C for $ex"
done
expect_status 0 "$MODELC" build --emit=obj examples/gpt-tiny.yaml -o "$TMP/g2.o"
nm "$TMP/g2.o" | grep " T main" >/dev/null || fail "--emit=obj has no main"

# build errors
expect_status 1 "$MODELC" build examples/gpt-tiny.yaml;                 expect_in "$TMP/err" "needs an output file"
expect_status 1 "$MODELC" build --emit=wasm examples/gpt-tiny.yaml -o x; expect_in "$TMP/err" "--emit=wasm"
expect_status 1 "$MODELC" build --embed-weights "$TMP/none" examples/gpt-tiny.yaml -o "$TMP/e"
expect_in "$TMP/err" "cannot open weights file"
expect_status 1 "$MODELC" build --embed-weights $FIX/bert-tiny/weights.safetensors examples/gpt-tiny.yaml -o "$TMP/e"
expect_in "$TMP/err" "weights do not fit"
[ ! -e "$TMP/e" ] || fail "a program with unusable embedded weights was left behind"
CC=false expect_status 2 "$MODELC" build examples/gpt-tiny.yaml -o "$TMP/never"
expect_in "$TMP/err" "failed"

# info agrees with modelc stats on the planned arena
expect_status 0 "$G" info; cp "$TMP/out" "$TMP/info"
arena=$(sed -n 's/^arena bytes: *\([0-9]*\).*/\1/p' "$TMP/info")
expect_status 0 "$MODELC" stats examples/gpt-tiny.yaml
planned=$(awk '$1 == "memplan" { print $NF }' "$TMP/out" | tr -d ,)
[ -n "$arena" ] && [ "$arena" = "$planned" ] || fail "PROG info arena '$arena' differs from modelc stats '$planned'"
expect_in "$TMP/info" "parameters:       842496"
expect_in "$TMP/info" "forward FLOPs:"
# the GEMM layer's choice (docs/runtime.md, "The GEMM layer"); an impossible MODELC_GEMM is refused
grep -Eq '^gemm: +f32: (openblas|onednn); bf16: ' "$TMP/info" || fail "PROG info has no gemm: line: $(cat "$TMP/info")"
MODELC_CPU=portable expect_status 0 "$G" info; expect_in "$TMP/out" "f32: openblas; bf16: ref"
MODELC_GEMM=openblas expect_status 0 "$G" info; expect_in "$TMP/out" "f32: openblas; bf16: "
MODELC_GEMM=ref expect_status 0 "$G" info; expect_in "$TMP/out" "f32: ref; bf16: ref (MODELC_GEMM=ref)"
MODELC_GEMM=nonesuch expect_status 1 "$G" info; expect_in "$TMP/err" "MODELC_GEMM='nonesuch' is not an implementation"
MODELC_CPU=portable MODELC_GEMM=avx512bf16 expect_status 1 "$G" info; expect_in "$TMP/err" "no AVX512-BF16"

# every verb has --help
for v in info init export forward generate eval bench; do expect_status 0 "$G" $v --help; expect_in "$TMP/out" "usage:"; done
expect_status 1 "$G";                     expect_in "$TMP/err" "usage:"
expect_status 1 "$G" frobnicate;          expect_in "$TMP/err" "unknown command 'frobnicate'"
expect_status 1 "$G" forward --tokens x;  expect_in "$TMP/err" "--out FILE is required"
expect_status 1 "$G" forward --bogus 1;   expect_in "$TMP/err" "unknown option '--bogus'"
expect_status 1 "$G" generate --weights $FIX/gpt-tiny/weights.safetensors --prompt hi --top-p 2
expect_in "$TMP/err" "bad --top-p"
expect_status 1 "$G" generate --weights $FIX/gpt-tiny/weights.safetensors --prompt hi -n abc
expect_in "$TMP/err" "bad -n"
expect_status 1 "$G" generate --prompt hi; expect_in "$TMP/err" "--weights FILE is required"
expect_status 1 "$B" generate --weights $FIX/bert-tiny/weights.safetensors --prompt hi
expect_in "$TMP/err" "no language-model head"
expect_status 1 "$G" init;                 expect_in "$TMP/err" "--out FILE is required"
expect_status 1 "$G" export --weights $FIX/gpt-tiny/weights.safetensors; expect_in "$TMP/err" "--out FILE is required"

# export writes the loaded weights in their storage form: of init's file, that file again; its data
# section is the figure info reports (export bytes); it refuses to overwrite its input
expect_status 0 "$G" init --seed 5 --out "$TMP/i.safetensors"
expect_status 0 "$G" export --weights "$TMP/i.safetensors" --out "$TMP/x.safetensors"
cmp -s "$TMP/i.safetensors" "$TMP/x.safetensors" || fail "export of init's weights differs from init's file"
data=$(( $(stat -c %s "$TMP/x.safetensors") - 8 - $(od -An -t u8 -N8 "$TMP/x.safetensors") ))
expect_in "$TMP/info" "export bytes:     $data ("
expect_in "$TMP/info" "weight formats:   f32 $data (bytes)"
expect_status 1 "$G" export --weights "$TMP/i.safetensors" --out "$TMP/i.safetensors"
expect_in "$TMP/err" "is the same file as the input --weights"

# weights: missing, truncated, of another model
W=$FIX/gpt-tiny/weights.safetensors
mknpy "$TMP/ok.npy" '<i4' '1, 3' '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00'
expect_status 0 "$G" forward --weights $W --tokens "$TMP/ok.npy" --out "$TMP/o.npy"
expect_status 1 "$G" forward --weights "$TMP/none.safetensors" --tokens "$TMP/ok.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "none.safetensors"
head -c 100000 $W > "$TMP/trunc.safetensors"
expect_status 1 "$G" forward --weights "$TMP/trunc.safetensors" --tokens "$TMP/ok.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "trunc.safetensors"
expect_status 1 "$G" forward --weights $FIX/bert-tiny/weights.safetensors --tokens "$TMP/ok.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "tensor '"

# tokens: out of the vocabulary, longer than the context, wrong dtype, wrong rank, corrupt
mknpy "$TMP/big.npy" '<i4' '1, 2' '\x01\x00\x00\x00\x00\x01\x00\x00'
expect_status 1 "$G" forward --weights $W --tokens "$TMP/big.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "token 256 at [0,1] is outside the vocabulary"
mknpy "$TMP/long.npy" '<i4' '1, 129' "$(for i in $(seq 129); do printf '\\x01\\x00\\x00\\x00'; done)"
expect_status 1 "$G" forward --weights $W --tokens "$TMP/long.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "exceed the compiled shape"
mknpy "$TMP/f.npy" '<f4' '1, 1' '\x00\x00\x80\x3f'
expect_status 1 "$G" forward --weights $W --tokens "$TMP/f.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "int32 or int64"
mknpy "$TMP/r1.npy" '<i4' '3,' '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00'
expect_status 1 "$G" forward --weights $W --tokens "$TMP/r1.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "[B,T]"
printf 'not an npy file' > "$TMP/bad.npy"
expect_status 1 "$G" forward --weights $W --tokens "$TMP/bad.npy" --out "$TMP/o.npy"
expect_in "$TMP/err" "bad.npy"
# int64 tokens are accepted
mknpy "$TMP/i8.npy" '<i8' '1, 2' '\x01\x00\x00\x00\x00\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00'
expect_status 0 "$G" forward --weights $W --tokens "$TMP/i8.npy" --out "$TMP/o.npy"

# generate streams text; eval reads a text file; bench prints its figures
expect_status 0 "$G" generate --weights $W --prompt "Hello" -n 10 --top-k 5 --top-p 0.9 --seed 1
[ "$(wc -c < "$TMP/out")" -eq 10 ] || fail "generate -n 10 did not print 10 bytes"
expect_status 1 "$G" eval --weights $W --data "$TMP/none.txt"; expect_in "$TMP/err" "none.txt"
expect_status 0 "$G" bench --runs 1 -n 4; expect_in "$TMP/out" "forward_tokens_per_s:"
expect_in "$TMP/out" "decode_tokens_per_s:"
finish
