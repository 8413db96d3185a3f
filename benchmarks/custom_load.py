"""Pushed measures into the warehouse: a run of the hour in progress at minute 5 and at minute 55.

Issue 18's leftover. The custom sensor requests a run of the current hour every 30 s while items
arrive. Before, each run replaced the hour with everything its files held so far (a full reload),
so the run at minute 55 did eleven times the work of the run at minute 5 for the same 30 s of new
data, and at a busy tenant's rate it no longer fitted the 90 s from 202 to `v_points`. Now a run
loads what is new since the previous one (`lib/custom/incremental.py`).

    python benchmarks/custom_load.py [--rate 1000] [--batch 100] [--writers 2] [--minutes 5,55]
                                     [--every 30] [--no-write]

One tenant pushes `--rate` measures/s in batches of `--batch` (5 metrics x 20 shops x 2 regions,
`ts` up to 1 s before receipt) through `--writers` PushWriters (the API's processes; each has its
own file per minute), their clocks simulated, so an hour is written in a minute or two. The
sensor's runs are simulated too: every `--every` s of the hour, `load_measures(..., incremental=
True)` with `now` = that moment, as the asset runs it; each run's wall time is measured. At each
minute of `--minutes` the run that falls there is reported (after), and, right after it on the same
files, a full reload of the hour is timed: what every run did before, and the reference. The full
reload must change nothing (`points_changed` = 0): the incremental runs left exactly what it
leaves. Landing files go to /dev/shm when it exists (the reads are from the page cache either way;
fsync'd writes on this VM's disk would only slow the set-up).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import append_result, replace_section, scratch_database

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import Measure
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse

BENCH_DB = "metrics_bench_custom_load"
METRICS = ["orders_processed", "queue_depth", "payment_latency_ms", "cart_size", "stock_level"]
SHOPS = [f"shop-{i:02d}" for i in range(20)]
TENANT = "busy"


class Clock:
    """The writers' clock: epoch seconds, moved by the benchmark."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_until(writers: list[PushWriter], clock: Clock, rng: random.Random, until: float, rate: float,
                batch: int, sent: list[int]) -> None:
    """Batches of `batch` measures at `rate`/s up to `until`, each through the next writer."""
    step = batch / rate
    while clock.now + step <= until:
        clock.now += step
        received = datetime.fromtimestamp(clock.now, timezone.utc)
        items = [Measure(rng.choice(METRICS), round(rng.uniform(0, 1000), 3),
                         received - timedelta(microseconds=rng.randrange(1_000_000)),
                         {"shop": rng.choice(SHOPS), "region": rng.choice(("eu", "us")), "env": "prod"})
                 for _ in range(batch)]
        writers[sent[0] % len(writers)].write(TENANT, "measures", items)
        sent[0] += 1
    clock.now = until


def run(rate: float, batch: int, writers_n: int, minutes: list[int], every: float, dsn: str, landing: Path) -> dict:
    warehouse, zone = Warehouse(dsn), LocalLanding(landing)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    end = hour + timedelta(hours=1)
    clock, rng, sent = Clock(hour.timestamp()), random.Random(7), [0]
    config = ApiConfig(landing=str(landing), spool_dir=str(landing.parent / "spool"))
    runs: list[tuple[float, float, int, str]] = []  # (minute, seconds, new items, mode)
    marks: dict[int, dict] = {}
    writers = [PushWriter(config, clock=clock) for _ in range(writers_n)]
    try:
        tick = every
        while tick <= max(minutes) * 60:
            write_until(writers, clock, rng, hour.timestamp() + tick, rate, batch, sent)
            now = hour + timedelta(seconds=tick)
            t0 = time.perf_counter()
            result = custom_load.load_measures(warehouse, zone, hour, end, now=now, incremental=True)
            seconds = time.perf_counter() - t0
            runs.append((tick / 60, seconds, result.new_items, result.mode))
            if tick / 60 in minutes:
                t0 = time.perf_counter()
                full = custom_load.load_measures(warehouse, zone, hour, end, now=now)
                full_s = time.perf_counter() - t0
                marks[int(tick / 60)] = {"incremental_s": seconds, "new_items": result.new_items, "mode": result.mode,
                                         "full_s": full_s, "items": full.read, "points": full.rows,
                                         "changed": full.points.changed, "incremental_rows": result.rows}
                print(f"minute {tick / 60:g}: {full.read:,} items in the hour; incremental run {seconds:.2f} s "
                      f"({result.new_items:,} new, {result.mode}); full reload {full_s:.2f} s "
                      f"(points changed by it: {full.points.changed})", flush=True)
            tick += every
    finally:
        for writer in writers:
            writer.close()
    return {"runs": runs, "marks": marks, "hour": hour}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=1000, help="measures per second of the busy tenant")
    parser.add_argument("--batch", type=int, default=100, help="measures per batch")
    parser.add_argument("--writers", type=int, default=2, help="API processes (each its own files)")
    parser.add_argument("--minutes", default="5,55", help="minutes of the hour to time a run and a full reload at")
    parser.add_argument("--every", type=float, default=30, help="seconds between the sensor's runs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    minutes = sorted(int(m) for m in args.minutes.split(","))
    work = Path(tempfile.mkdtemp(prefix="custom-load-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
    try:
        with scratch_database(BENCH_DB) as dsn:
            migrate.migrate(Warehouse(dsn))
            out = run(args.rate, args.batch, args.writers, minutes, args.every, dsn, work / "landing")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    runs, marks = out["runs"], out["marks"]
    incremental = [s for _, s, _, mode in runs if mode == "incremental"]
    fulls = sum(1 for *_, mode in runs if mode != "incremental")
    lo, hi = marks[minutes[0]], marks[minutes[-1]]
    today = f"{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} cores"
    data = (f"one tenant at {args.rate:,.0f} measures/s (batches of {args.batch}, {args.writers} API processes), "
            f"a run every {args.every:g} s")
    rows = "\n".join(
        f"| minute {m} | {v['items']:,} | {v['full_s']:.2f} s | {v['incremental_s']:.2f} s ({v['new_items']:,} new items) "
        f"| {v['full_s'] / v['incremental_s']:.0f} x | {v['changed']} |" for m, v in sorted(marks.items()))
    text = (f"Measured {today} with `python benchmarks/custom_load.py --rate {args.rate:g}` ({data}; "
            f"{len(runs)} runs up to minute {minutes[-1]}: {len(incremental)} incremental, {fulls} full (the first, "
            f"with no record yet); incremental runs p50 {statistics.median(incremental):.2f} s, "
            f"max {max(incremental):.2f} s).\n\n"
            "| run at | items in the hour | before: full reload (the reference) | after: incremental run "
            "| before / after | points the full reload changed |\n|---|---|---|---|---|---|\n" + rows)
    print(text)
    if args.no_write:
        return
    replace_section("custom_load", text)
    append_result("custom load", data,
                  f"run at minute {minutes[0]} {lo['incremental_s']:.2f} s, minute {minutes[-1]} {hi['incremental_s']:.2f} s",
                  f"full reload at minute {minutes[0]} {lo['full_s']:.2f} s, minute {minutes[-1]} {hi['full_s']:.2f} s",
                  f"{hi['full_s'] / hi['incremental_s']:.0f} x at minute {minutes[-1]}")


if __name__ == "__main__":
    main()
