#!/usr/bin/env bash
# Snapshots and reload, measured (issue 14): the example city's throughput with a snapshot
# every 10 s / every 1 s / none, snapshot bytes per key by rule kind, write and restore time
# of 1 M keys, and reload time under load. Needs a release build:
#   cargo build --release && bash scripts/bench_state.sh [ROUNDS]
# Prints what BENCHMARKS.md "Snapshots and reload" records. Scratch files go to $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${GRIDWATCH_BIN:-target/release/gridwatch}
WORK=${WORK:-/tmp/gridwatch-bench-state}
ROUNDS=${1:-3}
CITY=examples/city/gridwatch.yaml
mkdir -p "$WORK"

if [ ! -s "$WORK/city24h.ndjson" ]; then
  "$BIN" generate --config "$CITY" --out "$WORK/city24h.ndjson" --duration 24h --seed 42 --force >/dev/null 2>&1
fi
echo "city: $(wc -l <"$WORK/city24h.ndjson") events"

run_city() { # $1: label, rest: extra args; prints events/s from the summary
  local label=$1; shift
  rm -rf "$WORK/state" "$WORK/out"; mkdir -p "$WORK/out"
  GRIDWATCH_LOG=gridwatch_runtime=info "$BIN" run --config "$CITY" --events "$WORK/city24h.ndjson" --quiet --no-cases \
    --alerts-out "$WORK/out/alerts.ndjson" --dead-letter-out "$WORK/out/dead.ndjson" \
    --summary-json "$WORK/out/summary.json" "$@" >/dev/null 2>"$WORK/out/stderr"
  local n; n=$(grep -c 'snapshot written' "$WORK/out/stderr" || true)
  python3 -c "import json,sys; s=json.load(open('$WORK/out/summary.json')); print('$label', round(s['events_per_s']), 'ev/s', round(s['elapsed_s'], 2), 's,', '$n', 'snapshots')"
}
for r in $(seq "$ROUNDS"); do
  run_city none
  run_city every-10s --checkpoint-dir "$WORK/state" --checkpoint-interval 10s
  run_city every-1s --checkpoint-dir "$WORK/state" --checkpoint-interval 1s
  run_city every-250ms --checkpoint-dir "$WORK/state" --checkpoint-interval 250ms
done

# Bytes per key by rule, from the city's last snapshot (the 250 ms run above).
"$BIN" state inspect --json "$WORK/state" | python3 -c '
import json, sys
snap = json.load(sys.stdin)[0]
print("snapshot", snap["bytes"], "bytes,", sum(r["keys"] for r in snap["rules"]), "keys")
for r in snap["rules"]:
    if r["keys"]:
        print("  %-34s %7d keys %8.0f B/key" % (r["rule"], r["keys"], r["bytes"] / r["keys"]))
'

# 1 M keys: one threshold with an open `for` per key.
K=$WORK/keys1m
mkdir -p "$K"
if [ ! -s "$K/events.ndjson" ]; then
  python3 -c '
start = 1763856000000
with open("'"$K"'/events.ndjson", "w") as f:
    for i in range(1_000_000):
        f.write("{\"stream\":\"reading\",\"ts\":%d,\"device_id\":\"dev-%07d\",\"value\":%d}\n" % (start + i, i, 90 + i % 7))
'
fi
cat >"$K/gridwatch.yaml" <<'YAML'
streams:
  reading:
    time_field: ts
    key: [device_id]
    fields: {ts: timestamp, device_id: string, value: float}
rules: [rules.yaml]
sinks:
  out: {kind: file, path: alerts.ndjson, send: [alerts]}
  dead: {kind: file, path: dead.ndjson, send: [dead_letters]}
YAML
printf 'rules:\n  - {id: high-for-1h, kind: threshold, source: reading, condition: value > 80, for: 1h}\n' >"$K/rules.yaml"
for r in $(seq "$ROUNDS"); do
  rm -rf "$K/state" "$K/alerts.ndjson"
  # The end of the file takes a snapshot of the 1 M open stopwatches.
  GRIDWATCH_LOG=gridwatch_runtime=info "$BIN" run --config "$K/gridwatch.yaml" --events "$K/events.ndjson" --quiet \
    --checkpoint-dir "$K/state" --checkpoint-interval 1h 2>"$K/write.log" >/dev/null
  grep -o 'snapshot written.*' "$K/write.log" | tail -1 | sed 's/^/write: /'
  # A second run on the same file restores them (and reads nothing new).
  "$BIN" run --config "$K/gridwatch.yaml" --events "$K/events.ndjson" --quiet \
    --checkpoint-dir "$K/state" --checkpoint-interval 1h 2>&1 >/dev/null | grep -E 'resuming|restored' | sed 's/^/restore: /'
done
ls -l "$K/state"

# Reload of the city's 31 rules while a file run goes at full speed: SIGHUP every 0.5 s;
# the source is not read while a swap runs, so its time is the pause it adds.
for r in $(seq "$ROUNDS"); do
  rm -rf "$WORK/out"; mkdir -p "$WORK/out"
  "$BIN" run --config "$CITY" --events "$WORK/city24h.ndjson" --quiet --no-cases \
    --alerts-out "$WORK/out/alerts.ndjson" --dead-letter-out "$WORK/out/dead.ndjson" >/dev/null 2>"$WORK/out/reload.log" &
  pid=$!
  sleep 1
  for _ in 1 2 3 4 5; do kill -HUP "$pid" 2>/dev/null || true; sleep 0.5; done
  wait "$pid"
  grep -o 'reloaded (swap: [0-9]* ms.*' "$WORK/out/reload.log" | sed 's/^/reload: /'
done
