#!/usr/bin/env bash
# No output may destroy an input: modelc build and every verb of the generated program refuse,
# before writing anything, an output that is the same file (device and inode) as one of their
# inputs, and train never replaces a file at a derived path (the CSV log next to --out, the SVG
# next to the log) that is not one of its own. Files are written with the user's umask, and a
# write removes the temporary files a killed write of the same path left behind.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# unchanged FILE SUM: FILE still has the checksum SUM (taken before the refused command).
unchanged() { [ "$(sha256sum < "$1")" = "$2" ] || fail "$1 was changed by a refused command"; }

# ---- modelc build ----
cp examples/gpt-tiny.yaml "$TMP/s.yaml"
ln "$TMP/s.yaml" "$TMP/hard.yaml"   # another name, the same inode
sum=$(sha256sum < "$TMP/s.yaml")
expect_status 1 "$MODELC" build "$TMP/s.yaml" -o "$TMP/s.yaml"
expect_in "$TMP/err" "is the same file as the input"; unchanged "$TMP/s.yaml" "$sum"
expect_status 1 "$MODELC" build --emit=c "$TMP/s.yaml" -o "$TMP/hard.yaml"
expect_in "$TMP/err" "is the same file as the input"; unchanged "$TMP/s.yaml" "$sum"
expect_status 1 "$MODELC" build "$TMP/s.yaml" --embed-weights "$TMP/s.yaml" -o "$TMP/s.yaml"
unchanged "$TMP/s.yaml" "$sum"
mkdir "$TMP/dir"
expect_status 1 "$MODELC" build "$TMP/s.yaml" -o "$TMP/dir"; expect_in "$TMP/err" "is a directory"
expect_status 1 "$MODELC" build "$TMP/s.yaml" -o; expect_in "$TMP/err" "'-o' needs a value"

G="$TMP/gpt"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$G"
W="$TMP/w.safetensors"
cp "$G" "$TMP/g2"; gsum=$(sha256sum < "$G")
expect_status 1 "$MODELC" build examples/gpt-tiny.yaml --embed-weights "$TMP/g2" -o "$TMP/g2"
expect_in "$TMP/err" "--embed-weights"; unchanged "$TMP/g2" "$gsum"

# ---- umask and stale temporary files (rt_write_file_atomic) ----
touch "$W.tmp.Ab12Cd" "$W.tmp.keep" "$W.tmp.Ab12Cde" "$TMP/x.safetensors.tmp.Ab12Cd"
(umask 022 && "$G" init --out "$W" >/dev/null) || fail "init failed"
[ "$(stat -c %a "$W")" = 644 ] || fail "umask 022: mode $(stat -c %a "$W"), expected 644"
[ ! -e "$W.tmp.Ab12Cd" ] || fail "the leftover $W.tmp.Ab12Cd of a killed write was not removed"
for f in "$W.tmp.keep" "$W.tmp.Ab12Cde" "$TMP/x.safetensors.tmp.Ab12Cd"; do
  [ -e "$f" ] || fail "$f (not a temporary file of this path) was removed"
done
(umask 002 && "$G" init --out "$TMP/w2.safetensors" >/dev/null) || fail "init failed"
[ "$(stat -c %a "$TMP/w2.safetensors")" = 664 ] || fail "umask 002: mode $(stat -c %a "$TMP/w2.safetensors")"

# ---- the program's verbs ----
mknpy "$TMP/t.npy" '<i4' '1, 3' '\x01\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00'
cp "$TMP/t.npy" "$TMP/y.npy"
wsum=$(sha256sum < "$W"); tsum=$(sha256sum < "$TMP/t.npy"); ysum=$(sha256sum < "$TMP/y.npy")
expect_status 1 "$G" forward --weights "$W" --tokens "$TMP/t.npy" --out "$W"
expect_in "$TMP/err" "--out '$W' is the same file as the input --weights"; unchanged "$W" "$wsum"
expect_status 1 "$G" forward --weights "$W" --tokens "$TMP/t.npy" --out "$TMP/t.npy"
unchanged "$TMP/t.npy" "$tsum"
expect_status 1 "$G" grad --weights "$W" --tokens "$TMP/t.npy" --targets "$TMP/y.npy" --out "$TMP/y.npy"
expect_in "$TMP/err" "the input --targets"; unchanged "$TMP/y.npy" "$ysum"
expect_status 1 "$G" generate --weights "$W" --prompt hi -n 1 --logits-out "$W"; unchanged "$W" "$wsum"
expect_status 0 "$G" forward --weights "$W" --tokens "$TMP/t.npy" --out "$TMP/logits.npy"

# train: explicit and derived outputs against the inputs
head -c 20000 README.md > "$TMP/o.csv"; dsum=$(sha256sum < "$TMP/o.csv")
TR=(--steps 1 --batch 1 --eval-every 0)
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/o.safetensors"
expect_in "$TMP/err" "the CSV log next to --out '$TMP/o.csv' is the same file as the input --data"
unchanged "$TMP/o.csv" "$dsum"; [ ! -e "$TMP/o.safetensors" ] || fail "a refused train wrote --out"
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --weights "$W" --out "$W"; unchanged "$W" "$wsum"
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/a.safetensors" --checkpoint "$W" --weights "$W"
expect_in "$TMP/err" "--checkpoint"; unchanged "$W" "$wsum"
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/a.safetensors" --log "$TMP/a.safetensors"
expect_in "$TMP/err" "one output would overwrite the other"
# a derived path holding a file that is not ours is left alone; --log chooses another
echo "my notes" > "$TMP/n.csv"
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/n.safetensors"
expect_in "$TMP/err" "is not a log of ours"; expect_in "$TMP/err" "--log FILE"
[ "$(cat "$TMP/n.csv")" = "my notes" ] || fail "train overwrote a CSV it did not write"
echo "<svg>mine</svg>" > "$TMP/n2.svg"
expect_status 1 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/n.safetensors" --log "$TMP/n2.csv"
expect_in "$TMP/err" "is not a curve of ours"
[ "$(cat "$TMP/n2.svg")" = "<svg>mine</svg>" ] || fail "train overwrote an SVG it did not write"
# its own log and curve are replaced by the next run, and --checkpoint may be the --resume file
expect_status 0 "$G" train "${TR[@]}" --data "$TMP/o.csv" --out "$TMP/r.safetensors" --checkpoint "$TMP/ck.safetensors"
expect_status 0 "$G" train --steps 2 --batch 1 --eval-every 0 --data "$TMP/o.csv" --out "$TMP/r.safetensors" \
  --resume "$TMP/ck.safetensors" --checkpoint "$TMP/ck.safetensors"
[ "$(wc -l < "$TMP/r.csv")" -eq 3 ] || fail "the resumed run's log should have a header and 2 rows"
finish
