#!/usr/bin/env bash
# The prune pass from the command line: `modelc stats` shows what structured pruning removes
# (parameters and FLOPs fall) and states the storage masked pruning chose and why; a spec's
# `passes:` and `train: prune:` entries are checked where they are written; a csr program refuses to
# train and says how to build one that does; a pruned program's info says what pruning left.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

# stats: gpt-tiny with half the MLP units: 842,496 -> 579,328 parameters (4 layers x (256 x 128 +
# 256 + 128 x 256) fewer), FLOPs per token 1,792,680 -> 1,266,344
expect_status 0 "$MODELC" stats --passes='prune<kind=neurons;sparsity=0.5>' examples/gpt-tiny.yaml
expect_in "$TMP/out" "579,328"
expect_in "$TMP/out" "1,266,344"
expect_in "$TMP/out" "weights shrunk (structured)"
expect_status 0 "$MODELC" stats --passes='prune<kind=magnitude;sparsity=0.9>,constfold,memplan' examples/gpt-tiny.yaml
expect_in "$TMP/out" "pruning: 16 weights magnitude 90%: 78,644 of 786,432 weights kept; storage: 16 csr, 0 dense masked"
expect_in "$TMP/out" "decode break-even measured here (85% for these matrices"
expect_status 0 "$MODELC" stats --passes='prune<kind=magnitude;sparsity=0.75>,constfold,memplan' examples/gpt-tiny.yaml
expect_in "$TMP/out" "storage: 0 csr, 16 dense masked"

# errors where they are written: the spec's passes: entry, the train: prune: schedule, --passes
sed 's/^  - autodiff .*/  - prune: {kind: nm, n: 4, m: 4}\n&/' examples/gpt-tiny.yaml > "$TMP/bad-nm.yaml"
expect_status 1 "$MODELC" check "$TMP/bad-nm.yaml"
line=$(grep -n 'prune: {kind: nm' "$TMP/bad-nm.yaml" | cut -d: -f1)
expect_in "$TMP/err" "bad-nm.yaml:$line:5: error: prune: kind=nm keeps n of every m weights: n=4 must be less than m=4"
sed 's/^  data: .*/  prune: {start: 500, end: 100}/' examples/gpt-tiny.yaml > "$TMP/bad-sched.yaml"
expect_status 1 "$MODELC" check "$TMP/bad-sched.yaml"
line=$(grep -n 'prune: {start' "$TMP/bad-sched.yaml" | cut -d: -f1)
expect_in "$TMP/err" "bad-sched.yaml:$line:"
expect_in "$TMP/err" "must not come before its 'start' (500)"
sed 's/^  data: .*/  prune: {start: 5}/' examples/gpt-tiny.yaml > "$TMP/no-end.yaml"
expect_status 1 "$MODELC" check "$TMP/no-end.yaml"
expect_in "$TMP/err" "the pruning schedule needs 'end'"
expect_status 1 "$MODELC" dump --passes='prune<kind=sideways>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:12: error: invalid value 'sideways' for option 'kind'"

# a csr program is for inference: train says how to get one that trains; info states the pruning
expect_status 0 "$MODELC" build --passes='prune<kind=magnitude;sparsity=0.9>,constfold,cse,fuse,dce,memplan' \
  examples/gpt-tiny.yaml -o "$TMP/csr"
expect_status 0 "$TMP/csr" info
expect_in "$TMP/out" "pruning:          0 masked dense, 16 csr (room for 78644 of 786432 weights"
expect_status 1 "$MODELC" build --passes='prune<kind=magnitude;sparsity=0.9;format=csr>,autodiff,memplan' \
  examples/gpt-tiny.yaml -o "$TMP/x"
expect_in "$TMP/err" "format=csr is for inference"
# the IR text of a pruned module round-trips and builds the same program
expect_status 0 "$MODELC" dump --passes='prune<kind=heads;heads=1;score=norm>,prune<kind=nm>' examples/gpt-tiny.yaml
cp "$TMP/out" "$TMP/p.mir"
expect_status 0 "$MODELC" dump "$TMP/p.mir"
cmp -s "$TMP/out" "$TMP/p.mir" || fail "a pruned module's IR does not round-trip"
finish
