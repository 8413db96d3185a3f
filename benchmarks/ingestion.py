"""Ingestion-log parse + load throughput for 1 M records (issue "Sources I").

    python benchmarks/ingestion.py [--records 1000000]

Simulates a day of job logs (`simulate-logs`, 0.5 % broken records) into a temporary landing
directory, then measures, in the same run:
* ours: `load_window` over the whole day as one backfill run does it: list, parse and validate every
  file, index hours, replace the window (upsert), quarantine, mark processed, commit;
* parse floor: `json.loads` of every file and nothing else;
* load floor: a bare `COPY` of the already-normalised rows into an identical empty table.
Appends a row to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from common import append_result, scratch_database

from metrics_pipeline.dev.simulate_logs import simulate
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import BOM, ParseOptions, parse_file
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse import migrate, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)
BENCH_DB = "metrics_bench_ingestion"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with scratch_database(BENCH_DB) as dsn:
        run(dsn, args)


def run(dsn: str, args: argparse.Namespace) -> None:
    migrate.migrate(Warehouse(dsn, "metrics"))
    migrate.migrate(Warehouse(dsn, "bench_ref"))

    with tempfile.TemporaryDirectory() as tmp:
        zone = LocalLanding(Path(tmp))
        t0 = time.perf_counter()
        stats = simulate(zone, DAY, DAY + timedelta(days=1), jobs_per_hour=args.records // 24, seed=1, bad_rate=0.005)
        print(f"simulated {stats.records:,} records in {stats.files} files ({time.perf_counter() - t0:.1f} s)")
        objects = zone.list()
        blobs = [zone.read(o.key) for o in objects]
        size_mb = sum(map(len, blobs)) / 1e6

        t0 = time.perf_counter()
        for blob in blobs:
            text = blob[len(BOM):] if blob.startswith(BOM) else blob
            if text.lstrip()[:1] == b"[":
                json.loads(text)
            else:
                for line in text.split(b"\n"):
                    if line.strip():
                        try:
                            json.loads(line)
                        except ValueError:
                            pass
        parse_floor = time.perf_counter() - t0

        options = ParseOptions(now=DAY + timedelta(days=2))
        t0 = time.perf_counter()
        result = ingestion_load.load_window(Warehouse(dsn, "metrics"), zone, DAY, DAY + timedelta(days=1), options)
        ours = time.perf_counter() - t0

        t0 = time.perf_counter()
        parsed = [parse_file(blob, o.key, options) for blob, o in zip(blobs, objects)]
        parse_only = time.perf_counter() - t0
        rows = [tuple(r[c] for c in ingestion_load.COLUMNS) for p in parsed for r in p.accepted]
        del parsed

    with psycopg.connect(dsn, autocommit=True) as conn:
        partitioning.ensure_partitions(conn, "bench_ref", "ingestion_runs", DAY, DAY + timedelta(days=1))
        unique = list({tuple(r[ingestion_load.COLUMNS.index(c)] for c in ingestion_load.NATURAL_KEY): r for r in rows}.values())
        t0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
            f"COPY bench_ref.ingestion_runs ({', '.join(ingestion_load.COLUMNS)}) FROM STDIN"
        ) as copy:
            for row in unique:
                copy.write_row(row)
        copy_floor = time.perf_counter() - t0

    n = result.read
    assert n == stats.records and result.read == result.loaded + result.quarantined
    print(f"ours      : {ours:6.2f} s  {n / ours:10,.0f} records/s end to end "
          f"(parse+validate alone {parse_only:.2f} s, {n / parse_only:,.0f} records/s); "
          f"{result.rows:,} runs, {result.quarantined:,} quarantined, {size_mb:.0f} MB")
    print(f"floors    : json.loads only {parse_floor:.2f} s ({n / parse_floor:,.0f} records/s), "
          f"bare COPY of the rows {copy_floor:.2f} s ({len(unique) / copy_floor:,.0f} rows/s); "
          f"sum {parse_floor + copy_floor:.2f} s")
    if not args.no_write:
        append_result(
            "ingestion logs", f"{n:,} records, {len(objects)} files, {size_mb:.0f} MB, 0.5 % bad",
            f"{n / ours:,.0f} records/s end to end (parse+validate {n / parse_only:,.0f}/s)",
            f"json.loads {n / parse_floor:,.0f}/s + bare COPY {len(unique) / copy_floor:,.0f}/s "
            f"= {n / (parse_floor + copy_floor):,.0f}/s",
            f"{(parse_floor + copy_floor) / ours:.2f} x",
        )


if __name__ == "__main__":
    main()
