#!/bin/bash
# tests/bench/run.sh: the benchmark of DESIGN.md section 5, in one command, from the repository root:
#
#     tests/bench/run.sh [ROUNDS]          (default 5 rounds; BENCH_RUNS=N timed runs per process, default 3)
#
# For gpt-tiny (examples/gpt-tiny.yaml) and small (tests/bench/small.yaml) it compares, on the same
# weights (PROG init --seed 1) and the same input shapes:
#   ours     the program modelc builds (PROG bench --weights W, OPENBLAS_NUM_THREADS=2): forward,
#            decode and (both specs have autodiff in their passes) one training step
#   torch    PyTorch eager (Debian's python3-torch via /usr/bin/python3, torch.set_num_threads(2),
#            OMP_WAIT_POLICY=PASSIVE): tests/bench/torch_model.py bench (forward, decode)
#   ttrain   the same PyTorch module, one training step: forward, cross-entropy, backward,
#            torch.optim.AdamW step (tests/bench/torch_model.py train), same batch and context
#   ort      ONNX Runtime (npm onnxruntime-node, 2 intra-op threads) on torch.onnx.export's graph:
#            tests/bench/ort_bench.js
# plus OpenBLAS's own sgemm and the memory bandwidth (tests/bench/sgemm_peak.c), at 2 threads, and
# for gpt-tiny the micro-batch table: PROG train --data CORPUS --steps 20 --eval-every 0 --batch 4
# --micro-batch M for M in 1 2 4 (seconds per step from the CSV's elapsed_s over steps 6..20, peak
# RSS from /usr/bin/time -f %M); CORPUS is scripts/fortunes-corpus.sh's (Debian's fortunes).
#
# Steps: build modelc (Release, build-bench/), install onnxruntime-node into tests/bench/node_modules
# if missing, build the two programs, initialise weights, check that our logits (and ORT's) match
# PyTorch's (max|diff|/max|ref| < 1e-4: the same computation), then ROUNDS rounds, each running every
# engine on every model once (engine order rotated per round: the machine is shared and noisy, so
# the engines see the same conditions), each process reporting the median of BENCH_RUNS timed runs.
# Figures are the medians over the rounds. Raw outputs go to build-bench/bench/; the Markdown report
# is printed on stdout (progress on stderr) and saved as build-bench/bench/results.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-5}
RUNS=${BENCH_RUNS:-3}
THREADS=2
BUILD=build-bench
OUT=$BUILD/bench
PY=/usr/bin/python3
HERE=tests/bench
log() { echo "run.sh: $*" >&2; }

# 1. modelc, Release. MODELC_WERROR=OFF: GCC 12 at -O3 reports a false -Wstringop-overread in
#    compiler/frontend/lower.c, which -Werror turns into a build failure.
log "building modelc (Release) in $BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j2 >/dev/null
mkdir -p "$OUT/raw"
rm -f "$OUT"/raw/*

# 2. onnxruntime-node
if [ ! -d "$HERE/node_modules/onnxruntime-node" ]; then
  log "installing onnxruntime-node into $HERE/node_modules"
  (cd "$HERE" && ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund onnxruntime-node >&2)
fi

# 2b. /usr/bin/time and the fortunes corpus (micro-batch table)
apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get install -y "$@" >&2; else sudo apt-get install -y "$@" >&2; fi
}
[ -x /usr/bin/time ] || { log "installing time"; apt_install time; }
[ -d /usr/share/games/fortunes ] || { log "installing fortunes"; apt_install fortunes; }
scripts/fortunes-corpus.sh "$OUT/corpus.txt" 2>/dev/null

# 3. sgemm / bandwidth probe
cc -O2 -march=native -Wall -Wextra "$HERE/sgemm_peak.c" -o "$OUT/sgemm_peak" -lopenblas -lpthread

export OMP_WAIT_POLICY=PASSIVE
export OPENBLAS_NUM_THREADS=$THREADS

# 4. programs, weights, correctness check, ONNX export
MODELS="gpt-tiny small"
spec_of() { case $1 in gpt-tiny) echo examples/gpt-tiny.yaml ;; small) echo "$HERE/small.yaml" ;; esac; }
for m in $MODELS; do
  spec=$(spec_of "$m")
  log "$m: modelc build $spec"
  "$BUILD/modelc" build "$spec" -o "$OUT/$m"
  "$OUT/$m" init --seed 1 --out "$OUT/$m.safetensors" >/dev/null
  "$OUT/$m" info > "$OUT/$m.info"
  read -r B T V < <("$PY" -c "import yaml; m = yaml.safe_load(open('$spec'))['model']; print(m['batch'], m['context'], m['vocab'])")
  "$PY" -c "
import numpy as np
ids = np.random.RandomState(7).randint(0, $V, size=($B, $T)).astype(np.int32)
np.save('$OUT/$m.tokens.npy', ids)
ids.astype('<i8').tofile('$OUT/$m.tokens.i64')"
  "$OUT/$m" forward --weights "$OUT/$m.safetensors" --tokens "$OUT/$m.tokens.npy" --out "$OUT/$m.ours.npy"
  log "$m: torch.onnx.export"
  "$PY" "$HERE/torch_model.py" export "$spec" "$OUT/$m.safetensors" "$OUT/$m.onnx" 2>"$OUT/$m.export.log"
  node "$HERE/ort_bench.js" "$OUT/$m.onnx" "$B" "$T" "$V" --runs 1 --threads $THREADS \
    --check "$OUT/$m.tokens.i64" "$OUT/$m.ort.f32" >/dev/null
  log "$m: checking logits against PyTorch"
  "$PY" "$HERE/torch_model.py" check "$spec" "$OUT/$m.safetensors" "$OUT/$m.tokens.npy" "$OUT/$m.ours.npy" \
    "$OUT/$m.ort.f32" > "$OUT/$m.check"
  cat "$OUT/$m.check" >&2
  grep -q '^check: ok' "$OUT/$m.check" || { log "$m: logits disagree, not benchmarking"; exit 1; }
  "$PY" "$HERE/torch_model.py" bytes "$spec" "$OUT/$m.safetensors" > "$OUT/$m.bytes"
  echo "$B $T $V" > "$OUT/$m.shape"
done

# 5. interleaved rounds
run_engine() {   # round model engine
  local r=$1 m=$2 e=$3 spec f
  spec=$(spec_of "$m")
  f="$OUT/raw/r$r.$m.$e"
  read -r B T V < "$OUT/$m.shape"
  case $e in
    ours) "$OUT/$m" bench --weights "$OUT/$m.safetensors" --runs "$RUNS" > "$f" ;;
    torch) "$PY" "$HERE/torch_model.py" bench "$spec" "$OUT/$m.safetensors" --runs "$RUNS" > "$f" ;;
    ttrain) "$PY" "$HERE/torch_model.py" train "$spec" "$OUT/$m.safetensors" --runs "$RUNS" > "$f" ;;
    ort) node "$HERE/ort_bench.js" "$OUT/$m.onnx" "$B" "$T" "$V" --runs "$RUNS" --threads $THREADS > "$f" ;;
  esac
  log "round $r $m $e: $(grep -E '^(forward_tokens_per_s|decode_tokens_per_s|train_step_seconds)' "$f" | tr '\n' ' ')"
}
run_micro() {    # round M: gpt-tiny, 20 optimiser steps of batch 4 in micro-batches of M
  local r=$1 mb=$2 f="$OUT/raw/r$1.mb$2"
  /usr/bin/time -f 'peak_rss_kib: %M' -o "$f.time" "$OUT/gpt-tiny" train --data "$OUT/corpus.txt" --steps 20 \
    --eval-every 0 --batch 4 --micro-batch "$mb" --out "$OUT/mb.safetensors" --log "$f.csv" >/dev/null 2>&1
  log "round $r gpt-tiny micro-batch $mb: $(tail -1 "$f.csv") $(cat "$f.time")"
}
ENGINES=(ours torch ort ttrain)
MICRO=(1 2 4)
for r in $(seq 1 "$ROUNDS"); do
  "$OUT/sgemm_peak" 1024 $THREADS > "$OUT/raw/r$r.sgemm"
  log "round $r sgemm: $(grep -E '^(sgemm_gflops_median|mem_read_gbs)' "$OUT/raw/r$r.sgemm" | tr '\n' ' ')"
  for m in $MODELS; do
    for i in 0 1 2 3; do
      run_engine "$r" "$m" "${ENGINES[$(((i + r) % 4))]}"
    done
  done
  for i in 0 1 2; do
    run_micro "$r" "${MICRO[$(((i + r) % 3))]}"
  done
done

# 6. report
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "nproc: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
  echo "command: tests/bench/run.sh $ROUNDS (BENCH_RUNS=$RUNS)"
  echo "torch: $("$PY" -c 'import torch; print(torch.__version__)')"
  echo "node: $(node --version)"
} > "$OUT/machine"
"$PY" "$HERE/summarise.py" "$OUT" $MODELS | tee "$OUT/results.md"
