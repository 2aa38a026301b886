#!/usr/bin/env python3
"""Plots the scaling curves of `scripts/bench_curves.sh` (bench/results/*.jsonl) as PNGs
next to BENCHMARKS.md (bench/*.png). Needs matplotlib (`pip install matplotlib`)."""

import json
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
OUT = ROOT / "bench"


def load(name):
    path = RESULTS / f"{name}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save(fig, name):
    fig.tight_layout()
    fig.savefig(OUT / f"{name}.png", dpi=110)
    plt.close(fig)


def rate(r):
    return r["max_rate"]["events_per_s"] / 1e6


def rules():
    runs = load("rules")
    x = [r["rules"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [rate(r) for r in runs], "o-", label="full pipeline")
    base = rate(runs[0])
    ax.plot(x, [base * 0.25] * len(x), "--", color="gray", label="target: 25 % of the 1-rule rate")
    ax.set_xscale("log")
    ax.set_xlabel("threshold rules on the sensor stream")
    ax.set_ylabel("M events/s (2 workers)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs number of rules")
    ax.legend()
    save(fig, "rules")


def keys():
    runs = load("keys")
    x = [r["max_rate"]["keys_with_state"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [rate(r) for r in runs], "o-")
    ax.set_xscale("log")
    ax.set_xlabel("keys with state (example city pack, --scale 1..1000)")
    ax.set_ylabel("M events/s (2 workers)")
    ax.set_ylim(bottom=0)
    ax.set_title("Throughput vs number of keys")
    save(fig, "keys")


def memory():
    runs = load("memory")
    x = [r["max_rate"]["keys_with_state"] for r in runs]
    # Older runs have no rss_engine_mb: their peak included the dataset's generation.
    y = [r.get("rss_engine_mb") or (r["rss_peak_mb"] - r["rss_dataset_mb"]) for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, y, "o-")
    ax.set_xscale("log")
    ax.set_xlabel("keys with threshold/for state")
    ax.set_ylabel("engine memory: peak RSS while running minus the dataset (MB)")
    ax.set_title("Memory vs number of keys")
    save(fig, "memory")


def workers():
    runs = load("workers")
    labels = [f'{r["workers"]} w, {r.get("decoders", 0)} d' for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(labels, [rate(r) for r in runs], label="full pipeline")
    ax.plot(
        labels,
        [r["parse_baseline_events_per_s"] / 1e6 for r in runs],
        "o--",
        color="black",
        label="parse-only baseline (as many threads)",
    )
    ax.set_xlabel("partition workers (w), decoder threads (d; 0 = on the ingest thread)")
    ax.set_ylabel("M events/s")
    ax.set_title("Example city, 2 M events")
    ax.legend()
    save(fig, "workers")


if __name__ == "__main__":
    for f in (rules, keys, memory, workers):
        f()
    print("wrote", ", ".join(str(p.relative_to(ROOT)) for p in sorted(OUT.glob("*.png"))))
