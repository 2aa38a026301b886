#!/usr/bin/env bash
# Scaling curves for BENCHMARKS.md (issue 6): events/s vs rules, keys and workers; memory
# vs keys. Appends JSON lines to bench/results/*.jsonl; plot with scripts/plot_bench.py.
# Needs a release build: cargo build --release
set -euo pipefail
cd "$(dirname "$0")/.."
G="${CARGO_TARGET_DIR:-$HOME/.cache/gridwatch-target}/release/gridwatch"
OUT=bench/results
mkdir -p "$OUT"
rm -f "$OUT"/rules.jsonl "$OUT"/keys.jsonl "$OUT"/memory.jsonl "$OUT"/workers.jsonl
for n in 1 10 100 300 1000; do
  "$G" bench pipeline --events 1000000 --synthetic-rules "$n" --json "$OUT/rules.jsonl"
done
for scale in 1 10 100 1000; do
  "$G" bench pipeline --events 1000000 --scale "$scale" --json "$OUT/keys.jsonl"
  "$G" bench pipeline --events 1000000 --scale "$scale" --rules examples/bench/keys/threshold_for.yaml --json "$OUT/memory.jsonl"
done
for wd in "1 0" "2 0" "1 2" "2 2"; do
  set -- $wd
  "$G" bench pipeline --events 2000000 --workers "$1" --decoders "$2" --json "$OUT/workers.jsonl"
done
