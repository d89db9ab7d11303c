#!/usr/bin/env bash
# Bounded reads and located input errors (issue 9, points 3 and 4): a spec, an IR file or training
# data that never ends (/dev/zero) is refused at a stated size cap, not read until memory runs out;
# a directory where a file is expected says "is a directory"; a resume checkpoint whose metadata
# holds an absurd step names the field; --embed-weights takes regular files only, and the LLVM
# backend states its 4 GiB limit.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# the compiler picks the format by extension: links named x.yaml and x.mir to /dev/zero
ln -s /dev/zero "$TMP/zero.yaml"; ln -s /dev/zero "$TMP/zero.mir"; mkdir "$TMP/dir" "$TMP/dir.mir"
expect_status 1 timeout 20 "$MODELC" check "$TMP/zero.yaml"
expect_in "$TMP/err" "spec input is longer than 64 MiB, the limit when it is not a regular file"
expect_status 1 timeout 20 "$MODELC" check "$TMP/zero.mir"
expect_in "$TMP/err" "IR input is longer than 256 MiB, the limit when it is not a regular file"
expect_status 1 "$MODELC" check "$TMP/dir"
expect_in "$TMP/err" "is a directory; the spec input must be a file"
expect_status 1 "$MODELC" check "$TMP/dir.mir"
expect_in "$TMP/err" "is a directory; the IR input must be a file"

# a tiny trainable model (one small block of gpt-tiny)
sed -e 's/repeat: 4$/repeat: 1/' -e 's/dim: 128/dim: 8/' -e 's/context: 128/context: 8/' \
    -e 's/heads: 4/heads: 2/' -e 's/hidden: 512/hidden: 16/' examples/gpt-tiny.yaml > "$TMP/t.yaml"
expect_status 1 "$MODELC" build --embed-weights "$TMP/dir" "$TMP/t.yaml" -o "$TMP/e"
expect_in "$TMP/err" "is a directory: --embed-weights names a safetensors file"
G="$TMP/t"
expect_status 0 "$MODELC" build "$TMP/t.yaml" -o "$G"
expect_status 1 timeout 20 "$G" train --data /dev/zero --steps 1 --out "$TMP/o.safetensors"
expect_in "$TMP/err" "/dev/zero: longer than 256 MiB, the limit for a file that is not a regular file"
expect_status 1 "$G" train --data "$TMP/dir" --steps 1 --out "$TMP/o.safetensors"
expect_in "$TMP/err" "is a directory"
expect_status 0 "$G" init --out "$TMP/w.safetensors"
expect_status 1 "$G" forward --weights "$TMP/w.safetensors" --tokens "$TMP/dir" --out "$TMP/l.npy"
expect_in "$TMP/err" "is a directory, not a .npy file"
expect_status 1 "$G" forward --weights "$TMP/dir" --tokens tests/reference/fixtures/gpt-tiny/tokens.npy --out "$TMP/l.npy"
expect_in "$TMP/err" "is a directory, not a safetensors file"

# --embed-weights: a device or a FIFO is refused before anything reads it (no hang, no endless
# read); the LLVM backend refuses a file above the 4 GiB - 1 it can embed, from its size alone
expect_status 1 "$MODELC" build examples/gpt-tiny.yaml --embed-weights /dev/zero -o "$TMP/ez"
expect_in "$TMP/err" "/dev/zero: error: is not a regular file: --embed-weights names a safetensors file"
mkfifo "$TMP/fifo"
expect_status 1 timeout 20 "$MODELC" build --backend=llvm examples/gpt-tiny.yaml --embed-weights "$TMP/fifo" -o "$TMP/ef"
expect_in "$TMP/err" "is not a regular file"
truncate -s 4G "$TMP/big.safetensors"   # sparse: no disk used
expect_status 1 timeout 20 "$MODELC" build --backend=llvm examples/gpt-tiny.yaml --embed-weights "$TMP/big.safetensors" -o "$TMP/eb"
expect_in "$TMP/err" "--embed-weights: more than 4294967295 bytes, the most the LLVM backend can embed"
rm -f "$TMP/big.safetensors"

# a checkpoint whose 'step' is near 2^63: its header rewritten with that step
cat README.md > "$TMP/data.txt"
expect_status 0 "$G" train --data "$TMP/data.txt" --steps 2 --stop-at 1 --checkpoint "$TMP/ck.safetensors" \
  --out "$TMP/half.safetensors"
hlen=$(od -An -tu8 -N8 "$TMP/ck.safetensors" | tr -d ' ')
head -c $((8 + hlen)) "$TMP/ck.safetensors" | tail -c "$hlen" > "$TMP/h.json"
sed -E 's/"step":"[0-9]+"/"step":"9223372036854775800"/' "$TMP/h.json" > "$TMP/h2.json"
expect_in "$TMP/h2.json" '"step":"9223372036854775800"'
while [ $(( $(wc -c < "$TMP/h2.json") % 8 )) -ne 0 ]; do printf ' ' >> "$TMP/h2.json"; done
n=$(wc -c < "$TMP/h2.json")
{ for i in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (n >> (8 * i)) & 255 )))"; done
  cat "$TMP/h2.json"; tail -c +$((9 + hlen)) "$TMP/ck.safetensors"; } > "$TMP/bad.safetensors"
expect_status 1 "$G" train --data "$TMP/data.txt" --steps 2 --resume "$TMP/bad.safetensors" --out "$TMP/r.safetensors"
expect_in "$TMP/err" "checkpoint metadata 'step' is '9223372036854775800': expected a step count from 0 to"
finish
