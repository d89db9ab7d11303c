# tests/bench/topic_lib.bash: the topic-classification task of tests/bench/linformer.sh and
# tests/bench/funnel.sh (sourced). Is a T-byte window from the fortunes' `computers` or
# `songs-poems` file (tests/bench/linformer_data.py makes the rows and scores the logits).
# Classifiers train on labelled rows (`PROG train --tokens --targets`), and `--tokens` holds at
# most the compiled batch (ROWS = 128 here: programs are built with --batch=128), so a run of
# STEPS steps of 32 rows is a chain of sessions of 4 steps, each on the next file of 128 rows,
# resumed from the previous one's checkpoint (optimiser state, schedule and step carried over;
# the row cursor is back at 0 after 4 steps of 32 of 128). Every training row is seen once.
#
#   topic_data OUT CORPUS STEPS      the rows: OUT/train_x.I.npy ..., OUT/test_x.I.npy, test_y.npy
#   topic_train OUT NAME STEPS       trains OUT/NAME from OUT/NAME-init.safetensors: batch 32,
#                                    lr 5e-4, 100 warm-up steps, one thread; writes OUT/NAME.time
#                                    (wall seconds), .params, .score (test loss, accuracy), .train
#                                    (mean training loss of the last 10% of the steps)
TOPIC_ROWS=128
TOPIC_PER=$((TOPIC_ROWS / 32)) TOPIC_NTEST=$((1024 / TOPIC_ROWS))

topic_data() {
  local out=$1 corpus=$2 steps=$3
  TOPIC_NTRAIN=$(( (steps + TOPIC_PER - 1) / TOPIC_PER ))
  /usr/bin/python3 tests/bench/linformer_data.py "$corpus" "$out" 64 $((TOPIC_NTRAIN * TOPIC_ROWS)) 1024 $TOPIC_ROWS
}

topic_train() {
  local out=$1 n=$2 steps=$3 c from stop start end i
  TOPIC_NTRAIN=$(( (steps + TOPIC_PER - 1) / TOPIC_PER ))
  start=$(date +%s.%N)
  for ((c = 0; c * TOPIC_PER < steps; c++)); do
    from=(--weights "$out/$n-init.safetensors")
    [ "$c" -gt 0 ] && from=(--resume "$out/$n.ckpt.safetensors")
    stop=$(( (c + 1) * TOPIC_PER < steps ? (c + 1) * TOPIC_PER : steps ))
    "$out/$n" train "${from[@]}" --tokens "$out/train_x.$((c % TOPIC_NTRAIN)).npy" \
      --targets "$out/train_y.$((c % TOPIC_NTRAIN)).npy" --steps "$steps" --stop-at "$stop" --batch 32 --lr 5e-4 \
      --warmup 100 --eval-every 0 --threads 1 --checkpoint "$out/$n.ckpt.safetensors" --out "$out/$n.safetensors" \
      --log "$out/$n.csv" >> "$out/$n.log" 2>&1
  done
  end=$(date +%s.%N)
  awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f\n", b - a }' > "$out/$n.time"
  "$out/$n" info | awk '/^parameters:/ { print $2 }' > "$out/$n.params"
  for ((i = 0; i < TOPIC_NTEST; i++)); do
    "$out/$n" forward --weights "$out/$n.safetensors" --tokens "$out/test_x.$i.npy" --out "$out/$n.logits.$i.npy" --threads 1
  done
  /usr/bin/python3 tests/bench/linformer_data.py --score "$out" "$n" "$TOPIC_NTEST" > "$out/$n.score"
  awk -F, -v s="$steps" 'NR > 1 && $1 > s - s / 10 { t += $3; k++ } END { printf "%.4f\n", t / k }' "$out/$n.csv" \
    > "$out/$n.train"
}
