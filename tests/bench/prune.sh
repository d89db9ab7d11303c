#!/bin/bash
# tests/bench/prune.sh [quality|importance|speed|table|all]: the pruning table (docs/benchmarks.md, "Pruning
# (issue 12)").
#
# Model: examples/gpt-tiny.yaml trained on the fortunes corpus. CKPT (default
# build-bench/prune/tiny.safetensors) and DATA (default build-bench/prune/fortunes.txt, made by
# scripts/fortunes-corpus.sh; tests/bench/bench_lib.bash); when no checkpoint exists the script trains one itself (6000 steps,
# lr 2e-3, seed 1, 2 threads: ~20 minutes; it says so). The held-out text is the last 10% of DATA,
# the trainer's own validation split.
#
# Rows (each a `prune<...>` before the default pipeline; the dense row has no prune):
#   magnitude   sparsity 0.25 0.5 0.75 0.9, scope=layer, format=auto (csr where the pass's
#               break-even says so: 90% on gpt-tiny)
#   nm          2:4 (50%), 1:4 (75%), 1:8 (87.5%): N:M has only these sparsities here
#   neurons     0.25 0.5 0.75 0.9 of the MLP hidden units removed
#   heads       1, 2, 3 of 4 heads per attention removed, score=norm; and score=importance too when
#               the dense program has the `importance` verb (PROG importance -n 256 over the
#               training part of DATA, the first 90%: the held-out tail stays unseen)
#
# quality  for every row: parameters (nonzero: masked weights do not count), weight bytes and
#          storage and forward FLOPs per token (PROG info, modelc stats), held-out bits per byte right after pruning (the
#          inference program loads the full dense checkpoint: masks or kept units chosen at load),
#          and after fine-tuning STEPS (default 300) steps at LR (default 5e-4; warm-up 30, cosine
#          to 5e-5, batch 4, seed 1) with the mask held: a training program compiled with the
#          prune pass before autodiff, started from the full checkpoint; the fine-tuned weights
#          evaluated by the inference program. The dense row is fine-tuned the same way (the fair
#          baseline).
# speed    PROG bench --runs BENCH_RUNS (default 7; 3 warm-ups, median of the timed calls) at 2
#          threads, forward tokens/s at the full compiled batch x context and decode tokens/s at
#          batch 1 with the KV cache, for every gpt-tiny row (heads: norm; importance keeps the
#          same shapes) and for the small config (tests/bench/small.yaml, random weights from
#          init --seed 1): dense, magnitude 90% (csr), neurons 50%. ROUNDS rounds (default 3),
#          the program order rotated per round; figures are medians over rounds. Run it when
#          nothing else of yours runs.
# importance  only the score=importance heads rows (after the verb has come), added to quality's.
#          Also at 1 thread (THREADS, default "2 1"): decode of a model this small is a chain of
#          tiny ops, and at 2 threads each waits for the second thread, which a shared machine's
#          other jobs delay; the 1-thread figures show the kernels without that wait. The small
#          config decodes SMALL_DECODE (default 64) tokens per bench run.
# table    prints the Markdown tables and the targets (saved as build-bench/prune/results.md).
#
# Raw outputs in build-bench/prune/. quality takes ~20 minutes on the 2-core machine, speed ~10.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
source tests/bench/bench_lib.bash
PHASE=${1:-all}
OUT=${PRUNE_OUT:-build-bench/prune}
STEPS=${STEPS:-300}
LR=${LR:-5e-4}
ROUNDS=${ROUNDS:-3}
RUNS=${BENCH_RUNS:-7}
THREADS=${THREADS:-2 1}     # bench thread counts: 2 (the table's), 1 (the same without a second thread to wait for)
SMALL_DECODE=${SMALL_DECODE:-64} # decode tokens per bench run for the small config
P=constfold,cse,fuse,dce,memplan
TP=autodiff,xent_fuse,$P
mkdir -p "$OUT"
[ "$PHASE" = table ] || scripts/setup.sh build-bench -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1
M=build-bench/modelc
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2

bench_corpus "$OUT"
CKPT=${CKPT:-$OUT/tiny.safetensors}

# name|prune options (empty: dense)
rows=(
  "dense|"
  "mag25|kind=magnitude;sparsity=0.25" "mag50|kind=magnitude;sparsity=0.5"
  "mag75|kind=magnitude;sparsity=0.75" "mag90|kind=magnitude;sparsity=0.9"
  "nm2:4|kind=nm;n=2;m=4" "nm1:4|kind=nm;n=1;m=4" "nm1:8|kind=nm;n=1;m=8"
  "neu25|kind=neurons;sparsity=0.25" "neu50|kind=neurons;sparsity=0.5"
  "neu75|kind=neurons;sparsity=0.75" "neu90|kind=neurons;sparsity=0.9"
  "heads1|kind=heads;heads=1;score=norm" "heads2|kind=heads;heads=2;score=norm"
  "heads3|kind=heads;heads=3;score=norm"
)
irows=("heads1i|kind=heads;heads=1;score=importance" "heads2i|kind=heads;heads=2;score=importance"
  "heads3i|kind=heads;heads=3;score=importance")
small_rows=("small-dense|" "small-mag90|kind=magnitude;sparsity=0.9" "small-neu50|kind=neurons;sparsity=0.5")
pipe() { [ -n "$1" ] && echo "prune<$1>,$2" || echo "$2"; }
fname() { echo "${1//:/-}"; } # program file names without ':'

build_inf() { # NAME OPTS SPEC
  local f
  f=$OUT/$(fname "$1")
  $M build --passes="$(pipe "$2" $P)" "$3" -o "$f"
  "$f" info > "$f.info"
  $M stats --passes="$(pipe "$2" $P)" "$3" > "$f.stats"
}

has_importance() { [ -x "$OUT/dense-train" ] && "$OUT/dense-train" importance --help > /dev/null 2>&1; }

quality() {
  bench_checkpoint "$OUT"
  bench_split "$DATA" "$OUT/heldout.txt" "$OUT/train90.txt"
  $M build --passes=$TP examples/gpt-tiny.yaml -o "$OUT/dense-train"
  local list=("${rows[@]}") W0=$CKPT
  [ "$1" = all ] || list=()
  : > "$OUT/quality.res.new"
  [ "$1" = all ] || grep -v '^heads.i ' "$OUT/quality.res" > "$OUT/quality.res.new" || true
  mv "$OUT/quality.res.new" "$OUT/quality.res"
  if has_importance; then
    list+=("${irows[@]}")
    W0i=$OUT/tiny-importance.safetensors
    # the scores from the training part only (the first 90%), IMPORTANCE_N windows (default 256)
    "$OUT/dense-train" importance --weights "$CKPT" --data "$OUT/train90.txt" -n "${IMPORTANCE_N:-256}" --seed 1 \
      --out "$W0i" > "$OUT/importance.log" 2>&1
  else
    echo "prune.sh: the dense program has no 'importance' verb: heads rows with score=norm only" >&2
  fi
  for r in "${list[@]}"; do
    local n=${r%%|*} o=${r#*|} f w
    f=$OUT/$(fname "$n")
    w=$W0
    case $o in *score=importance*) w=$W0i ;; esac
    echo "prune.sh: quality: $n" >&2
    build_inf "$n" "$o" examples/gpt-tiny.yaml
    [ "$n" = dense ] || $M build --passes="$(pipe "$o" $TP)" examples/gpt-tiny.yaml -o "$f-train"
    "$f" eval --weights "$w" --data "$OUT/heldout.txt" --threads 2 > "$f.eval0"
    "$f-train" train --weights "$w" --data "$DATA" --steps "$STEPS" --lr "$LR" --warmup 30 --min-lr 5e-5 \
      --schedule cosine --eval-every 0 --seed 1 --threads 2 --out "$f-ft.safetensors" > "$f.train.log" 2>&1
    "$f" eval --weights "$f-ft.safetensors" --data "$OUT/heldout.txt" --threads 2 > "$f.eval1"
    awk -v n="$n" -F': *' '/^bits per byte:/ { print n, "bpb0", $2 }' "$f.eval0" >> "$OUT/quality.res"
    awk -v n="$n" -F': *' '/^bits per byte:/ { print n, "bpb1", $2 }' "$f.eval1" >> "$OUT/quality.res"
  done
}

speed() {
  local list=("${rows[@]}" "${small_rows[@]}") r n o f
  [ -f "$OUT/dense.info" ] || for r in "${rows[@]}"; do build_inf "${r%%|*}" "${r#*|}" examples/gpt-tiny.yaml; done
  for r in "${small_rows[@]}"; do build_inf "${r%%|*}" "${r#*|}" tests/bench/small.yaml; done
  [ -f "$OUT/small.safetensors" ] || "$OUT/small-dense" init --seed 1 --out "$OUT/small.safetensors"
  local NE=${#list[@]}
  : > "$OUT/speed.res"
  for k in $(seq 1 "$ROUNDS"); do
    for i in $(seq 0 $((NE - 1))); do
      r=${list[$(((i + k) % NE))]}
      n=${r%%|*}
      f=$OUT/$(fname "$n")
      case $n in small-*) w=$OUT/small.safetensors ;; *) w=$CKPT ;; esac
      for t in $THREADS; do
        echo "prune.sh: speed: round $k: $n, $t threads" >&2
        # shellcheck disable=SC2046
        "$f" bench --weights "$w" --runs "$RUNS" --threads "$t" $(case $n in small-*) printf '%s' "-n $SMALL_DECODE" ;; esac) |
          awk -v e="$n" -v t="$t" -F': ' '/^(forward_tokens_per_s|decode_tokens_per_s):/ { print e, $1 "." t, $2 }' >> "$OUT/speed.res"
      done
    done
    uptime >> "$OUT/speed.load"
  done
}

med() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print ""; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
get() { [ -f "$2" ] && awk -v e="$1" -v k="$3" '$1 == e && $2 == k { print $3 }' "$2" | med; }
# nonzero parameters, weight bytes, storage of program NAME
facts() {
  local f
  f=$OUT/$(fname "$1")
  awk '
    /^parameters:/ { p = $2 }
    /^weight bytes:/ { wb = $3 }
    /^forward FLOPs:/ { fl = $3 }
    END { printf "%s %s %s ", p, wb, fl }' "$f.info"
  awk '/^pruning: .* weights kept/ {
      for (i = 1; i <= NF; i++) if ($i == "of") { kept = $(i - 1); all = $(i + 1) }
      gsub(",", "", kept); gsub(",", "", all)
      for (i = 1; i <= NF; i++) if ($i == "csr,") csr = $(i - 1)
      for (i = 1; i <= NF; i++) if ($i == "dense" && $(i + 1) == "masked") dm = $(i - 1)
      printf "%d %s\n", all - kept, (csr > 0 && dm > 0) ? "csr+dense" : (csr > 0 ? "csr" : "dense(masked)"); found = 1 }
    END { if (!found) print 0, "dense" }' "$f.stats"
}

table() {
  local Q=$OUT/quality.res S=$OUT/speed.res
  local b0 bft f0 d0 f1 d1
  b0=$(get dense "$Q" bpb0) bft=$(get dense "$Q" bpb1)
  f0=$(get dense "$S" forward_tokens_per_s.2) d0=$(get dense "$S" decode_tokens_per_s.2)
  f1=$(get dense "$S" forward_tokens_per_s.1) d1=$(get dense "$S" decode_tokens_per_s.1)
  {
    echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); flags: $(grep -o 'avx512[a-z_]*\|amx[a-z_]*' /proc/cpuinfo | sort -u | tr '\n' ' ')"
    echo "checkpoint $CKPT, data $DATA (held-out: the last 10%); fine-tuning $STEPS steps at lr $LR; speed: $(awk '$2 ~ /^forward_tokens_per_s/ { n[$1 $2]++ } END { for (k in n) { print n[k]; exit } }' "$S") rounds of bench --runs $RUNS, medians"
    echo
    echo "| row | pruning | parameters (nonzero) | weight bytes | storage | FLOPs/token | forward tok/s | x dense | decode tok/s | x dense | 1 thread: forward, decode x dense | bits/byte pruned | vs dense | bits/byte fine-tuned | vs dense fine-tuned | vs dense (no FT) |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    local list=("${rows[@]}")
    [ -n "$(get heads1i "$Q" bpb0)" ] && list+=("${irows[@]}")
    for r in "${list[@]}"; do
      local n=${r%%|*} o=${r#*|} sp
      sp=$n
      [ -n "$o" ] || o="(none)"
      case $n in heads*i) sp=${n%i} ;; esac
      read -r p wb fl z st < <(facts "$n")
      local f d g e a c
      f=$(get "$sp" "$S" forward_tokens_per_s.2) d=$(get "$sp" "$S" decode_tokens_per_s.2)
      g=$(get "$sp" "$S" forward_tokens_per_s.1) e=$(get "$sp" "$S" decode_tokens_per_s.1)
      a=$(get "$n" "$Q" bpb0) c=$(get "$n" "$Q" bpb1)
      awk -v n="$n" -v o="$o" -v p="$p" -v z="$z" -v wb="$wb" -v fl="$fl" -v st="$st" -v f="$f" -v d="$d" -v f0="$f0" -v d0="$d0" \
        -v a="$a" -v c="$c" -v b0="$b0" -v bft="$bft" -v g="$g" -v e="$e" -v f1="$f1" -v d1="$d1" 'function pct(x, y) { return (x == "" || y == "") ? "-" : sprintf("%+.1f%%", 100 * (x / y - 1)) }
        function num(x, fm) { return x == "" ? "-" : sprintf(fm, x) }
        BEGIN {
          printf "| %s | `%s` | %d | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, o, p - z, wb, st, fl,
            num(f, "%.0f"), (f == "" || f0 == "") ? "-" : sprintf("%.2f", f / f0), num(d, "%.1f"), (d == "" || d0 == "") ? "-" : sprintf("%.2f", d / d0),
            (g == "" || e == "" || f1 == "" || d1 == "") ? "-" : sprintf("%.2f, %.2f", g / f1, e / d1),
            num(a, "%.4f"), pct(a, b0), num(c, "%.4f"), pct(c, bft), pct(c, b0) }'
    done
    echo
    echo "small config (tests/bench/small.yaml, random weights):"
    echo
    echo "| row | pruning | parameters (nonzero) | weight bytes | storage | FLOPs/token | forward tok/s | x dense | decode tok/s | x dense | 1 thread: forward, decode x dense |"
    echo "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    local sf0 sd0 sf1 sd1
    sf0=$(get small-dense "$S" forward_tokens_per_s.2) sd0=$(get small-dense "$S" decode_tokens_per_s.2)
    sf1=$(get small-dense "$S" forward_tokens_per_s.1) sd1=$(get small-dense "$S" decode_tokens_per_s.1)
    for r in "${small_rows[@]}"; do
      local n=${r%%|*} o=${r#*|}
      [ -n "$o" ] || o="(none)"
      read -r p wb fl z st < <(facts "$n")
      f=$(get "$n" "$S" forward_tokens_per_s.2) d=$(get "$n" "$S" decode_tokens_per_s.2)
      g=$(get "$n" "$S" forward_tokens_per_s.1) e=$(get "$n" "$S" decode_tokens_per_s.1)
      awk -v n="$n" -v o="$o" -v p="$p" -v z="$z" -v wb="$wb" -v fl="$fl" -v st="$st" -v f="$f" -v d="$d" -v f0="$sf0" -v d0="$sd0" \
        -v g="$g" -v e="$e" -v f1="$sf1" -v d1="$sd1" 'BEGIN {
        printf "| %s | `%s` | %d | %d | %s | %d | %.0f | %.2f | %.1f | %.2f | %.2f, %.2f |\n", n, o, p - z, wb, st, fl, f, f / f0, d, d / d0, g / f1, e / d1 }'
    done
    echo
    echo "Targets:"
    awk -v f="$(get neu50 "$S" forward_tokens_per_s.2)" -v f0="$f0" -v sf="$(get small-neu50 "$S" forward_tokens_per_s.2)" -v sf0="$sf0" \
      -v g="$(get neu50 "$S" forward_tokens_per_s.1)" -v f1="$f1" -v sg="$(get small-neu50 "$S" forward_tokens_per_s.1)" -v sf1="$sf1" 'BEGIN {
      printf "- neurons 50%% forward >= 1.3x dense: gpt-tiny %.2fx (%s), small %.2fx (%s); at 1 thread %.2fx and %.2fx\n", f / f0, (f / f0 >= 1.3) ? "met" : "not met",
        sf / sf0, (sf / sf0 >= 1.3) ? "met" : "not met", g / f1, sg / sf1 }'
    awk -v d="$(get mag90 "$S" decode_tokens_per_s.2)" -v d0="$d0" -v sd="$(get small-mag90 "$S" decode_tokens_per_s.2)" -v sd0="$sd0" \
      -v e="$(get mag90 "$S" decode_tokens_per_s.1)" -v d1="$d1" -v se="$(get small-mag90 "$S" decode_tokens_per_s.1)" -v sd1="$sd1" 'BEGIN {
      printf "- magnitude 90%% (csr) decode faster than dense: gpt-tiny %.2fx (%s), small %.2fx (%s); at 1 thread %.2fx and %.2fx\n", d / d0, (d > d0) ? "met" : "not met",
        sd / sd0, (sd > sd0) ? "met" : "not met", e / d1, se / sd1 }'
    awk -v c="$(get mag50 "$Q" bpb1)" -v b0="$b0" -v bft="$bft" 'BEGIN {
      printf "- fine-tuned magnitude 50%% loses < 3%% bits per byte: %.4f vs the original checkpoint %.4f: %+.2f%% (%s); vs the dense model fine-tuned alike %.4f: %+.2f%% (%s)\n",
        c, b0, 100 * (c / b0 - 1), (c / b0 < 1.03) ? "met" : "not met", bft, 100 * (c / bft - 1), (c / bft < 1.03) ? "met" : "not met" }'
  } | tee "$OUT/results.md"
}

case $PHASE in
  quality) quality all ;;
  importance) quality importance ;;
  speed) speed ;;
  table) table ;;
  all) quality all && speed && table ;;
  *) echo "usage: tests/bench/prune.sh [quality|importance|speed|table|all]" >&2; exit 2 ;;
esac
