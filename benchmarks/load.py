"""Loader throughput vs a bare COPY of the same rows, measured in the same run (SPEC §8 "Load").

    python benchmarks/load.py [--points 2000000] [--series 50] [--repeat 3]

Both sides write to a day-partitioned `points` table with the same primary key and CHECK, on the
same server, after a CHECKPOINT, into an empty window:
* reference: `COPY ... FROM STDIN (FORMAT BINARY)` of prebuilt rows (series ids already known)
  into the parent table, then COMMIT. Building the payload is not timed: this is the floor.
* loader: `load_points(frame)` end to end: validation, series registration, window delete,
  COPY, COMMIT.
Also reported: a re-load of the same window (replace: delete + insert), which is what a late-data
re-run costs. Results are printed and appended to docs/benchmarks.md.

Uses METRICS_PIPELINE_DSN's server if set (a scratch database `metrics_bench` is created there),
otherwise the embedded PostgreSQL under .metrics_pipeline/bench-pg (durable settings, fsync on).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
from common import append_result, scratch_database

from metrics_pipeline.lib import points
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import migrate, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

START = datetime(2026, 1, 5, tzinfo=timezone.utc)
BENCH_DB = "metrics_bench"


def make_frame(n_points: int, n_series: int) -> pd.DataFrame:
    per = n_points // n_series
    step = timedelta(hours=1) / per
    ts = pd.date_range(START, periods=per, freq=pd.Timedelta(step))
    rng = np.random.default_rng(7)
    return points.points_frame([
        {"metric": "host_cpu_percent", "resource": f"host-{i:03d}", "labels": {"host": f"host-{i:03d}", "state": "total"},
         "unit": "percent", "ts": ts, "value": rng.gamma(2.0, 10.0, per)}
        for i in range(n_series)
    ])


def settle(conn: psycopg.Connection) -> None:
    """Same starting line for every timed step: statistics fresh, dirty pages flushed."""
    conn.execute("VACUUM ANALYZE bench_ref.points")
    conn.execute("VACUUM ANALYZE metrics.points")
    conn.execute("CHECKPOINT")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    with scratch_database(BENCH_DB) as dsn:
        run(dsn, args)


def run(dsn: str, args: argparse.Namespace) -> None:
    end = START + timedelta(hours=1)
    migrate.migrate(Warehouse(dsn, "metrics"))
    migrate.migrate(Warehouse(dsn, "bench_ref"))  # an identical table, index and CHECK in another schema
    frame = make_frame(args.points, args.series)
    n = len(frame)

    # The reference payload: same rows, series ids 1..N, built outside the timing.
    prepared = points.prepare(frame, source="host", start=START, end=end)
    payload = loader.copy_buffer(prepared.codes + 1, prepared.ts_us, prepared.values)

    with psycopg.connect(dsn, autocommit=True) as conn:
        partitioning.ensure_partitions(conn, "bench_ref", "points", START, end)

        def bare_copy() -> None:
            with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY bench_ref.points (series_id, ts, value) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                for chunk in payload:
                    copy.write(chunk)

        def load() -> loader.LoadResult:
            return loader.load_points(Warehouse(dsn), frame, source="host", start=START, end=end)

        copy_times, load_times, replace_times = [], [], []
        for _ in range(args.repeat):
            # Alternate which side goes first, so neither always runs right after the other's writes.
            conn.execute("TRUNCATE bench_ref.points, metrics.points")
            steps = [(copy_times, bare_copy), (load_times, load)]
            for times, fn in steps if len(copy_times) % 2 == 0 else reversed(steps):
                settle(conn)
                times.append(timed(fn))
            settle(conn)
            replace_times.append(timed(load))
        stored = conn.execute("SELECT count(*) FROM metrics.points").fetchone()[0]
        ref_stored = conn.execute("SELECT count(*) FROM bench_ref.points").fetchone()[0]
    assert stored == ref_stored == n, (stored, ref_stored, n)

    copy_s, load_s, replace_s = (statistics.median(t) for t in (copy_times, load_times, replace_times))
    copy_rate, load_rate, replace_rate = n / copy_s, n / load_s, n / replace_s
    ratio = load_rate / copy_rate
    print(f"points: {n:,} in {args.series} series, {args.repeat} repeats (median)")
    print(f"bare binary COPY : {copy_s:6.2f} s  {copy_rate:12,.0f} points/s")
    print(f"loader (new)     : {load_s:6.2f} s  {load_rate:12,.0f} points/s  ratio {ratio:.2f} x COPY")
    print(f"loader (replace) : {replace_s:6.2f} s  {replace_rate:12,.0f} points/s")

    if not args.no_write:
        append_result(
            "load", f"{n:,} points / {args.series} series",
            f"loader {load_rate:,.0f} pts/s (replace {replace_rate:,.0f})", f"bare COPY {copy_rate:,.0f} pts/s", f"{ratio:.2f} x",
        )


if __name__ == "__main__":
    main()
