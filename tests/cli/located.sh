#!/usr/bin/env bash
# Spec-caused pass errors are located. A pass option out of its range, a pass that runs once listed
# twice, or a rule between options broken is refused by `modelc check` at the spec's line:col with
# the source line and a caret, and `build` refuses it with the same line, before anything runs;
# the --passes form names the pass and the option at the flag's column. A pass that fails while
# it runs (checkpoint before autodiff) is reported at its entry in the spec. An unclosed '[' at the
# end of the input adds a note at the bracket.
set -euo pipefail
source "$(dirname "$0")/lib.bash"

cat > "$TMP/maxops.yaml" <<'YAML'
model: {vocab: 16, context: 8, dim: 8}
layers: [embedding, lm_head]
passes:
  - fuse: {max-ops: -1}
YAML
msg="$TMP/maxops.yaml:4:21: error: option 'max-ops' of pass 'fuse' must be in [1, 1000000], not -1"
expect_status 1 "$MODELC" check "$TMP/maxops.yaml"
expect_in "$TMP/err" "$msg"
expect_in "$TMP/err" "  - fuse: {max-ops: -1}"
expect_in "$TMP/err" "                    ^"
expect_status 1 "$MODELC" build "$TMP/maxops.yaml" -o "$TMP/maxops"
expect_in "$TMP/err" "$msg"
[ ! -e "$TMP/maxops" ] || fail "maxops was built"

# the --passes form: no file, so the flag's text with the pass and the option named
expect_status 1 "$MODELC" check --passes='fuse<max-ops=-1>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:14: error: option 'max-ops' of pass 'fuse' must be in [1, 1000000], not -1"
expect_in "$TMP/err" "fuse<max-ops=-1>"
expect_status 1 "$MODELC" check --passes='autodiff,store<dtype=f8>' examples/gpt-tiny.yaml
expect_in "$TMP/err" "--passes:1:22: error: invalid value 'f8' for option 'dtype' of pass 'store'"

# a pass that runs once, listed twice: at the second, with a note at the first
cat > "$TMP/twice.yaml" <<'YAML'
model: {vocab: 16, context: 8, dim: 8}
layers: [embedding, lm_head]
passes:
  - autodiff
  - checkpoint: {every: 2}
  - dce
  - dce
  - checkpoint<sqrt>
YAML
for verb in check build; do
  expect_status 1 "$MODELC" $verb "$TMP/twice.yaml" -o "$TMP/twice"
  expect_in "$TMP/err" "$TMP/twice.yaml:8:5: error: pass 'checkpoint' is listed twice; it runs once in a pipeline"
  expect_in "$TMP/err" "$TMP/twice.yaml:5:5: note: 'checkpoint' is first listed here"
done
[ ! -e "$TMP/twice" ] || fail "twice was built"
# dce twice (and the other repeatable passes) stays accepted
expect_status 0 "$MODELC" check --passes='constfold,cse,fuse,dce,cse,dce,memplan' examples/gpt-tiny.yaml

# a failure while the pass runs is located at its entry in the spec
cat > "$TMP/order.yaml" <<'YAML'
model: {vocab: 16, context: 8, dim: 8}
layers: [embedding, lm_head]
passes:
  - checkpoint: {every: 2}
  - autodiff
YAML
expect_status 0 "$MODELC" check "$TMP/order.yaml"
expect_status 1 "$MODELC" build "$TMP/order.yaml" -o "$TMP/order"
expect_in "$TMP/err" "$TMP/order.yaml:4:5: error: checkpoint: no training function: run autodiff first"
expect_in "$TMP/err" "  - checkpoint: {every: 2}"

# an unclosed '[' at the end of the input: the error at the end, a note at the bracket
printf 'model: {vocab: 16, context: [8, 9\n' > "$TMP/open.yaml"
expect_status 1 "$MODELC" check "$TMP/open.yaml"
expect_in "$TMP/err" "$TMP/open.yaml:2:1: error: invalid YAML: did not find expected ',' or ']' before the end of the input"
expect_in "$TMP/err" "$TMP/open.yaml:1:29: note: to match this '['"
expect_in "$TMP/err" "                            ^"

finish
