#!/usr/bin/env bash
# gridwatch against Flink SQL MATCH_RECOGNIZE on the same pattern and the same file.
#
#   bash bench/flink/run.sh [RUNS] [ENGINES]       e.g. bash bench/flink/run.sh 3 "gridwatch flink"
#
# The input is six hours of the example city (seed 42, ~990 k lines, 605 k sensor rows),
# generated once into $CITY_NDJSON (default /tmp/city6h.ndjson). gridwatch runs the
# pattern as a sequence rule (pressure_collapse.yaml) with 1 and 2 workers; Flink runs it as
# MATCH_RECOGNIZE (match_recognize.py, PyFlink 2.3.0 in a venv under $FLINK_VENV, installed
# on first use; needs Java 17) with parallelism 1 and 2. Both read the NDJSON file from the
# page cache; events/s is sensor rows ÷ wall seconds (gridwatch: start to last alert as
# its summary prints; Flink: job submission to the last result row, JVM start excluded).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RUNS=${1:-3}
ENGINES=${2:-"gridwatch flink"}
export CITY_NDJSON=${CITY_NDJSON:-/tmp/city6h.ndjson}
FLINK_VENV=${FLINK_VENV:-$HOME/.cache/gridwatch-flink-venv}
SENSOR_ROWS=605086
BIN=${GRIDWATCH_BIN:-$ROOT/target/release/gridwatch}
[ -x "$BIN" ] || (cd "$ROOT" && cargo build --release --bin gridwatch)
[ -f "$CITY_NDJSON" ] || "$BIN" generate --config "$ROOT/examples/city/gridwatch.yaml" --out "$CITY_NDJSON" --duration 6h --seed 42

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

for engine in $ENGINES; do
  for par in 1 2; do
    for run in $(seq 1 "$RUNS"); do
      case $engine in
        gridwatch)
          rm -f "$WORK/alerts.ndjson"
          out=$("$BIN" run --config "$ROOT/bench/flink/gridwatch.yaml" --events "$CITY_NDJSON" --workers "$par" \
                --alerts-out "$WORK/alerts.ndjson" 2>&1 | grep -E 'events/s' | tail -1)
          alerts=$(wc -l < "$WORK/alerts.ndjson")
          echo "gridwatch workers=$par run=$run alerts=$alerts :: $out"
          ;;
        flink)
          if [ ! -x "$FLINK_VENV/bin/python" ]; then
            python3 -m venv "$FLINK_VENV"
            "$FLINK_VENV/bin/pip" install --quiet apache-flink==2.3.0
          fi
          json=$("$FLINK_VENV/bin/python" "$ROOT/bench/flink/match_recognize.py" --variant pressure --parallelism "$par" 2>/dev/null)
          secs=$(python3 -c 'import json,sys; o=json.loads(sys.argv[1]); print(o["seconds"], o["matches"], ",".join(o["match_devices"]))' "$json")
          set -- $secs
          echo "flink parallelism=$par run=$run seconds=$1 sensor_ev_per_s=$(python3 -c "print(round($SENSOR_ROWS/$1))") matches=$2 ($3)"
          ;;
      esac
    done
  done
done
