#!/usr/bin/env bash
# Data-parallel training over Open MPI (issue 16): a program built with --mpi and started by
# `mpirun -np N` for N = 1, 2, 4, with and without --shard-optimizer, ends with weights
# byte-identical to the one-process run of the program built without --mpi on the same global
# batch (gpt-tiny fp32; sharded over 2: gpt-tiny-adamw in bf16 and fp16 mixed precision, moe-tiny,
# xl-tiny's segment memory); a
# checkpoint written over 2 sharded ranks holds the one-process checkpoint's tensors and resumed
# over 4 ranks (or 1) ends as the uninterrupted run; the sharded optimiser state is measured at
# about 1/N per rank; a rank killed mid-run ends mpirun with an error within a bound and leaves
# the checkpoint whole; bad setups fail clearly (a program without --mpi under mpirun, fewer
# micro-batches than ranks, a verb other than train, --mpi without an executable).
set -euo pipefail
source "$(dirname "$0")/lib.bash"
# mpirun refuses root unless told; 4 ranks on a 2-core machine need --oversubscribe
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
# The sanitizer build (scripts/test.sh --sanitize): under mpirun the programs run with ASan and
# UBSan but without LeakSanitizer. Open MPI keeps allocations until exit and dlcloses its
# components in MPI_Finalize, so LSan reports them from an "<unknown module>" that no suppression
# can name (tried: suppressing libmpi, libopen-pal and libopen-rte leaves those). Every run in one
# process keeps the leak check.
MPIRUN=(env "ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" timeout 300 mpirun --oversubscribe -np)
cat README.md docs/*.md > "$TMP/all.txt"; head -c 30000 "$TMP/all.txt" > "$TMP/data.txt"

G="$TMP/g" GM="$TMP/gm"
expect_status 0 "$MODELC" build examples/gpt-tiny.yaml -o "$G"
expect_status 0 "$MODELC" build --mpi examples/gpt-tiny.yaml -o "$GM"

# tensors of a safetensors file without its JSON header (whose metadata holds the elapsed time)
tensors() { local n; n=$(od -An -t u8 -N 8 "$1" | tr -d ' '); tail -c +$((9 + n)) "$1"; }
same() { cmp -s "$1" "$2" || fail "$3: $(basename "$2") differs from $(basename "$1")"; }

# 4 micro-batches a step (batch 4 of 1), clipping on, validation every 2 steps
A=(train --data "$TMP/data.txt" --steps 4 --batch 4 --micro-batch 1 --seed 3 --threads 1 --eval-every 2 --grad-clip 0.3)
expect_status 0 "$G" "${A[@]}" --out "$TMP/one.safetensors"
expect_status 0 "$G" "${A[@]}" --stop-at 2 --checkpoint "$TMP/one.ck" --out "$TMP/one-half.safetensors"
for n in 1 2 4; do
  for sh in "" --shard-optimizer; do
    w="$TMP/n$n$sh.safetensors"
    expect_status 0 "${MPIRUN[@]}" $n "$GM" "${A[@]}" $sh --out "$w"
    same "$TMP/one.safetensors" "$w" "$n ranks $sh"
    [ $n = 1 ] && continue
    cp "$TMP/err" "$TMP/err$n$sh"
    expect_in "$TMP/err" "data parallel over $n processes (MPI), 4 micro-batches a step"
    expect_in "$TMP/err" "ms a step in MPI waits and collectives"
    # the losses and validation in the log: one process's
    diff <(cut -d, -f1-5 "$TMP/one.csv") <(cut -d, -f1-5 "${w%.safetensors}.csv") >/dev/null ||
      fail "$n ranks $sh: the CSV's losses differ from one process's"
  done
done
# the optimiser state per rank, as allocated: whole on each rank, or tiling one process's over the ranks
opt() { sed -n 's/.*optimiser state per rank: \([0-9 ]*\) bytes.*one process holds \([0-9]*\).*/\1 \2/p' "$1"; }
read -r -a v <<<"$(opt "$TMP/err4")"
[ "${#v[@]}" = 5 ] && [ "${v[0]}" = "${v[4]}" ] && [ "${v[3]}" = "${v[4]}" ] || fail "unsharded: each rank should hold the whole state (${v[*]})"
for n in 2 4; do
  read -r -a v <<<"$(opt "$TMP/err$n--shard-optimizer")"
  total=${v[$n]} sum=0 big=0
  for ((j = 0; j < n; j++)); do sum=$((sum + v[j])); [ "${v[j]}" -gt "$big" ] && big=${v[j]}; done
  [ "${#v[@]}" = $((n + 1)) ] && [ "$sum" = "$total" ] || fail "sharded over $n: the ranks' state (${v[*]}) does not tile one process's"
  # 1/N up to whole parameters: gpt-tiny's largest (the embedding) moves the cut by a fraction
  [ $((big * n)) -le $((total * 13 / 10)) ] || fail "sharded over $n: a rank holds $big of $total bytes, not about 1/$n"
done

# sharded over 2 ranks: mixed precision (the 16-bit working weights rebuilt on every rank; bf16:
# AdamW's own pass, fp16: rounding, and the loss scaler's finite flag over every rank's gradients),
# mixture of experts (each micro-batch's load report gathered: the printed expert load is one
# process's too) and segment memory (a micro-batch's rows keep their memory on their rank)
for p in bf16 fp16 moe-tiny xl-tiny; do
  mkdir -p "$TMP/$p"
  case $p in
    bf16|fp16) spec="$TMP/$p/gpt-tiny-adamw.yaml"
      sed "s/^train:/train:\n  precision: $p/" tests/reference/specs/gpt-tiny-adamw.yaml > "$spec" ;;
    *) spec=examples/$p.yaml ;;
  esac
  expect_status 0 "$MODELC" build "$spec" -o "$TMP/$p/g"
  expect_status 0 "$MODELC" build --mpi "$spec" -o "$TMP/$p/gm"
  B=(train --data "$TMP/data.txt" --steps 3 --batch 4 --micro-batch 1 --seed 4 --threads 1 --eval-every 3)
  expect_status 0 "$TMP/$p/g" "${B[@]}" --out "$TMP/$p/one.safetensors"
  grep -v '^wrote' "$TMP/out" > "$TMP/$p/one.out"
  expect_status 0 "${MPIRUN[@]}" 2 "$TMP/$p/gm" "${B[@]}" --shard-optimizer --out "$TMP/$p/two.safetensors"
  same "$TMP/$p/one.safetensors" "$TMP/$p/two.safetensors" "$p, 2 ranks sharded"
  diff "$TMP/$p/one.out" <(grep -v '^wrote' "$TMP/out") >/dev/null || fail "$p, 2 ranks: the printed results differ from one process's"
done
expect_in "$TMP/moe-tiny/one.out" "expert load, mean over 12 train call(s)"

# resume: checkpointed at step 2 over 2 sharded ranks (rank 0 gathers the moments: the file is one
# process's), continued over 4 ranks and over 1
expect_status 0 "${MPIRUN[@]}" 2 "$GM" "${A[@]}" --shard-optimizer --stop-at 2 --checkpoint "$TMP/two.ck" \
  --out "$TMP/two-half.safetensors"
cmp -s <(tensors "$TMP/one.ck") <(tensors "$TMP/two.ck") || fail "the checkpoint of 2 sharded ranks differs from one process's"
cmp -s "$TMP/one.safetensors" "$TMP/two-half.safetensors" && fail "the half run equals the whole one: the test proves nothing"
expect_status 0 "${MPIRUN[@]}" 4 "$GM" "${A[@]}" --shard-optimizer --resume "$TMP/two.ck" --out "$TMP/r4.safetensors"
same "$TMP/one.safetensors" "$TMP/r4.safetensors" "resumed over 4 ranks from 2"
expect_status 0 "$GM" "${A[@]}" --resume "$TMP/two.ck" --out "$TMP/r1.safetensors"
same "$TMP/one.safetensors" "$TMP/r1.safetensors" "resumed in one process from 2 ranks"

# bad setups
expect_status 1 "$MODELC" build --mpi --emit=c examples/gpt-tiny.yaml -o "$TMP/x.c"
expect_in "$TMP/err" "--mpi links the program with the MPI part of the runtime: it needs --emit=exe"
set +e; "${MPIRUN[@]}" 2 "$G" "${A[@]}" --out "$TMP/x.safetensors" >"$TMP/out" 2>"$TMP/err"; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "a program without --mpi under mpirun -np 2 exited $rc"
expect_in "$TMP/err" "launched as one of 2 processes, but this program was built without MPI"
expect_in "$TMP/err" "rebuild it with 'modelc build --mpi'"
[ -e "$TMP/x.safetensors" ] && fail "a program without --mpi under mpirun wrote its output"
set +e; "${MPIRUN[@]}" 4 "$GM" "${A[@]}" --micro-batch 2 --out "$TMP/x.safetensors" >"$TMP/out" 2>"$TMP/err"; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "2 micro-batches over 4 ranks exited $rc"
expect_in "$TMP/err" "2 micro-batch(es) per step (--batch 4 / --micro-batch 2) for 4 processes"
[ "$(grep -c 'micro-batch(es) per step' "$TMP/err")" = 1 ] || fail "the error should be said once, by rank 0"
expect_status 0 "${MPIRUN[@]}" 2 "$GM" train --help
[ "$(grep -c '^usage:' "$TMP/out")" = 1 ] || fail "train --help over 2 ranks should print its usage once"
set +e; "${MPIRUN[@]}" 2 "$GM" info >"$TMP/out" 2>"$TMP/err"; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "info over 2 ranks exited $rc"
expect_in "$TMP/err" "of the commands only 'train' runs over MPI"
# an error on one rank only (MPMD: rank 1 is given a --data that does not exist): rank 0 says it,
# with rank 1's message, and no rank waits for the others
set +e; "${MPIRUN[@]:0:2}" timeout 300 mpirun --oversubscribe -np 1 "$GM" "${A[@]}" --out "$TMP/x.safetensors" : -np 1 "$GM" "${A[@]}" \
  --data "$TMP/nonesuch.txt" --out "$TMP/x.safetensors" >"$TMP/out" 2>"$TMP/err"; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "an error on rank 1 alone exited $rc"
expect_in "$TMP/err" "rank 1 of 2 failed while setting up:"
expect_in "$TMP/err" "nonesuch.txt"
[ -e "$TMP/x.safetensors" ] && fail "a run with a failed rank wrote its output"

# a rank killed mid-run (kill -9 of rank 1 once checkpoints are being written every step):
# mpirun exits non-zero within the bound saying which rank died, and the checkpoint is a whole
# one, which resumes to the uninterrupted run's bytes
K=(train --data "$TMP/data.txt" --steps 100000 --batch 4 --micro-batch 1 --seed 3 --threads 1 --eval-every 0)
"${MPIRUN[@]:0:2}" timeout 120 mpirun --oversubscribe -np 2 "$GM" "${K[@]}" --checkpoint "$TMP/k.ck" --checkpoint-every 1 \
  --out "$TMP/k.safetensors" >"$TMP/kout" 2>"$TMP/kerr" &
job=$!
for _ in $(seq 600); do [ -s "$TMP/k.ck" ] && break; sleep 0.1; done
sleep 0.5
victim=""
for p in $(pgrep -P $job) $(for c in $(pgrep -P $job); do pgrep -P "$c"; done); do
  [ "$(tr '\0' '\n' < /proc/$p/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')" = 1 ] && victim=$p
done
[ -n "$victim" ] && kill -9 "$victim" || fail "no rank 1 to kill (is mpirun running? $(cat "$TMP/kerr" | head -5))"
set +e; wait $job; rc=$?; set -e
[ $rc != 0 ] && [ $rc != 124 ] || fail "mpirun with a killed rank exited $rc (124: it hung until the timeout)"
expect_in "$TMP/kerr" "exited on signal 9"
[ -e "$TMP/k.safetensors" ] && fail "the killed run wrote its final weights"
ls "$TMP"/k.ck.tmp.* >/dev/null 2>&1 && echo "note: a temporary checkpoint was left (cleaned by the next write)" >&2
ks=$(head -c 4096 "$TMP/k.ck" | grep -ao '"step":"[0-9]*"' | tr -dc 0-9)
[ -n "$ks" ] && [ "$ks" -ge 1 ] || fail "the checkpoint of the killed run has no step"
expect_status 0 "$G" "${K[@]}" --stop-at $((ks + 1)) --out "$TMP/k1.safetensors"
expect_status 0 "$G" "${K[@]}" --resume "$TMP/k.ck" --stop-at $((ks + 1)) --out "$TMP/k2.safetensors"
same "$TMP/k1.safetensors" "$TMP/k2.safetensors" "resumed from the killed run's checkpoint (step $ks)"
finish
