# tests/bench/bench_lib.bash: the set-up the training benchmarks share (sourced, from the
# repository root). Each function says what it sets.
#
#   bench_modelc DIR        M = $MODELC if set, else DIR/modelc: a Release build of this checkout
#                           made or brought up to date in DIR by scripts/setup.sh (which installs
#                           any missing Debian package)
#   bench_corpus DIR        DATA = $DATA if set, else DIR/fortunes.txt, made by
#                           scripts/fortunes-corpus.sh when absent (the fortunes corpus)
#   bench_split DATA HELD [TRAIN]
#                           HELD = DATA's held-out tail as the trainer splits it (the last
#                           ceil(n/10) bytes), TRAIN (if given) the rest
#   bench_checkpoint DIR    CKPT = $CKPT if set, else DIR/tiny.safetensors: gpt-tiny trained 6000
#                           steps on DATA (lr 2e-3, seed 1, 2 threads) when absent; needs M, DATA

bench_modelc() {
  M=${MODELC:-}
  if [ -z "$M" ]; then
    M=$1/modelc
    scripts/setup.sh "$1" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null 2>&1
  fi
}

bench_corpus() {
  DATA=${DATA:-$1/fortunes.txt}
  [ -f "$DATA" ] || scripts/fortunes-corpus.sh "$DATA" 2>/dev/null
}

bench_split() {
  local n v
  n=$(wc -c < "$1")
  v=$((n / 10 + (n % 10 != 0)))
  tail -c "$v" "$1" > "$2"
  [ -z "${3:-}" ] || head -c $((n - v)) "$1" > "$3"
}

bench_checkpoint() {
  CKPT=${CKPT:-$1/tiny.safetensors}
  [ -f "$CKPT" ] && return
  echo "no checkpoint at $CKPT: training gpt-tiny for 6000 steps (lr 2e-3, seed 1) first" >&2
  "$M" build examples/gpt-tiny.yaml -o "$1/tiny-train"
  "$1/tiny-train" train --data "$DATA" --steps 6000 --lr 2e-3 --eval-every 0 --seed 1 --threads 2 --out "$CKPT"
}
