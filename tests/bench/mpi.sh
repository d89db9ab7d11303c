#!/bin/bash
# tests/bench/mpi.sh [ROUNDS] [STEPS]: data-parallel training over Open MPI against threads, side
# by side (issue 16, point 4; docs/benchmarks.md, "Data-parallel training").
#
# gpt-tiny (examples/gpt-tiny.yaml) trains STEPS steps (default 30) of the same global batch (8
# rows of its context of 128 tokens, two micro-batches of 4) as
#   1x1   one process, one thread
#   1x2   one process, two threads (the runtime's thread pool)
#   2x1   two MPI processes of one thread each (mpirun -np 2, a micro-batch each)
#   2x1z  the same with --shard-optimizer (ZeRO-1)
# ROUNDS rounds (default 3), the order rotating per round. For each run: the median step time over
# its steps (the CSV's tokens/s column; the first step left out), tokens/s, and for the MPI runs
# the time a step spends in MPI waits and collectives and the bytes rank 0 moved, from the
# program's own report. Prints a Markdown table of the medians over the rounds; every run's final
# weights must be byte-identical (checked). Raw outputs in build-bench/mpi/.
# Builds with BUILD/modelc (default build-bench, configured Release by scripts/setup.sh).
# Run it under the bench lock:  flock /tmp/modelc-bench.lock /tmp/dev/hush.sh tests/bench/mpi.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-3}
STEPS=${2:-30}
BUILD=${BUILD:-build-bench}
OUT=build-bench/mpi
mkdir -p "$OUT"
[ -x "$BUILD/modelc" ] || scripts/setup.sh "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
"$BUILD/modelc" build examples/gpt-tiny.yaml -o "$OUT/g"
"$BUILD/modelc" build --mpi examples/gpt-tiny.yaml -o "$OUT/gm"
cat README.md docs/*.md > "$OUT/data.txt"
T=$("$OUT/g" info | sed -n 's/.*context \([0-9]*\),.*/\1/p')
A=(train --data "$OUT/data.txt" --steps "$STEPS" --batch 8 --micro-batch 4 --seed 1 --eval-every 0)

run() { # NAME: one training run, its outputs in $OUT/NAME.*
  local name=$1 cmd
  case $name in
    1x1) cmd=("$OUT/g" "${A[@]}" --threads 1) ;;
    1x2) cmd=("$OUT/g" "${A[@]}" --threads 2) ;;
    2x1) cmd=(mpirun --oversubscribe -np 2 --bind-to none "$OUT/gm" "${A[@]}" --threads 1) ;;
    2x1z) cmd=(mpirun --oversubscribe -np 2 --bind-to none "$OUT/gm" "${A[@]}" --threads 1 --shard-optimizer) ;;
  esac
  timeout 600 "${cmd[@]}" --out "$OUT/$name.safetensors" >"$OUT/$name.out" 2>"$OUT/$name.err"
}
# median of the numbers on stdin
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

names=(1x1 1x2 2x1 2x1z)
rm -f "$OUT"/*.res "$OUT"/*.safetensors
for r in $(seq 1 "$ROUNDS"); do
  for i in 0 1 2 3; do
    name=${names[$(((i + r) % 4))]}
    echo "mpi.sh: round $r: $name" >&2
    run "$name"
    cmp -s "$OUT/1x1.safetensors" "$OUT/$name.safetensors" 2>/dev/null || [ ! -e "$OUT/1x1.safetensors" ] ||
      { echo "mpi.sh: $name's weights differ from 1x1's" >&2; exit 1; }
    # step seconds: tokens per step over the CSV's tokens/s, median over steps 2..STEPS
    tps=$(tail -n +3 "$OUT/$name.csv" | cut -d, -f6 | median)
    comm=$(sed -n 's/.*MPI: \([0-9.]*\) ms a step.*/\1/p' "$OUT/$name.err")
    moved=$(sed -n 's/.*rank 0 sent \([0-9]*\) bytes and received \([0-9]*\).*/\1 \2/p' "$OUT/$name.err")
    echo "$tps ${comm:-0} ${moved:-0 0}" >> "$OUT/$name.res"
  done
done
grad=$(sed -n 's/.*(the gradients: \([0-9]*\) bytes).*/\1/p' "$OUT/2x1.err")
echo "| run | step (ms) | tokens/s | MPI waits (ms/step) | rank 0 sent / received per step (MB) |"
echo "|---|---:|---:|---:|---:|"
for name in "${names[@]}"; do
  tps=$(cut -d' ' -f1 "$OUT/$name.res" | median)
  comm=$(cut -d' ' -f2 "$OUT/$name.res" | median)
  sent=$(cut -d' ' -f3 "$OUT/$name.res" | median)
  recv=$(cut -d' ' -f4 "$OUT/$name.res" | median)
  awk -v n="$name" -v t="$tps" -v c="$comm" -v s="$sent" -v rv="$recv" -v T="$T" 'BEGIN {
    printf "| %s | %.1f | %.0f | %s | %s |\n", n, 8 * T / t * 1e3, t, (c > 0 ? sprintf("%.1f", c) : "-"),
      (s > 0 ? sprintf("%.2f / %.2f", s / 1e6, rv / 1e6) : "-") }'
done
echo
echo "gradient bytes (4 x parameters, padded): $grad; rounds $ROUNDS, steps $STEPS, batch 8 x $T tokens"
