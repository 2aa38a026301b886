#!/usr/bin/env python3
"""Flink SQL MATCH_RECOGNIZE version of gridwatch's two-step sequence rules.

Variants (--variant):
  pressure   heating-pressure-collapse over all sensor rows, skip-till-next-match written
             as PATTERN (H X*? L) with X undefined (= any row of the device in between).
  prefilter  same rule, rows prefiltered to metric = 'pressure_kpa', PATTERN (H Y*? L).
  strict     same rule, literal PATTERN (H L) (strict contiguity) on all sensor rows,
             for comparison only.
  all        bench-sequence-drop (examples/bench/sequence/two_step.yaml): H = any sensor
             reading, L = later reading of the same device with value < H.value * 0.8,
             within 5 minutes, PATTERN (H X*? L).

Prints one JSON line with the result and the wall time from job submission to completion.
"""
import argparse
import json
import sys
import time

from pyflink.table import EnvironmentSettings, TableEnvironment

import os

SRC = os.environ.get("CITY_NDJSON", "/tmp/city6h.ndjson")

DDL = f"""
CREATE TABLE city (
  `stream`   STRING,
  ts         BIGINT,
  device_id  STRING,
  kind       STRING,
  metric     STRING,
  `value`    DOUBLE,
  rowtime AS TO_TIMESTAMP_LTZ(COALESCE(ts, CAST(0 AS BIGINT)), 3),  -- non-numeric ts -> NULL -> 0 (row filtered below; WatermarkAssigner rejects NULL)
  WATERMARK FOR rowtime AS rowtime - INTERVAL '5' SECOND
) WITH (
  'connector' = 'filesystem',
  'path' = '{SRC}',
  'format' = 'json',
  'json.ignore-parse-errors' = 'true',
  'json.fail-on-missing-field' = 'false'
)
"""

SENSOR_VIEW = """
CREATE TEMPORARY VIEW sensor AS
SELECT device_id, metric, `value`, rowtime
FROM city
WHERE `stream` = 'sensor' AND ts IS NOT NULL AND device_id IS NOT NULL AND `value` IS NOT NULL
"""

PRESSURE_VIEW = """
CREATE TEMPORARY VIEW pressure AS
SELECT device_id, metric, `value`, rowtime FROM sensor WHERE metric = 'pressure_kpa'
"""

MATCH = {
    "pressure": """
SELECT device_id, CAST(h_ts AS STRING) AS h_ts, h_value, CAST(l_ts AS STRING) AS l_ts, l_value
FROM sensor
MATCH_RECOGNIZE (
  PARTITION BY device_id
  ORDER BY rowtime
  MEASURES
    H.rowtime AS h_ts, H.`value` AS h_value,
    L.rowtime AS l_ts, L.`value` AS l_value
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (H X*? L) WITHIN INTERVAL '5' MINUTE
  DEFINE
    H AS H.metric = 'pressure_kpa',
    L AS L.metric = 'pressure_kpa' AND L.`value` < H.`value` * 0.8
)
""",
    "prefilter": """
SELECT device_id, CAST(h_ts AS STRING) AS h_ts, h_value, CAST(l_ts AS STRING) AS l_ts, l_value
FROM pressure
MATCH_RECOGNIZE (
  PARTITION BY device_id
  ORDER BY rowtime
  MEASURES
    H.rowtime AS h_ts, H.`value` AS h_value,
    L.rowtime AS l_ts, L.`value` AS l_value
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (H Y*? L) WITHIN INTERVAL '5' MINUTE
  DEFINE
    H AS H.metric = 'pressure_kpa',
    L AS L.metric = 'pressure_kpa' AND L.`value` < H.`value` * 0.8
)
""",
    "strict": """
SELECT device_id, CAST(h_ts AS STRING) AS h_ts, h_value, CAST(l_ts AS STRING) AS l_ts, l_value
FROM sensor
MATCH_RECOGNIZE (
  PARTITION BY device_id
  ORDER BY rowtime
  MEASURES
    H.rowtime AS h_ts, H.`value` AS h_value,
    L.rowtime AS l_ts, L.`value` AS l_value
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (H L) WITHIN INTERVAL '5' MINUTE
  DEFINE
    H AS H.metric = 'pressure_kpa',
    L AS L.metric = 'pressure_kpa' AND L.`value` < H.`value` * 0.8
)
""",
    # Baseline without MATCH_RECOGNIZE: read + parse + filter + count the sensor rows
    # (the window drops late rows, like the CEP operator does).
    "scan": """
SELECT COUNT(*) AS n_matches, COUNT(DISTINCT device_id) AS n_devices,
       MIN(device_id) AS first_device, MAX(device_id) AS last_device
FROM sensor
GROUP BY TUMBLE(rowtime, INTERVAL '1' DAY)
""",
    # Diagnostic only (cross-check against reference_count.py): every match of "all".
    "all_rows": """
SELECT device_id, CAST(h_ts AS STRING) AS h_ts, h_value, CAST(l_ts AS STRING) AS l_ts, l_value
FROM sensor
MATCH_RECOGNIZE (
  PARTITION BY device_id
  ORDER BY rowtime
  MEASURES
    H.rowtime AS h_ts, H.`value` AS h_value,
    L.rowtime AS l_ts, L.`value` AS l_value
  ONE ROW PER MATCH
  AFTER MATCH SKIP PAST LAST ROW
  PATTERN (H X*? L) WITHIN INTERVAL '5' MINUTE
  DEFINE
    L AS L.`value` < H.`value` * 0.8
)
""",
    # The bench variant can have many matches: count them inside Flink with a one-day
    # event-time window on MATCH_ROWTIME() (append-only, one row at end of input), so the
    # Python side does not have to pull every match through the gateway.
    "all": """
SELECT COUNT(*) AS n_matches, COUNT(DISTINCT device_id) AS n_devices,
       MIN(device_id) AS first_device, MAX(device_id) AS last_device
FROM (
  SELECT device_id, l_rt
  FROM sensor
  MATCH_RECOGNIZE (
    PARTITION BY device_id
    ORDER BY rowtime
    MEASURES
      H.rowtime AS h_ts, L.rowtime AS l_ts, MATCH_ROWTIME() AS l_rt
    ONE ROW PER MATCH
    AFTER MATCH SKIP PAST LAST ROW
    PATTERN (H X*? L) WITHIN INTERVAL '5' MINUTE
    DEFINE
      L AS L.`value` < H.`value` * 0.8
  )
)
GROUP BY TUMBLE(l_rt, INTERVAL '1' DAY)
""",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=sorted(MATCH), default="pressure")
    ap.add_argument("--parallelism", type=int, default=2)
    ap.add_argument("--print-sql", action="store_true")
    ap.add_argument("--path", default=SRC, help="file or directory to read (default: %(default)s)")
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--dump", help="write every result row (tab-separated) to this file")
    args = ap.parse_args()

    t_setup = time.time()
    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = env.get_config()
    conf.set("parallelism.default", str(args.parallelism))
    conf.set("pipeline.name", f"match_recognize-{args.variant}-p{args.parallelism}")
    env.execute_sql(DDL.replace(f"'path' = '{SRC}'", f"'path' = '{args.path}'"))
    env.execute_sql(SENSOR_VIEW)
    env.execute_sql(PRESSURE_VIEW)
    sql = MATCH[args.variant]
    if args.print_sql:
        print(DDL, SENSOR_VIEW, PRESSURE_VIEW, sql, sep="\n", file=sys.stderr)
    if args.explain:
        print(env.explain_sql(sql), file=sys.stderr)

    t0 = time.time()  # job submission
    result = env.execute_sql(sql)
    rows = []
    with result.collect() as it:
        for r in it:
            rows.append(tuple(r))
    t1 = time.time()  # last result received, job finished
    # collect() returns only after the job has finished (bounded source, final
    # watermark); the local MiniCluster is shut down by then, so no status query.
    status = "FINISHED"

    out = {
        "variant": args.variant,
        "parallelism": args.parallelism,
        "seconds": round(t1 - t0, 3),
        "setup_seconds": round(t0 - t_setup, 3),
        "job_status": status,
    }
    if args.variant in ("all", "scan"):
        # one row per 1-day window (the data starts 0.75 s before midnight UTC, so
        # "scan" has two windows); sum the counts. devices = max per window (all
        # devices are in the big window).
        out.update(matches=sum(r[0] for r in rows), devices=max((r[1] for r in rows), default=0),
                   window_rows=len(rows),
                   first_device=min((r[2] for r in rows), default=None),
                   last_device=max((r[3] for r in rows), default=None))
    else:
        out["matches"] = len(rows)
        out["match_devices"] = sorted({r[0] for r in rows})
        out["match_rows"] = [[str(x) for x in r] for r in rows][:20]
    if args.dump:
        with open(args.dump, "w") as f:
            for r in rows:
                f.write("\t".join(str(x) for x in r) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
