#!/bin/bash
# tests/bench/precision.sh: mixed-precision training (train: precision fp32 | bf16 | fp16, the
# precision pass) measured, from the repository root:
#
#     tests/bench/precision.sh [ROUNDS] [STEPS]    (default 5 rounds, 600 steps for the loss curves)
#
# For gpt-tiny (examples/gpt-tiny.yaml: per-block recompute, so the block inputs are what is
# stored) and small (tests/bench/small.yaml: checkpoint<store>, every activation the backward
# reads is stored), each built three times with `precision:` set in the spec's train: section:
#   memory   the planned training arena (PROG info) and the peak RSS of a 20-step run (/usr/bin/time)
#   speed    seconds per optimiser step of PROG train --data CORPUS --steps 20 --eval-every 0
#            (elapsed_s at step 20 - at step 5, over 15, from the CSV), ROUNDS interleaved rounds
#            (precision order rotated), median; next to it PyTorch's training step of the same model
#            in float32 and under torch.autocast(cpu, bfloat16) (tests/bench/torch_model.py train)
#   quality  gpt-tiny trained STEPS steps on the fortunes corpus from the same seed in each
#            precision, validation loss every STEPS/6 steps: the curves against fp32's
# The Markdown report goes to stdout and build-bench/precision/results.md; raw files next to it.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=${1:-5}
STEPS=${2:-600}
BUILD=build-bench
OUT=$BUILD/precision
PY=/usr/bin/python3
HERE=tests/bench
log() { echo "precision.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=2

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DMODELC_WERROR=OFF >/dev/null
cmake --build "$BUILD" -j2 >/dev/null
mkdir -p "$OUT" && rm -rf "${OUT:?}"/*
[ -x /usr/bin/time ] || { log "needs /usr/bin/time (apt-get install time)"; exit 1; }
scripts/fortunes-corpus.sh "$OUT/corpus.txt" 2>/dev/null

MODELS="gpt-tiny small"
PRECS="fp32 bf16 fp16"
spec_of() { case $1 in gpt-tiny) echo examples/gpt-tiny.yaml ;; small) echo "$HERE/small.yaml" ;; esac; }
for m in $MODELS; do
  for p in $PRECS; do
    if grep -q '^train:' "$(spec_of "$m")"; then
      sed "s/^train:/train:\n  precision: $p/" "$(spec_of "$m")" > "$OUT/$m-$p.yaml"
    else
      { cat "$(spec_of "$m")"; printf 'train:\n  precision: %s\n' "$p"; } > "$OUT/$m-$p.yaml"
    fi
    "$BUILD/modelc" build "$OUT/$m-$p.yaml" -o "$OUT/$m-$p"
    "$OUT/$m-$p" info > "$OUT/$m-$p.info"
  done
  "$OUT/$m-fp32" init --seed 1 --out "$OUT/$m.safetensors" >/dev/null
done

run_speed() {   # round model precision
  local f="$OUT/r$1.$2.$3"
  /usr/bin/time -f '%M' -o "$f.rss" "$OUT/$2-$3" train --data "$OUT/corpus.txt" --steps 20 --eval-every 0 --seed 1 \
    --out "$OUT/tmp.safetensors" --log "$f.csv" >/dev/null 2>&1
  log "round $1 $2 $3: $(tail -1 "$f.csv")"
}
run_torch() {   # round model fp32|bf16
  local f="$OUT/r$1.$2.torch-$3" ac=()
  [ "$3" = bf16 ] && ac=(--autocast bf16)
  "$PY" "$HERE/torch_model.py" train "$(spec_of "$2")" "$OUT/$2.safetensors" --runs 3 "${ac[@]}" > "$f"
  log "round $1 $2 torch $3: $(grep train_step_seconds "$f")"
}
ORDER=(fp32 bf16 fp16 torch-fp32 torch-bf16)
for r in $(seq 1 "$ROUNDS"); do
  for m in $MODELS; do
    for i in 0 1 2 3 4; do
      e=${ORDER[$(((i + r) % 5))]}
      case $e in torch-*) run_torch "$r" "$m" "${e#torch-}" ;; *) run_speed "$r" "$m" "$e" ;; esac
    done
  done
done

log "loss curves: gpt-tiny, $STEPS steps per precision"
for p in $PRECS; do
  "$OUT/gpt-tiny-$p" train --data "$OUT/corpus.txt" --steps "$STEPS" --eval-every $((STEPS / 6)) --seed 1 \
    --out "$OUT/curve-$p.safetensors" --log "$OUT/curve-$p.csv" > "$OUT/curve-$p.txt" 2>/dev/null
  log "curve $p: $(cat "$OUT/curve-$p.txt" | head -1)"
done

"$PY" - "$OUT" "$ROUNDS" "$STEPS" <<'PYEOF' | tee "$OUT/results.md"
import csv, glob, re, statistics, sys
out, rounds, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
models, precs = ["gpt-tiny", "small"], ["fp32", "bf16", "fp16"]

def step_seconds(path):
    rows = {int(r["step"]): float(r["elapsed_s"]) for r in csv.DictReader(open(path))}
    return (rows[20] - rows[5]) / 15

def info_arena(m, p):
    t = open(f"{out}/{m}-{p}.info").read()
    return int(re.search(r"train arena (\d+) bytes", t).group(1))

def med(vals):
    return statistics.median(vals) if vals else float("nan")

print(f"Command: `tests/bench/precision.sh {rounds} {steps}` (medians over {rounds} interleaved rounds)\n")
print("| model | precision | train arena (MiB) | vs fp32 | peak RSS (MiB) | s / step | vs fp32 | PyTorch s / step | ours vs PyTorch |")
print("|---|---|---|---|---|---|---|---|---|")
for m in models:
    base_a, base_t = info_arena(m, "fp32"), None
    tt = {k: med([float(re.search(r"train_step_seconds: ([0-9.]+)", open(f).read()).group(1))
                  for f in glob.glob(f"{out}/r*.{m}.torch-{k}")]) for k in ["fp32", "bf16"]}
    for p in precs:
        sec = med([step_seconds(f) for f in glob.glob(f"{out}/r*.{m}.{p}.csv")])
        rss = med([int(open(f).read().split()[-1]) for f in glob.glob(f"{out}/r*.{m}.{p}.rss")]) / 1024
        if p == "fp32":
            base_t = sec
        a = info_arena(m, p)
        peer = tt["bf16"] if p != "fp32" else tt["fp32"]
        peer_s = f"{peer:.4f} ({'autocast bf16' if p != 'fp32' else 'fp32'})"
        print(f"| {m} | {p} | {a / 2**20:.2f} | {a / base_a:.2f}x | {rss:.0f} | {sec:.4f} | {sec / base_t:.2f}x | "
              f"{peer_s} | {peer / sec:.2f}x |")
print()
print(f"Loss curves, gpt-tiny on the fortunes corpus, {steps} steps from the same seed (validation loss, nats/byte):\n")
curves = {}
for p in precs:
    curves[p] = {int(r["step"]): (float(r["loss"]), r["val_loss"]) for r in csv.DictReader(open(f"{out}/curve-{p}.csv"))}
evals = [s for s in sorted(curves["fp32"]) if curves["fp32"][s][1]]
print("| step | " + " | ".join(precs) + " | bf16 - fp32 | fp16 - fp32 |")
print("|---" * (len(precs) + 3) + "|")
worst = {p: 0.0 for p in precs}
for s in evals:
    v = {p: float(curves[p][s][1]) for p in precs}
    for p in precs:
        worst[p] = max(worst[p], abs(v[p] - v["fp32"]) / v["fp32"])
    print(f"| {s} | " + " | ".join(f"{v[p]:.4f}" for p in precs) + f" | {v['bf16'] - v['fp32']:+.4f} | {v['fp16'] - v['fp32']:+.4f} |")
train_tail = {p: statistics.mean(curves[p][s][0] for s in sorted(curves[p])[-50:]) for p in precs}
print()
print("Mean training loss over the last 50 steps: " + ", ".join(f"{p} {train_tail[p]:.4f}" for p in precs) +
      f". Largest relative validation-loss difference from fp32: bf16 {worst['bf16']:.2%}, fp16 {worst['fp16']:.2%}.")
PYEOF
