#!/usr/bin/env bash
# tests/bench/sparse_attention.sh [kernels|tiles|torch|program|table|all]: block-sparse attention at
# long contexts (docs/benchmarks.md, "Block-sparse attention (issue 13)").
#
# kernels  tests/bench/attn_sparse.c against the Release runtime (build-bench/): batch 1, C = 128,
#          4 heads (hd 32), causal, T = TS (default "1024 2048 4096 8192 16384"), tile TILE
#          (default 64), at THREADS (default 2) threads: the dense kernels and local 256, strided
#          l = 128, fixed l = 128 c = 16, local 256 + 16 global: forward and a training step's
#          attention (forward + backward) in ms (medians of RUNS = 5 calls after 2 warm-ups, the
#          kernels taking turns call by call), the
#          speed-ups over dense, the FLOP-proportional ideal (dense pairs / pattern pairs) and the
#          kernels' scratch.
# tiles    the same at T = 4096 for tiles 16, 32, 64, 128 (the pass's default tile).
# torch    tests/bench/torch_attention.py: PyTorch's dense attention (q k^T, causal mask, softmax,
#          times v; 1.13 has no fused kernel) at the same shapes, f32 and bf16 autocast, 2 threads.
# program  tests/bench/long.yaml (2 layers, C = 128, batch 1, no position table) built at each T,
#          dense and with each pattern: PROG bench --runs 3 (forward tokens/s at 1 x T; one
#          training step's time) and the planned memory from PROG info (arena, training arena,
#          scratch, KV-cache state).
# table    the Markdown tables from the raw outputs (build-bench/sparse-attn/).
# Run it when nothing else runs on the machine: every figure is a ratio measured in one run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
PHASE=${1:-all}
OUT=build-bench/sparse-attn
TS=${TS:-"1024 2048 4096 8192 16384"}
TILE=${TILE:-64}
THREADS=${THREADS:-2}
RUNS=${RUNS:-5}
mkdir -p "$OUT"
flags() { echo "flags: $(grep -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"; }
build_kernels() {
  scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1
  LIBS=(-lopenblas)
  if grep -q '^MODELC_HAVE_DNNL:INTERNAL=1\|^DNNL_LIB:FILEPATH=/' build-bench/CMakeCache.txt; then LIBS+=(-ldnnl -lgomp); fi
  cc -O2 -Wall -Wextra -Iruntime tests/bench/attn_sparse.c build-bench/libmodelc_rt.a -o "$OUT/attn_sparse" \
    "${LIBS[@]}" -lm -lpthread
}

if [[ $PHASE == kernels || $PHASE == all ]]; then
  build_kernels
  flags > "$OUT/kernels.txt"
  for T in $TS; do MODELC_THREADS=$THREADS "$OUT/attn_sparse" "$T" 128 4 1 "$TILE" "$RUNS" | tee -a "$OUT/kernels.txt"; done
fi
if [[ $PHASE == tiles || $PHASE == all ]]; then
  build_kernels
  flags > "$OUT/tiles.txt"
  for tile in 16 32 64 128; do MODELC_THREADS=$THREADS "$OUT/attn_sparse" 4096 128 4 1 "$tile" "$RUNS" | tee -a "$OUT/tiles.txt"; done
fi
if [[ $PHASE == torch || $PHASE == all ]]; then
  : > "$OUT/torch.txt"
  for T in $TS; do
    for prec in f32 bf16; do
      TORCH_THREADS=$THREADS /usr/bin/python3 tests/bench/torch_attention.py "$T" 128 4 1 "$RUNS" "$prec" |
        sed "s/^/prec=$prec /" | tee -a "$OUT/torch.txt" || echo "prec=$prec T=$T failed" | tee -a "$OUT/torch.txt"
    done
  done
fi
if [[ $PHASE == program || $PHASE == all ]]; then
  scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1
  : > "$OUT/program.txt"
  declare -A PAT=([dense]="" [local256]="sparse-attention<pattern=local;window=256;tile=$TILE>,"
                  [strided128]="sparse-attention<pattern=strided;stride=128;tile=$TILE>,"
                  [fixed128c16]="sparse-attention<pattern=fixed;block=128;summary=16;tile=$TILE>,")
  for T in $TS; do
    sed "s/context: 1024/context: $T/" tests/bench/long.yaml > "$OUT/long-$T.yaml"
    for k in dense local256 strided128 fixed128c16; do
      prog="$OUT/long-$T-$k"
      build-bench/modelc build --passes="${PAT[$k]}autodiff,xent_fuse,constfold,cse,fuse,dce,memplan" "$OUT/long-$T.yaml" -o "$prog"
      info=$("$prog" info)
      get() { echo "$info" | awk -v k="$1" 'index($0, k) == 1 { print $'"$2"' }' | head -1; }
      arena=$(get "arena bytes:" 3) scr=$(get "scratch bytes:" 3) tscr=$(echo "$info" | awk '/ training$/ { print $1 }')
      tarena=$(echo "$info" | sed -n 's/.*train arena \([0-9]*\) bytes.*/\1/p') state=$(get "state bytes:" 3)
      b=$("$prog" bench --runs 3 --threads "$THREADS" -n 16)
      fwd=$(echo "$b" | awk '/^forward_tokens_per_s:/ { print $2 }') step=$(echo "$b" | awk '/^train_step_seconds:/ { printf "%.1f", $2 * 1000 }')
      echo "T=$T kernel=$k arena=$arena train_arena=$tarena scratch=$scr train_scratch=$tscr state=$state fwd_tok_s=$fwd train_step_ms=$step" |
        tee -a "$OUT/program.txt"
      echo "$b" > "$prog.bench"
    done
  done
fi
if [[ $PHASE == table || $PHASE == all ]]; then
  /usr/bin/python3 - "$OUT" <<'PY'
import re, sys, os
out = sys.argv[1]
def rows(name):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    res = []
    for line in open(p):
        d = dict(re.findall(r"(\w+)=(\S+)", line))
        if d:
            res.append(d)
    return res
k = rows("kernels.txt")
if k:
    print("\n| T | kernel | pairs (% of dense) | ideal x | fwd ms | fwd x | train ms | train x | scratch (fwd / train) KiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for d in k:
        print(f"| {d['T']} | {d['kernel']} | {float(d['fraction'])*100:.1f}% | {d['ideal']} | {d['fwd_ms']} | {d['fwd_x']} | "
              f"{d['train_ms']} | {d['train_x']} | {int(d['scratch_floats'])*4//1024} / {int(d['dx_scratch_floats'])*4//1024} |")
t = rows("tiles.txt")
if t:
    print("\n| tile | kernel | fwd ms | fwd x | train ms | train x |")
    print("|---:|---|---:|---:|---:|---:|")
    for d in t:
        if d["kernel"] != "dense":
            print(f"| {d['tile']} | {d['kernel']} | {d['fwd_ms']} | {d['fwd_x']} | {d['train_ms']} | {d['train_x']} |")
tr = rows("torch.txt")
if tr and k:
    dense = {d["T"]: d for d in k if d["kernel"] == "dense"}
    print("\n| T | PyTorch | fwd ms | train ms | peak RSS MiB | our dense fwd / train ms |")
    print("|---:|---|---:|---:|---:|---:|")
    for d in tr:
        if "torch_fwd_ms" not in d:
            continue
        o = dense.get(d["T"], {})
        print(f"| {d['T']} | {d['prec']} | {d['torch_fwd_ms']} | {d['torch_train_ms']} | {d['peak_rss_mb']} | "
              f"{o.get('fwd_ms', '-')} / {o.get('train_ms', '-')} |")
pr = rows("program.txt")
if pr:
    print("\n| T | attention | fwd tok/s | train step ms | arena MiB | train arena MiB | scratch KiB (fwd / train) | KV state KiB |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for d in pr:
        mib = lambda x: f"{int(x)/2**20:.1f}" if x and x.isdigit() else "-"
        kib = lambda x: f"{int(x)//1024}" if x and x.isdigit() else "-"
        print(f"| {d['T']} | {d['kernel']} | {d.get('fwd_tok_s','-')} | {d.get('train_step_ms','-')} | {mib(d.get('arena'))} | "
              f"{mib(d.get('train_arena'))} | {kib(d.get('scratch'))} / {kib(d.get('train_scratch'))} | {kib(d.get('state'))} |")
PY
fi
