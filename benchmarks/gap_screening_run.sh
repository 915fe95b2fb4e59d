#!/usr/bin/env bash
# Fashion-MNIST gap screening (issue 18): every candidate as one resumable `hwloop sweep` folder under ROOT,
# seeds 0-2, the reduced protocol (5 + 5 epochs, warm-up 2), one torch thread per run, two queues side by
# side (at most 2 runs at a time). Running it again continues (finished points are skipped).
# Usage: benchmarks/gap_screening_run.sh ROOT [extra hwloop sweep options, e.g. --train-samples 600 --hidden 32]
# Then:  python benchmarks/gap_screening.py --root ROOT
set -u
root=${1:?usage: gap_screening_run.sh ROOT [sweep options]}
shift
common=(--epochs-per-task 5 --warmup 2 --seeds 0-2 --workers 1 --threads 1 --no-progress "$@")
run() {  # name, options...
  local name=$1
  shift
  python -m hwloop sweep --out "$root/$name" "${common[@]}" "$@" > "$root/$name.out" 2>&1 || echo "$name: exit $?" >&2
}
mkdir -p "$root"
( run baseline; run clamp-soft --clamp soft; run bn-running --bn-eval running; run batch50 --batch-size 50 ) &
a=$!
( run ws-read --ws-source read; run clamp-none --clamp none; run lr-decay0.9 --lr-decay 0.9
  run batch200 --batch-size 200 ) &
b=$!
wait $a $b
