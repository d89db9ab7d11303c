#!/bin/bash
# tests/bench/bf16_greedy.sh [STEPS]: bf16 inference on a trained model (issue 10, point 2).
#
# Trains gpt-tiny (examples/gpt-tiny.yaml) for STEPS steps (default 600) on the fortunes corpus
# (scripts/fortunes-corpus.sh), builds its inference program twice, in f32 and with
# --precision=bf16, and compares them three ways:
#   - for each of 8 prompts, 200 tokens generated greedily (--temperature 0) and 200 sampled
#     (--temperature 0.8, the same --seed for both: the same uniform draws), with how many tokens
#     agree before the first difference and how many are equal at equal positions;
#   - next-token agreement under teacher forcing: the argmax of both programs' logits (forward)
#     on 4 x 128 bytes of held-out text (numpy, /usr/bin/python3);
#   - the mean loss and bits per byte of both (eval) on the whole corpus.
# Outputs in build-bench/bf16/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
STEPS=${1:-600}
OUT=build-bench/bf16
mkdir -p "$OUT"
scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null
M=build-bench/modelc
[ -s "$OUT/corpus.txt" ] || scripts/fortunes-corpus.sh "$OUT/corpus.txt"
$M build examples/gpt-tiny.yaml -o "$OUT/train"
if [ ! -s "$OUT/w$STEPS.safetensors" ]; then
  "$OUT/train" train --data "$OUT/corpus.txt" --steps "$STEPS" --eval-every 0 --out "$OUT/w$STEPS.safetensors" >&2
fi
W=$OUT/w$STEPS.safetensors
$M build --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o "$OUT/f32"
$M build --precision=bf16 --passes=constfold,cse,fuse,dce examples/gpt-tiny.yaml -o "$OUT/bf16"
prompts=("The " "What is " "A man who " "Love is " "In the beginning " "You will " "Never " "It is better to ")
# agree FILE_A FILE_B: "k e c" (tokens equal before the first difference, equal at equal positions, all)
agree() {
  od -An -v -tu1 "$1" | tr -s ' ' '\n' | grep . > "$OUT/a.col" || true
  od -An -v -tu1 "$2" | tr -s ' ' '\n' | grep . > "$OUT/b.col" || true
  paste "$OUT/a.col" "$OUT/b.col" | awk '{ c++; if ($1 == $2) e++; else if (!d) { d = 1; k = c - 1 } }
    END { if (!d) k = c; print k + 0, e + 0, c + 0 }'
}
for mode in greedy sampled; do
  args=(--temperature 0); [ $mode = sampled ] && args=(--temperature 0.8 --seed 7)
  tot=0 same=0 prefix=0
  echo
  echo "$mode, 200 tokens per prompt:"
  echo
  echo "| prompt | equal before the first difference | equal at equal positions | f32's first 40 bytes |"
  echo "|---|---:|---:|---|"
  for p in "${prompts[@]}"; do
    "$OUT/f32" generate --weights "$W" --prompt "$p" -n 200 "${args[@]}" > "$OUT/a.txt"
    "$OUT/bf16" generate --weights "$W" --prompt "$p" -n 200 "${args[@]}" > "$OUT/b.txt"
    read -r k e c < <(agree "$OUT/a.txt" "$OUT/b.txt")
    echo "| \`$p\` | $k of $c | $e of $c | $(head -c 40 "$OUT/a.txt" | tr '\n|' '  ') |"
    tot=$((tot + c)) same=$((same + e)) prefix=$((prefix + k))
  done
  echo "| all | $prefix of $tot | $same of $tot | |"
done
# teacher forcing on held-out text (the corpus's last 10 %)
/usr/bin/python3 - "$OUT" <<'PY'
import sys, numpy as np
out = sys.argv[1]
data = open(out + "/corpus.txt", "rb").read()
tail = data[len(data) - len(data) // 10:]
rows = [list(tail[i * 1000:i * 1000 + 128]) for i in range(4)]
np.save(out + "/tf_tokens.npy", np.array(rows, dtype=np.int32))
PY
for v in f32 bf16; do "$OUT/$v" forward --weights "$W" --tokens "$OUT/tf_tokens.npy" --out "$OUT/tf_$v.npy"; done
/usr/bin/python3 - "$OUT" <<'PY'
import sys, numpy as np
out = sys.argv[1]
a, b = np.load(out + "/tf_f32.npy"), np.load(out + "/tf_bf16.npy")
t = np.load(out + "/tf_tokens.npy")
same = (a.argmax(-1) == b.argmax(-1)).mean()
ra = (a.argmax(-1)[:, :-1] == t[:, 1:]).mean(); rb = (b.argmax(-1)[:, :-1] == t[:, 1:]).mean()
print("\nteacher forcing, 4 x 128 held-out bytes: argmax equal at %.2f %% of positions; "
      "next byte right: f32 %.2f %%, bf16 %.2f %%; logits RMS difference %.3g of the RMS logit"
      % (100 * same, 100 * ra, 100 * rb, np.sqrt(((a - b) ** 2).mean() / (a ** 2).mean())))
PY
echo
for v in f32 bf16; do
  printf '%s eval: ' "$v"; "$OUT/$v" eval --weights "$W" --data "$OUT/corpus.txt" | tr '\n' ' '; echo
done
