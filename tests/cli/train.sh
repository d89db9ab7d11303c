#!/usr/bin/env bash
# Training through a generated program (gpt-tiny, whose pipeline starts with autodiff): flags
# override the spec's train: settings; a run resumed from a checkpoint ends byte-identical to an
# uninterrupted one (on --data windows and on --tokens rows, whose cursor the checkpoint keeps);
# micro-batches give the full batch's result; bad flags and programs built
# without training fail clearly.
set -euo pipefail
source "$(dirname "$0")/lib.bash"
FIX=tests/reference/fixtures
G="$TMP/gpt"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$G"
expect_status 0 "$G" info
expect_status 0 "$G" train --help; expect_in "$TMP/out" "--optimizer adamw|sgd"
cat README.md docs/*.md > "$TMP/data.txt"   # a few tens of kB of English

# resume: 6 steps in one run == 3 steps, checkpoint, resume to 6 (cosine schedule over 6 steps)
expect_status 0 "$G" train --data "$TMP/data.txt" --steps 6 --eval-every 3 --seed 5 --out "$TMP/a.safetensors"
expect_status 0 "$G" train --data "$TMP/data.txt" --steps 6 --stop-at 3 --seed 5 --checkpoint "$TMP/ck.safetensors" \
  --out "$TMP/half.safetensors"
expect_status 0 "$G" train --data "$TMP/data.txt" --steps 6 --resume "$TMP/ck.safetensors" --out "$TMP/b.safetensors"
# A huge --steps with --stop-at: nothing is sized by the planned steps (issue 9, point 3).
expect_status 0 timeout 60 "$G" train --data "$TMP/data.txt" --steps 1000000000000 --stop-at 3 --seed 5 \
  --out "$TMP/huge.safetensors"
expect_in "$TMP/err" "step 3"
cmp -s "$TMP/a.safetensors" "$TMP/b.safetensors" || fail "resumed run differs from the uninterrupted one"
[ "$(wc -l < "$TMP/a.csv")" -eq 7 ] || fail "the CSV log should have a header and 6 rows"
grep -q '^3,.*,[0-9.]*,[0-9.]*,' "$TMP/a.csv" || fail "no validation loss at step 3 in the CSV"
head -c 4 "$TMP/a.svg" | grep -q '<svg' || fail "no SVG loss curve"

# fixed rows resume exactly: 3 rows at batch 2 cycle 0 1 | 2 0 | 1 2 | ...; stopping after step 2
# (4 rows drawn, not a multiple of 3) and resuming must continue at row 1, as the uninterrupted
# run does (the checkpoint keeps the row cursor, issue 9)
i32() { local v out=""; for v in "$@"; do out+=$(printf '\\x%02x\\x%02x\\x00\\x00' $((v & 255)) $((v >> 8))); done; printf '%s' "$out"; }
ids=() tgts=()
for r in 0 1 2; do for c in 0 1 2 3 4 5 6 7; do ids+=($(( (r * 37 + c * 11) % 200 + 32 ))); tgts+=($(( (r * 53 + c * 7) % 200 + 32 ))); done; done
mknpy "$TMP/t3.npy" '<i4' '3, 8' "$(i32 "${ids[@]}")"
mknpy "$TMP/y3.npy" '<i4' '3, 8' "$(i32 "${tgts[@]}")"
R3=("$G" train --tokens "$TMP/t3.npy" --targets "$TMP/y3.npy" --batch 2 --steps 5 --seed 2 --lr 1e-2)
expect_status 0 "${R3[@]}" --out "$TMP/r3a.safetensors"
expect_status 0 "${R3[@]}" --stop-at 2 --checkpoint "$TMP/r3ck.safetensors" --out "$TMP/r3h.safetensors"
expect_status 0 "${R3[@]}" --resume "$TMP/r3ck.safetensors" --out "$TMP/r3b.safetensors"
cmp -s "$TMP/r3a.safetensors" "$TMP/r3b.safetensors" || fail "resumed --tokens run differs from the uninterrupted one"
cmp -s "$TMP/r3a.safetensors" "$TMP/r3h.safetensors" && fail "the half run equals the whole one: the test proves nothing"
# the resumed run must read rows like the checkpointed one: the same number of rows, fixed rows at all
expect_status 1 "$G" train --tokens $FIX/gpt-tiny/tokens.npy --targets $FIX/gpt-tiny/targets.npy --batch 2 \
  --steps 5 --resume "$TMP/r3ck.safetensors" --out "$TMP/r3x.safetensors"
expect_in "$TMP/err" "checkpoint metadata 'tokens_rows' is '3': the checkpointed run trained on 3 --tokens rows, this one on 4"
expect_status 1 "$G" train --data "$TMP/data.txt" --steps 5 --resume "$TMP/r3ck.safetensors" --out "$TMP/r3x.safetensors"
expect_in "$TMP/err" "checkpoint metadata 'tokens_rows' is '3': the checkpointed run trained on 3 --tokens rows, this one on none"
# an absurd cursor in the metadata is named
hlen=$(od -An -tu8 -N8 "$TMP/r3ck.safetensors" | tr -d ' ')
head -c $((8 + hlen)) "$TMP/r3ck.safetensors" | tail -c "$hlen" | sed -E 's/"tokens_next":"[0-9]+"/"tokens_next":"3"/' > "$TMP/h.json"
expect_in "$TMP/h.json" '"tokens_next":"3"'
n=$(wc -c < "$TMP/h.json")
{ for k in 0 1 2 3 4 5 6 7; do printf "\\x$(printf %02x $(( (n >> (8 * k)) & 255 )))"; done
  cat "$TMP/h.json"; tail -c +$((9 + hlen)) "$TMP/r3ck.safetensors"; } > "$TMP/r3bad.safetensors"
expect_status 1 "${R3[@]}" --resume "$TMP/r3bad.safetensors" --out "$TMP/r3x.safetensors"
expect_in "$TMP/err" "checkpoint metadata 'tokens_next' is '3': expected a row from 0 to 2"

# micro-batches: batch 4 as 4 x 1 gives the same weights as 1 x 4 (to float rounding: compare losses)
expect_status 0 "$G" train --tokens $FIX/gpt-tiny/tokens.npy --targets $FIX/gpt-tiny/targets.npy --steps 2 \
  --batch 4 --micro-batch 4 --out "$TMP/m4.safetensors"
expect_status 0 "$G" train --tokens $FIX/gpt-tiny/tokens.npy --targets $FIX/gpt-tiny/targets.npy --steps 2 \
  --batch 4 --micro-batch 1 --out "$TMP/m1.safetensors"
l4=$(sed -n '3p' "$TMP/m4.csv" | cut -d, -f3); l1=$(sed -n '3p' "$TMP/m1.csv" | cut -d, -f3)
awk -v a="$l4" -v b="$l1" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-5 * (a < 0 ? -a : a)) }' ||
  fail "step-2 loss with micro-batch 1 ($l1) differs from micro-batch 4 ($l4)"

# micro-batches in memory: a program compiled for batch 1 (--batch=1) plans a quarter of the
# training arena and trains batch 4 as 4 micro-batches, with the batch-4 program's losses
expect_status 0 "$MODELC" build --batch=1 examples/gpt-tiny.yaml -o "$TMP/g1"
a4=$("$G" info | sed -n 's/.*train arena \([0-9]*\).*/\1/p'); a1=$("$TMP/g1" info | sed -n 's/.*train arena \([0-9]*\).*/\1/p')
[ -n "$a1" ] && [ "$a1" -lt $((a4 / 3)) ] || fail "train arena for micro-batch 1 ($a1) is not about a quarter of batch 4's ($a4)"
expect_status 0 "$G" train --data "$TMP/data.txt" --steps 2 --batch 4 --micro-batch 4 --seed 9 --eval-every 0 --out "$TMP/b4.safetensors"
expect_status 0 "$TMP/g1" train --data "$TMP/data.txt" --steps 2 --batch 4 --micro-batch 1 --seed 9 --eval-every 0 --out "$TMP/b1.safetensors"
l4=$(sed -n '3p' "$TMP/b4.csv" | cut -d, -f3); l1=$(sed -n '3p' "$TMP/b1.csv" | cut -d, -f3)
awk -v a="$l4" -v b="$l1" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d < 1e-5 * (a < 0 ? -a : a)) }' ||
  fail "batch 4 as 4 micro-batches of a batch-1 program ($l1) differs from the batch-4 program ($l4)"
expect_status 1 "$TMP/g1" train --data "$TMP/data.txt" --batch 4 --micro-batch 2 --out x
expect_in "$TMP/err" "exceeds the compiled batch 1"

# every optimiser/schedule flag is taken
expect_status 0 "$G" train --tokens $FIX/gpt-tiny/tokens.npy --targets $FIX/gpt-tiny/targets.npy --steps 3 \
  --optimizer sgd --momentum 0.8 --schedule linear --warmup 1 --lr 1e-2 --min-lr 1e-4 --grad-clip 0.5 \
  --weight-decay 0 --beta1 0.8 --beta2 0.99 --out "$TMP/s.safetensors"
expect_in "$TMP/out" "step 3"

# checkpoint policies: less planned training memory for more recompute FLOPs, and store: no
# recompute for more memory (modelc stats)
train_row() { "$MODELC" stats --passes="autodiff,$1constfold,cse,fuse,dce,memplan" examples/gpt-tiny.yaml |
  awk '/^@train/ { gsub(",", ""); print $(NF-2), $NF }'; }
read -r f1 a1 < <(train_row "")
read -r f2 a2 < <(train_row "checkpoint<every=2>,")
read -r f4 a4 < <(train_row "checkpoint<every=4>,")
[ "$a2" -lt "$a1" ] && [ "$a4" -lt "$a2" ] || fail "arena does not fall with checkpointing: $a1 $a2 $a4"
[ "$f2" -gt "$f1" ] && [ "$f4" -gt "$f2" ] || fail "recompute FLOPs do not grow with checkpointing: $f1 $f2 $f4"
read -r fs as < <(train_row "checkpoint<store>,")
[ "$fs" -lt "$f1" ] && [ "$as" -gt "$a1" ] || fail "store should cost fewer FLOPs ($fs vs $f1) and more memory ($as vs $a1)"
expect_status 1 "$MODELC" stats --passes='autodiff,checkpoint<budget=1MiB>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "is below the smallest planned training arena any placement reaches"

# errors
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --schedule wavy; expect_in "$TMP/err" "bad --schedule 'wavy'"
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --optimizer adam; expect_in "$TMP/err" "bad --optimizer"
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --min-lr 5;    expect_in "$TMP/err" "exceeds the learning rate"
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --beta2 1;     expect_in "$TMP/err" "bad --beta2"
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --micro-batch 3; expect_in "$TMP/err" "does not divide"
expect_status 1 "$G" train --tokens $FIX/gpt-tiny/tokens.npy --out x;     expect_in "$TMP/err" "go together"
printf 'tiny' > "$TMP/tiny.txt"
expect_status 1 "$G" train --data "$TMP/tiny.txt" --out x;               expect_in "$TMP/err" "too small"
expect_status 1 "$G" train --data "$TMP/data.txt" --out x --resume $FIX/bert-tiny/weights.safetensors
expect_in "$TMP/err" "error"
expect_status 0 "$MODELC" build --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o "$TMP/inference-only"
expect_status 1 "$TMP/inference-only" train --data "$TMP/data.txt" --out x
expect_in "$TMP/err" "built without training support"
expect_status 0 "$MODELC" build examples/bert-tiny.yaml -o "$TMP/bert"     # a classifier: labelled batches only
expect_status 1 "$TMP/bert" train --data "$TMP/data.txt" --out x
expect_in "$TMP/err" "give labelled batches with --tokens and --targets"
# mixed precision (train: precision, the precision pass): the training arena shrinks; fp16 scales
# the loss dynamically: from a scale that overflows, steps are skipped and the scale halves, then
# doubles after --loss-scale-window good steps; the scaler's state survives a resume bit-exactly
for p in bf16 fp16; do
  sed "s/^train:/train:\n  precision: $p/" examples/gpt-tiny.yaml > "$TMP/$p.yaml"
  expect_status 0 "$MODELC" build "$TMP/$p.yaml" -o "$TMP/$p"
  [ -s "$TMP/err" ] && fail "building $p warned: $(cat "$TMP/err")"
  expect_status 0 "$TMP/$p" info; expect_in "$TMP/out" "precision:        $p"
  mine=$(sed -n 's/.*train arena \([0-9]*\) bytes.*/\1/p' "$TMP/out")
  expect_status 0 "$G" info
  full=$(sed -n 's/.*train arena \([0-9]*\) bytes.*/\1/p' "$TMP/out")
  [ "$mine" -lt "$full" ] || fail "$p train arena $mine is not below fp32's $full"
done
expect_status 1 "$TMP/bf16" train --data "$TMP/data.txt" --out x --loss-scale 8
expect_in "$TMP/err" "apply to fp16 training; this program trains in bf16"
expect_status 1 "$TMP/fp16" train --data "$TMP/data.txt" --out x --loss-scale 0.5
expect_in "$TMP/err" "bad --loss-scale '0.5'"
F16=("$TMP/fp16" train --data "$TMP/data.txt" --steps 24 --seed 3 --eval-every 0 --loss-scale 1e9 --loss-scale-window 4)
expect_status 0 "${F16[@]}" --out "$TMP/f16a.safetensors"
skipped=$(sed -n 's/.*, \([0-9]*\) step(s) skipped for overflow.*/\1/p' "$TMP/out")
[ "${skipped:-0}" -ge 1 ] || fail "fp16 from loss scale 1e9 skipped no step: $(cat "$TMP/out")"
awk -F, 'NR > 2 { if ($8 < prev) down = 1; if ($8 > prev) up = 1 } NR > 1 { prev = $8 }
         END { exit !(down && up) }' "$TMP/f16a.csv" || fail "the loss scale did not both fall and grow"
awk -F, 'NR == 2 { first = $3 } END { exit !($3 < first - 0.5) }' "$TMP/f16a.csv" || fail "fp16 training did not learn"
expect_status 0 "${F16[@]}" --stop-at 9 --checkpoint "$TMP/f16ck.safetensors" --out "$TMP/f16h.safetensors"
expect_status 0 "$TMP/fp16" train --data "$TMP/data.txt" --steps 24 --eval-every 0 --loss-scale-window 4 \
  --resume "$TMP/f16ck.safetensors" --out "$TMP/f16b.safetensors"
cmp -s "$TMP/f16a.safetensors" "$TMP/f16b.safetensors" || fail "resumed fp16 run differs from the uninterrupted one"
finish
