#!/bin/bash
# tests/bench/ab.sh BASE_REF [ROUNDS]: what a change of the compiler or runtime costs, side by side.
#
# Builds modelc (Release) from the working tree into build-bench/ and from git revision BASE_REF
# (a temporary worktree under build-bench/ab/) and, with each, the programs of gpt-tiny
# (examples/gpt-tiny.yaml) and small (tests/bench/small.yaml). Then ROUNDS rounds (default 5),
# each running `PROG bench --runs 5` for both builds, both models and 1 and 2 threads, the
# order of base and new alternating per round (the machine is shared and noisy: both see the
# same conditions). Prints a Markdown table of the medians over the rounds of forward tokens/s,
# decode tokens/s and training-step seconds, with the ratio new/base (speed: > 1 is faster;
# step time: < 1 is faster). Raw outputs in build-bench/ab/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BASE=${1:?usage: tests/bench/ab.sh BASE_REF [ROUNDS]}
ROUNDS=${2:-5}
OUT=build-bench/ab
log() { echo "ab.sh: $*" >&2; }
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
rev=$(git rev-parse --verify "$BASE^{commit}")
if [ ! -d "$OUT/base-src" ] || [ "$(git -C "$OUT/base-src" rev-parse HEAD)" != "$rev" ]; then
  git worktree remove --force "$OUT/base-src" 2>/dev/null || rm -rf "$OUT/base-src"
  git worktree add --detach "$OUT/base-src" "$rev" >&2
fi
cmake -S "$OUT/base-src" -B "$OUT/base-build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$OUT/base-build" -j"$(nproc)" --target modelc >&2
for m in gpt-tiny:examples/gpt-tiny.yaml small:tests/bench/small.yaml; do
  name=${m%%:*} spec=${m#*:}
  log "building $name (new, base)"
  build-bench/modelc build "$spec" -o "$OUT/$name-new"
  "$OUT/base-build/modelc" build "$spec" -o "$OUT/$name-base"
done
rm -f "$OUT"/*.res
for r in $(seq 1 "$ROUNDS"); do
  order="new base"; [ $((r % 2)) = 0 ] && order="base new"
  for name in gpt-tiny small; do
    for t in 1 2; do
      for v in $order; do
        log "round $r: $name $v, $t threads"
        "$OUT/$name-$v" bench --runs 5 --threads "$t" > "$OUT/$name-$v-$t-$r.txt"
        awk -v k="$name $t $v" -F': ' '/^(forward_tokens_per_s|decode_tokens_per_s|train_step_seconds):/ {
          print k, $1, $2 }' "$OUT/$name-$v-$t-$r.txt" >> "$OUT/all.res"
      done
    done
  done
done
med() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
echo "| model | threads | metric | base ($BASE) | new | new/base |"
echo "|---|---|---|---|---|---|"
for name in gpt-tiny small; do
  for t in 1 2; do
    for k in forward_tokens_per_s decode_tokens_per_s train_step_seconds; do
      b=$(awk -v n="$name" -v t="$t" -v k="$k" '$1 == n && $2 == t && $3 == "base" && $4 == k { print $5 }' "$OUT/all.res" | med)
      w=$(awk -v n="$name" -v t="$t" -v k="$k" '$1 == n && $2 == t && $3 == "new" && $4 == k { print $5 }' "$OUT/all.res" | med)
      awk -v n="$name" -v t="$t" -v k="$k" -v b="$b" -v w="$w" 'BEGIN { printf "| %s | %s | %s | %g | %g | %.3f |\n", n, t, k, b, w, w / b }'
    done
  done
done
