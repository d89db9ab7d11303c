#!/bin/bash
# tests/bench/llama_decode.sh: decode tokens/s of imported llama2.c models against PyTorch eager on
# the same weights, and the KV-cache bytes of grouped-query attention (issue 15, point 5). From the
# repository root:
#
#     tests/bench/llama_decode.sh [MODEL...]      MODEL: stories260K s15m s15m-kv3 s15m-kv2 (default all)
#     tests/bench/llama_decode.sh report          the tables of what has been measured
#     tests/bench/llama_decode.sh gqa [ROUNDS]    ours only, s15m and s15m-kv2 alternating (below)
#
# The models:
#   stories260K  llama2.c's trained stories260K (dim 64, hidden 172, 5 layers, 8 heads, 4 KV heads,
#                vocab 512, context 512), read from $STORIES260K (default ../shared/models/
#                stories260K.bin beside the repository); skipped with a message when it is absent
#   s15m         the shape of llama2.c's stories15M: dim 288, hidden 768, 6 layers, 6 heads, 6 KV
#                heads (multi-head), vocab 32000, context 256, shared classifier; random weights
#                written by tests/bench/torch_llama.py write in llama2.c's legacy version-0 layout
#   s15m-kv3, s15m-kv2   the same with grouped-query attention: 3 and 2 KV heads
# Each .bin is imported (`modelc import BIN -o DIR`) and built (`modelc build DIR/model.yaml`, the
# importer's passes), then:
#   1. KV bytes: `PROG info`'s state bytes (the KV caches, batch 1) against 2 x layers x context x
#      kv_heads x head_dim x 4 (k and v, f32); a mismatch stops the script.
#   2. Same computation: `PROG generate --prompt-tokens 1 -n CHECK --temperature 0` (greedy from
#      BOS) and torch_llama.py greedy (an independent PyTorch Llama with a KV cache reading the same
#      .bin) must choose the same CHECK (8) tokens, with logits within 1e-4 of PyTorch's
#      (max|diff| / max|ref|); a mismatch stops the script before anything is timed.
#   3. Decode at 1 and 2 threads (THREADS, default "1 2"): ours `PROG bench --weights W --threads N
#      --runs RUNS -n K` (a 1-token prefill, then K tokens one at a time with the KV cache, K =
#      context - 1: every position of the cache; 3 untimed warm-up sequences, the median of RUNS),
#      PyTorch `torch_llama.py bench` timing the same sequence the same way
#      (torch.set_num_threads(N) and OPENBLAS_NUM_THREADS=N: Debian's torch calls OpenBLAS for its
#      matrix-vector products and does not set OpenBLAS's threads itself), in f32 and under
#      torch.autocast("cpu", bfloat16); then ours and PyTorch f32 again with OPENBLAS_CORETYPE=
#      CORETYPE (default SkylakeX on an AVX-512 CPU, else Haswell): OpenBLAS 0.3.21 does not know
#      this machine's CPU and runs its Prescott (SSE3) kernels, which PyTorch's sgemv then uses
#      and which makes our runtime choose oneDNN for f32 (`PROG info`, "gemm"); forcing the core
#      type gives both engines OpenBLAS's AVX-512 kernels. All one after the other in one run;
#      each (model, thread count) writes its row to $BUILD/llama/MODEL/row.N, and the report
#      gathers every row measured so far (`llama_decode.sh report` prints it again).
#      TIMED=0 skips this step (KV bytes and the greedy check only: nothing timed, no lock).
# RUNS (default 5) timed sequences per process. Run it under the timing lock, not niced, one
# stories15M-sized model and thread count per locked run (2-3 minutes each), e.g.
#     flock /tmp/modelc-bench.lock /tmp/dev/hush.sh env THREADS=1 tests/bench/llama_decode.sh s15m
# BUILD (default build-bench, a Release build made here if missing) names the build folder. Raw
# outputs go to $BUILD/llama/; the Markdown report to stdout and $BUILD/llama/report.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build-bench}
RUNS=${RUNS:-5}
CHECK=8
OUT=$BUILD/llama
PY=/usr/bin/python3
HERE=tests/bench
STORIES260K=${STORIES260K:-$(dirname "$ROOT")/shared/models/stories260K.bin}
MODELS=${*:-stories260K s15m s15m-kv3 s15m-kv2}
[ "$MODELS" = report ] && MODELS="" TIMED=0
GQA_ROUNDS=0
if [ "${1:-}" = gqa ]; then GQA_ROUNDS=${2:-3} MODELS="s15m s15m-kv2" TIMED=0; fi
THREADS=${THREADS:-1 2}
CORETYPE=${CORETYPE:-$(grep -qw avx512f /proc/cpuinfo && echo SkylakeX || echo Haswell)}
log() { echo "llama_decode.sh: $*" >&2; }
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1

source tests/bench/bench_lib.bash
bench_modelc "$BUILD"
MODELC=$M
mkdir -p "$OUT"
key() { awk -v k="$1:" '$1 == k { print $2 }' "$2"; }
ratio() { awk -v o="$1" -v t="$2" 'BEGIN { printf "%.2f", o / t }'; }

for m in $MODELS; do
  case $m in
    stories260K)
      if [ ! -f "$STORIES260K" ]; then
        log "skipping stories260K: $STORIES260K is absent (set STORIES260K=PATH to llama2.c's stories260K.bin)"
        continue
      fi
      bin=$STORIES260K ;;
    s15m | s15m-kv3 | s15m-kv2)
      kvh=6
      [ "$m" = s15m-kv3 ] && kvh=3
      [ "$m" = s15m-kv2 ] && kvh=2
      bin=$OUT/$m.bin
      [ -f "$bin" ] || "$PY" "$HERE/torch_llama.py" write "$bin" --dim 288 --hidden 768 --layers 6 --heads 6 \
        --kv-heads "$kvh" --vocab 32000 --seq 256 --seed 1 ;;
    *) echo "llama_decode.sh: unknown model '$m' (stories260K, s15m, s15m-kv3, s15m-kv2)" >&2; exit 1 ;;
  esac
  d=$OUT/$m
  log "$m: modelc import $bin, build"
  "$MODELC" import "$bin" -o "$d" >/dev/null
  "$MODELC" build "$d/model.yaml" -o "$d/prog"
  "$d/prog" info > "$d/info"
  read -r C F L H G V T < <("$PY" -c "import struct; h = struct.unpack('<7i', open('$bin', 'rb').read(28)); print(*h[:5], abs(h[5]), h[6])")
  hd=$((C / H))
  state=$(awk '/^state bytes:/ { print $3 }' "$d/info")
  formula=$((2 * L * T * G * hd * 4))
  [ "$state" = "$formula" ] || { log "$m: PROG info's state bytes $state differ from 2 x $L x $T x $G x $hd x 4 = $formula"; exit 1; }
  params=$(awk '/^parameters:/ { print $2 }' "$d/info")
  echo "| $m | $L | $T | $H | $G | $hd | $state | 2 x $L x $T x $G x $hd x 4 = $formula | $(awk -v g="$G" -v h="$H" 'BEGIN { printf "%.3f", g / h }') |" > "$d/kvrow"

  # 2. the same greedy tokens and logits
  "$d/prog" generate --weights "$d/model.safetensors" --prompt-tokens 1 -n $CHECK --temperature 0 \
    --tokens-out "$d/ours-tokens.npy" --logits-out "$d/ours-logits.npy" >/dev/null
  "$PY" "$HERE/torch_llama.py" greedy "$bin" $CHECK "$d/torch-logits.npy" > "$d/torch-greedy"
  "$PY" - "$d" <<'EOF' >&2
import sys
import numpy as np
d = sys.argv[1]
ours = np.load(d + "/ours-tokens.npy").tolist()
ref = [int(t) for t in open(d + "/torch-greedy").read().split(":")[1].split(",")]
lo, lr = np.load(d + "/ours-logits.npy"), np.load(d + "/torch-logits.npy")
err = float(np.abs(lo - lr).max() / np.abs(lr).max())
print(f"llama_decode.sh: {d}: greedy ours {ours}, PyTorch {ref}; logits max|diff|/max|ref| {err:.2e}")
if ours != ref or err > 1e-4:
    sys.exit(f"llama_decode.sh: {d}: ours and PyTorch differ: not the same computation, nothing timed")
EOF

  # 3. decode, side by side
  [ "${TIMED:-1}" = 1 ] || continue
  K=$((T - 1))
  for n in $THREADS; do
    log "$m: decode $K tokens, $n thread(s): ours, PyTorch f32, PyTorch autocast bf16; OPENBLAS_CORETYPE=$CORETYPE: ours, PyTorch f32"
    "$d/prog" bench --weights "$d/model.safetensors" --threads $n --runs "$RUNS" -n $K > "$d/ours.$n" 2>&1
    OPENBLAS_NUM_THREADS=$n "$PY" "$HERE/torch_llama.py" bench "$bin" --threads $n --tokens $K --runs "$RUNS" > "$d/torch.$n"
    OPENBLAS_NUM_THREADS=$n "$PY" "$HERE/torch_llama.py" bench "$bin" --threads $n --tokens $K --runs "$RUNS" --autocast bf16 > "$d/torch16.$n"
    OPENBLAS_CORETYPE=$CORETYPE "$d/prog" bench --weights "$d/model.safetensors" --threads $n --runs "$RUNS" -n $K > "$d/oursct.$n" 2>&1
    OPENBLAS_CORETYPE=$CORETYPE OPENBLAS_NUM_THREADS=$n "$PY" "$HERE/torch_llama.py" bench "$bin" --threads $n --tokens $K --runs "$RUNS" > "$d/torchct.$n"
    o=$(key decode_tokens_per_s "$d/ours.$n") t=$(key decode_tokens_per_s "$d/torch.$n") t16=$(key decode_tokens_per_s "$d/torch16.$n")
    oc=$(key decode_tokens_per_s "$d/oursct.$n") tc=$(key decode_tokens_per_s "$d/torchct.$n")
    tb=$(printf '%s\n' "$t" "$t16" "$tc" | sort -g | tail -1)
    echo "| $m | $params | $H / $G | $n | $K | $o | $t | $(ratio "$o" "$t") | $t16 | $(ratio "$o" "$t16") | $oc | $tc | $(ratio "$oc" "$tc") | $(ratio "$o" "$tb") | $(key decode_spread "$d/torch.$n"); $(key decode_spread "$d/torch16.$n"); $(key decode_spread "$d/torchct.$n") |" > "$d/row.$n"
    sed -n 's/^gemm: *//p' "$d/ours.$n" > "$OUT/gemm"
    sed -n 's/^gemm: *//p' "$d/oursct.$n" > "$OUT/gemm-ct"
  done
done

# gqa [ROUNDS]: GQA's effect on our decode alone: the s15m and s15m-kv2 programs (above: imported,
# built, checked) alternate in ROUNDS rounds (default 3) at each thread count, so both see the same
# machine (between runs minutes apart this shared machine's speed has varied by 2x and more)
if [ "$GQA_ROUNDS" -gt 0 ]; then
  K=255
  for n in $THREADS; do
    for r in $(seq "$GQA_ROUNDS"); do
      for m in s15m s15m-kv2; do
        "$OUT/$m/prog" bench --weights "$OUT/$m/model.safetensors" --threads $n --runs "$RUNS" -n $K > "$OUT/$m/gqa.$n.$r" 2>&1
        log "gqa: $m, $n thread(s), round $r: $(key decode_tokens_per_s "$OUT/$m/gqa.$n.$r") tokens/s"
      done
    done
    med() { for r in $(seq "$GQA_ROUNDS"); do key decode_tokens_per_s "$OUT/$1/gqa.$n.$r"; done | sort -g | awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
    all() { for r in $(seq "$GQA_ROUNDS"); do key decode_tokens_per_s "$OUT/$1/gqa.$n.$r"; done | paste -sd ' ' | sed 's/ /, /g'; }
    a=$(med s15m) b=$(med s15m-kv2)
    echo "| $n | $a ($(all s15m)) | $b ($(all s15m-kv2)) | $(ratio "$b" "$a") |" > "$OUT/gqa-row.$n"
  done
fi

# the report: every row measured so far in $OUT (each model and thread count may come from its own run)
{
  rows=$(for m in stories260K s15m s15m-kv3 s15m-kv2; do cat "$OUT/$m"/row.* 2>/dev/null || true; done)
  if [ -n "$rows" ]; then
    echo "Decode tokens/s (batch 1, KV cache, a 1-token prefill then K = context - 1 tokens; medians of $RUNS"
    echo "sequences after 3 warm-ups), ours (\`PROG bench -n K\`) and PyTorch $("$PY" -c 'import torch; print(torch.__version__)') eager (tests/bench/torch_llama.py) on the same .bin;"
    echo "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) CPUs. Our GEMM: $(cat "$OUT/gemm"); with OPENBLAS_CORETYPE=$CORETYPE: $(cat "$OUT/gemm-ct")."
    echo "CPU flags: $(grep -m1 flags /proc/cpuinfo | sed 's/.*: //')"
    echo
    echo "| model | parameters | heads / KV heads | threads | K | ours tok/s | PyTorch f32 tok/s | ours / PyTorch f32 | PyTorch bf16 autocast tok/s | ours / PyTorch bf16 | ours, OPENBLAS_CORETYPE=$CORETYPE | PyTorch f32, OPENBLAS_CORETYPE=$CORETYPE | ours / PyTorch, both $CORETYPE | ours / PyTorch's best | PyTorch spread (min..max / median: f32; bf16; f32 $CORETYPE) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    echo "$rows"
    echo
  fi
  if ls "$OUT"/gqa-row.* >/dev/null 2>&1; then
    echo "GQA's effect on our decode: s15m (6 KV heads) and s15m-kv2 (2) alternating, medians over the rounds"
    echo "(each round's median of $RUNS sequences in parentheses), K = 255 tokens, default environment:"
    echo
    echo "| threads | s15m tok/s | s15m-kv2 tok/s | kv2 / kv6 |"
    echo "|---|---|---|---|"
    cat "$OUT"/gqa-row.*
    echo
  fi
  echo "KV-cache bytes at batch 1 (\`PROG info\`'s state bytes) against the formula (k and v, f32):"
  echo
  echo "| model | layers | context | heads | KV heads | head dim | PROG info state bytes | 2 x layers x context x KV heads x head dim x 4 | of multi-head |"
  echo "|---|---|---|---|---|---|---|---|---|"
  for m in stories260K s15m s15m-kv3 s15m-kv2; do cat "$OUT/$m/kvrow" 2>/dev/null || true; done
} | tee "$OUT/report.md"
