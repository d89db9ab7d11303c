#!/usr/bin/env bash
# Knowledge distillation from the command line (train: distill:, docs/training.md): the spec's errors
# at their line:col (a bad temperature or alpha, a missing or broken teacher spec reported in its
# own file, a vocabulary or context that differs, nested distillation); PROG train without, with the
# wrong or with a needless --teacher-weights; then examples/distill-tiny.yaml end to end: its teacher
# (examples/distill-teacher.yaml) trained a few steps, the student trained from it by both backends
# (the same losses and weights), the loss's KL and CE parts logged, the student's files without the
# teacher's tensors, and a checkpointed run resumed to the same weights; in bf16 and fp16.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

S=examples/distill-tiny.yaml
cp examples/distill-teacher.yaml "$TMP/"
line=$(grep -n 'distill:' $S | cut -d: -f1)
col() { awk -v l="$line" -v w="$1" 'NR == l { print index($0, w) }' "$2"; }

# bad temperature and alpha, at their values
sed 's/temperature: 2.0/temperature: -1/; s/alpha: 0.5/alpha: 1.5/' $S > "$TMP/bad.yaml"
expect_status 1 "$MODELC" check "$TMP/bad.yaml"
expect_in "$TMP/err" "bad.yaml:$line:$(col -1 "$TMP/bad.yaml"): error: 'distill_temperature' must be greater than 0, got -1"
expect_in "$TMP/err" "bad.yaml:$line:$(col 1.5 "$TMP/bad.yaml"): error: 'distill_alpha' must be in [0, 1], got 1.5"
# a vocabulary and a context the teacher does not share, at the teacher's value
sed 's/vocab: 256/vocab: 128/' examples/distill-teacher.yaml > "$TMP/t128.yaml"
sed 's/distill-teacher.yaml/t128.yaml/' $S > "$TMP/v.yaml"
expect_status 1 "$MODELC" check "$TMP/v.yaml"
expect_in "$TMP/err" "v.yaml:$line:$(col t128 "$TMP/v.yaml"): error: the teacher '$TMP/t128.yaml' has vocabulary 128, the student 256: distillation needs the same vocabulary"
sed 's/context: 64/context: 32/' examples/distill-teacher.yaml > "$TMP/t32.yaml"
sed 's/distill-teacher.yaml/t32.yaml/' $S > "$TMP/c.yaml"
expect_status 1 "$MODELC" check "$TMP/c.yaml"
expect_in "$TMP/err" "has context 32, the student 64: distillation needs the same context"
# the teacher's own errors, in its file; a teacher that is not there
sed 's/heads: 4/heads: 5/' examples/distill-teacher.yaml > "$TMP/tbad.yaml"
sed 's/distill-teacher.yaml/tbad.yaml/' $S > "$TMP/tb.yaml"
expect_status 1 "$MODELC" check "$TMP/tb.yaml"
hl=$(grep -n 'heads: 4' examples/distill-teacher.yaml | cut -d: -f1)
expect_in "$TMP/err" "tbad.yaml:$hl:32: error: 'heads' (5) must divide model.dim (128)"
expect_in "$TMP/err" "tb.yaml:$line:$(col tbad "$TMP/tb.yaml"): error: the teacher's spec '$TMP/tbad.yaml' has errors (above)"
sed 's/distill-teacher.yaml/nope.yaml/' $S > "$TMP/nf.yaml"
expect_status 1 "$MODELC" check "$TMP/nf.yaml"
expect_in "$TMP/err" "nf.yaml:$line:$(col nope "$TMP/nf.yaml"): error: cannot open the teacher's spec '$TMP/nope.yaml'"
# a teacher that distills itself
sed 's/distill-teacher.yaml/v.yaml/' $S > "$TMP/nest.yaml"
expect_status 1 "$MODELC" check "$TMP/nest.yaml"
expect_in "$TMP/err" "v.yaml:$line:12: error: a teacher's spec may not distill from a teacher of its own"

# the example: the teacher trained 3 steps on some text, then the student from it
cat docs/*.md > "$TMP/text.txt"
expect_status 0 "$MODELC" build examples/distill-teacher.yaml -o "$TMP/teacher"
expect_status 0 "$TMP/teacher" train --data "$TMP/text.txt" --steps 3 --eval-every 0 --out "$TMP/t.safetensors"
expect_status 0 "$MODELC" build $S -o "$TMP/sc"
expect_status 0 "$MODELC" build --backend=llvm $S -o "$TMP/sl"
expect_status 0 "$MODELC" check $S
expect_in "$TMP/out" "ok (distill-tiny, 120576 parameters, and its teacher's 834304)"
expect_status 0 "$TMP/sc" info
expect_in "$TMP/out" "teacher:          834304 parameters in 52 tensors (teacher.*, frozen; train --teacher-weights)"
# --teacher-weights: required, checked per tensor, refused by a program that does not distill
expect_status 1 "$TMP/sc" train --data "$TMP/text.txt" --steps 1 --out "$TMP/s.safetensors"
expect_in "$TMP/err" "this program distills from a teacher: --teacher-weights T.safetensors is required"
expect_status 0 "$TMP/sc" init --out "$TMP/si.safetensors"
expect_status 1 "$TMP/sc" train --data "$TMP/text.txt" --steps 1 --teacher-weights "$TMP/si.safetensors" --out "$TMP/s.safetensors"
expect_in "$TMP/err" "si.safetensors: tensor 'wte.weight' has shape [256,64], the teacher needs [256,128]"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$TMP/gt"
expect_status 0 "$TMP/gt" init --out "$TMP/gt.safetensors"
expect_status 1 "$TMP/sc" grad --teacher-weights "$TMP/gt.safetensors" --weights "$TMP/si.safetensors" \
  --tokens tests/reference/fixtures/distill-ref/tokens.npy --targets tests/reference/fixtures/distill-ref/targets.npy \
  --out "$TMP/g.safetensors"
expect_in "$TMP/err" "gt.safetensors: tensor 'wpe.weight' has shape [128,128], the teacher needs [64,128]"
expect_status 1 "$TMP/gt" train --data "$TMP/text.txt" --steps 1 --teacher-weights "$TMP/t.safetensors" --out "$TMP/x.safetensors"
expect_in "$TMP/err" "--teacher-weights: this program does not distill"
# a tensor missing from the teacher's file
expect_status 0 "$TMP/teacher" init --out "$TMP/t0.safetensors"
/usr/bin/env python3 - "$TMP/t0.safetensors" "$TMP/tmiss.safetensors" <<'EOF'
import json, struct, sys
b = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
h["ln_f.bias_renamed"] = h.pop("ln_f.bias")
hb = json.dumps(h).encode()
hb += b" " * ((8 - len(hb) % 8) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
EOF
expect_status 1 "$TMP/sc" train --data "$TMP/text.txt" --steps 1 --teacher-weights "$TMP/tmiss.safetensors" --out "$TMP/s.safetensors"
expect_in "$TMP/err" "tmiss.safetensors: tensor 'ln_f.bias' is missing (the teacher needs 52 parameters)"

# trained by both backends: the same losses, parts and weights; the log has the parts
for p in sc sl; do
  expect_status 0 "$TMP/$p" train --data "$TMP/text.txt" --steps 4 --eval-every 2 --teacher-weights "$TMP/t.safetensors" \
    --out "$TMP/$p.safetensors"
  cp "$TMP/out" "$TMP/$p.out"
done
expect_in "$TMP/sc.out" "step 4: loss"
expect_in "$TMP/sc.out" "(kl "
[ "$(grep '^step' "$TMP/sc.out")" = "$(grep '^step' "$TMP/sl.out")" ] || fail "distill-tiny: train losses, C vs LLVM"
cmp -s "$TMP/sc.safetensors" "$TMP/sl.safetensors" || fail "distill-tiny: trained weights, C vs LLVM"
expect_in "$TMP/sc.csv" "step,lr,loss,val_loss,val_bpb,tokens_per_s,elapsed_s,loss_scale,kl,ce"
# loss = alpha T^2 kl + (1 - alpha) ce at T = 2, alpha = 0.5, every row
awk -F, 'NR > 1 { d = $3 - (2 * $9 + 0.5 * $10); if (d < -1e-5 || d > 1e-5) bad++ } END { exit bad > 0 }' "$TMP/sc.csv" ||
  fail "distill-tiny: a logged loss is not 0.5 * 4 * kl + 0.5 * ce"
# the student's files hold the student alone; they run without the teacher
grep -q 'teacher\.' "$TMP/sc.safetensors" && fail "distill-tiny: the student's weights hold teacher tensors"
grep -q 'teacher\.' "$TMP/si.safetensors" && fail "distill-tiny: PROG init wrote teacher tensors"
expect_status 0 "$TMP/sc" forward --weights "$TMP/sc.safetensors" --tokens tests/reference/fixtures/distill-ref/tokens.npy \
  --out "$TMP/y.npy"
# checkpointed at step 2 and resumed: the uninterrupted run's weights (the teacher reloaded)
expect_status 0 "$TMP/sc" train --data "$TMP/text.txt" --steps 4 --eval-every 2 --teacher-weights "$TMP/t.safetensors" \
  --checkpoint "$TMP/ck.safetensors" --stop-at 2 --out "$TMP/half.safetensors"
grep -q 'teacher\.' "$TMP/ck.safetensors" && fail "distill-tiny: the checkpoint holds teacher tensors"
expect_status 0 "$TMP/sc" train --data "$TMP/text.txt" --teacher-weights "$TMP/t.safetensors" --resume "$TMP/ck.safetensors" \
  --eval-every 2 --out "$TMP/resumed.safetensors"
cmp -s "$TMP/resumed.safetensors" "$TMP/sc.safetensors" || fail "distill-tiny: resumed weights differ from the uninterrupted run's"
# the lowered module as text (@teacher, frozen teacher.* parameters, the distill_ fields) builds the
# program the spec builds: the same gradients
expect_status 0 "$MODELC" dump --passes= tests/reference/specs/distill-ref.yaml
cp "$TMP/out" "$TMP/ref.mir"
expect_in "$TMP/ref.mir" "distill_temperature=2.0, distill_alpha=0.7"
expect_in "$TMP/ref.mir" "param @teacher.lm_head.weight : f32[32,16] init=normal(0.02) frozen"
expect_in "$TMP/ref.mir" "func @teacher(%tokens: i32[2,8]) -> f32[2,8,32] {"
R=tests/reference/fixtures/distill-ref
expect_status 0 "$MODELC" build --passes=autodiff,constfold,cse,fuse,dce,memplan "$TMP/ref.mir" -o "$TMP/rm"
expect_status 0 "$MODELC" build tests/reference/specs/distill-ref.yaml -o "$TMP/rs"
for p in rm rs; do
  expect_status 0 "$TMP/$p" grad --weights $R/weights.safetensors --teacher-weights $R/teacher.safetensors \
    --tokens $R/tokens.npy --targets $R/targets.npy --out "$TMP/g-$p.safetensors"
done
cmp -s "$TMP/g-rm.safetensors" "$TMP/g-rs.safetensors" || fail "distill-ref: the .mir's gradients differ from the spec's"
# mixed precision: the teacher's and the student's activations stored in 16 bits, the loss gradient
# the precision pass's seed (fp16: scaled); the loss within 2e-3 of the f32 program's
cp tests/reference/specs/distill-ref-teacher.yaml "$TMP/"
for pr in bf16 fp16; do
  sed "s/^train:/train:\n  precision: $pr/" tests/reference/specs/distill-ref.yaml > "$TMP/ref-$pr.yaml"
  expect_status 0 "$MODELC" build "$TMP/ref-$pr.yaml" -o "$TMP/ref-$pr"
  expect_status 0 "$TMP/ref-$pr" grad --weights $R/weights.safetensors --teacher-weights $R/teacher.safetensors \
    --tokens $R/tokens.npy --targets $R/targets.npy --out "$TMP/g-$pr.safetensors"
  awk '/^loss:/ { d = $2 - 1.9739505; if (d < 0) d = -d; exit !(d < 2e-3) }' "$TMP/out" ||
    fail "distill-ref in $pr: loss $(grep '^loss' "$TMP/out") is not within 2e-3 of 1.9739505"
done
finish
