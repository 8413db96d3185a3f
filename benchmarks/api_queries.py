"""The API's read endpoints under 8 concurrent clients, on the BI benchmark's year of data (issue 19).

    python benchmarks/api_queries.py [--seconds 10] [--clients 8] [--workers 2] [--no-write]

Builds the warehouse of `benchmarks/bi_queries.py` (200 series: a year of 1 h and 1 d rollups, 90
days of 5 m, 7 days of raw points at 60 s, 3,000 alerts) plus a year of hourly series health (its
daily sums too) and the monthly sketches, then
starts `metrics-pipeline api` as operators run it (`--workers` uvicorn processes) and creates a
read key for tenant `acme` (10 hosts, a third of the CloudWatch resources). `--clients` threads
send, for `--seconds` per endpoint, the requests of REQUESTS: a script or dashboard asking for the
current CPU of every host, an hour / a day / a month / a year of history at the steps a chart asks
for (tiers raw, 5 m, 1 h, 1 d, and a p95 over 6-hour steps that merges hourly sketches), summaries
over an hour (raw), a day (hourly rollups) and 30 days (daily rollups), and alerts. Parameters vary
per request (host, end of the window within the last 3 days). p50/p95 per endpoint, end to end
(HTTP, JSON), against the target p95 < 50 ms.

Reference in the same run: the same requests answered by the library functions the endpoints call
(`lib/query.py`), in this process, one at a time, no HTTP: what the server adds. The key's
request rate limit is raised for the run (the default 200/s per key would answer 429s).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import psycopg
from api_ingest import start_api
from bi_queries import HOSTS, NOW, SCHEMA, build, make_series
from common import append_result, replace_section, scratch_database

from metrics_pipeline.lib import api_keys, query, rollups
from metrics_pipeline.lib.warehouse import migrate, partitioning
from metrics_pipeline.lib.warehouse.db import ReadPool, Warehouse
from metrics_pipeline.lib.warehouse.retention import RetentionConfig

BENCH_DB = "metrics_bench_api_queries"
TARGET_MS = 50.0
YEAR_TARGET_MS = 500.0
TENANT = "acme"
ACME_HOSTS = [h for i, h in enumerate(HOSTS) if i % 3 == 0]  # make_series: account prod-eu -> tenant acme


@dataclass(frozen=True)
class Request:
    name: str
    what: str
    path: str
    params: Callable[[random.Random], dict]
    target_ms: float = TARGET_MS  # SPEC §12: series, latest, alerts, query/summary up to 7 days; a year 500 ms


def _end(rng: random.Random) -> datetime:
    """The end of a window: on the hour, within the 3 days before the data's end (a chart's range)."""
    return NOW - timedelta(hours=rng.randrange(0, 72))


def _window(length: timedelta, *, aligned: bool = True) -> Callable[[random.Random], dict]:
    def params(rng: random.Random) -> dict:
        end = _end(rng) - (timedelta(0) if aligned else timedelta(seconds=rng.randrange(60, 3000)))
        return {"from": (end - length).isoformat(), "to": end.isoformat()}
    return params


def _host(rng: random.Random) -> dict:
    return {"resource": rng.choice(ACME_HOSTS)}


REQUESTS = [
    Request("series", "the tenant's CPU series (filter lists)", "series", lambda r: {"metric": "host_cpu_percent"}),
    Request("latest_cpu", "latest CPU of every host of the tenant", "latest", lambda r: {"metric": "host_cpu_percent"}),
    Request("history_1h_raw", "one host's CPU, an hour at 60 s (raw)", "query",
            lambda r: {"metric": "host_cpu_percent", **_host(r), "step": "60", **_window(timedelta(hours=1))(r)}),
    Request("history_24h_5m_p95", "one host's CPU p95, a day at 5 min (5 m tier)", "query",
            lambda r: {"metric": "host_cpu_percent", **_host(r), "step": "5m", "stat": "p95",
                       **_window(timedelta(days=1))(r)}),
    Request("history_7d_6h_p95", "one host's CPU p95, a week at 6 h (hourly sketches merged)", "query",
            lambda r: {"metric": "host_cpu_percent", **_host(r), "step": "6h", "stat": "p95",
                       **_window(timedelta(days=7))(r)}),
    Request("history_7d_1h_all", "every host's CPU, 7 days at 1 h (10 series x 168 steps)", "query",
            lambda r: {"metric": "host_cpu_percent", "step": "1h", **_window(timedelta(days=7))(r)}),
    Request("history_1y_1d_max", "one host's CPU max, a year at 1 day (1 d tier)", "query",
            lambda r: {"metric": "host_cpu_percent", **_host(r), "step": "1d", "stat": "max",
                       "from": (NOW.replace(hour=0) - timedelta(days=365)).isoformat(),
                       "to": NOW.replace(hour=0).isoformat()}, YEAR_TARGET_MS),
    Request("summary_1h_raw", "one host's summary, the last ~hour, unaligned (raw, exact)", "summary",
            lambda r: {**_host(r), **_window(timedelta(hours=1), aligned=False)(r)}),
    Request("summary_24h_all", "every host's CPU summary, a day of whole hours (1 h tier)", "summary",
            lambda r: {"metric": "host_cpu_percent", **_window(timedelta(days=1))(r)}),
    Request("summary_7d_all", "every host's CPU summary, 7 days of whole hours (1 h tier)", "summary",
            lambda r: {"metric": "host_cpu_percent", **_window(timedelta(days=7))(r)}),
    Request("summary_1y_all", "every host's CPU summary, a year of whole days (1 d tier)", "summary",
            lambda r: {"metric": "host_cpu_percent", "from": (NOW.replace(hour=0) - timedelta(days=365)).isoformat(),
                       "to": NOW.replace(hour=0).isoformat()}, YEAR_TARGET_MS),
    Request("alerts_firing", "the tenant's firing alerts", "alerts", lambda r: {}),
    Request("alerts_week", "alerts of the last 7 days, any state", "alerts",
            lambda r: {"state": "any", "since": (NOW - timedelta(days=7)).isoformat(), "limit": "200"}),
]


TABLES = ["series", "points", "rollup_5m", "rollup_1h", "rollup_1d", "sla_hourly", "sla_daily", "alerts",
          "series_health_hourly", "rollup_1mo_sketch"]


def add_health(conn: psycopg.Connection, days: int = 365) -> int:
    """Hourly series health for the last `days` days (a year, as the rollups: it is kept 730 days),
    complete hours, some time above thresholds; and its daily sums, as the daily rollup's refresh
    writes them (lib/rollups/sql/health_daily.sql)."""
    start = NOW - timedelta(days=days)
    partitioning.ensure_partitions(conn, SCHEMA, "series_health_hourly", start, NOW)
    conn.execute(f"""
        INSERT INTO {SCHEMA}.series_health_hourly (series_id, bucket, interval_s, expected, received, completeness,
            no_data, max_gap_s, warning_threshold, critical_threshold, above_warning_s, above_critical_s, computed_at)
        SELECT s.series_id, h.hour, 60, 60, 58 + (random() * 2)::int, NULL, false, 60 + 120 * random(),
               CASE WHEN s.metric = 'host_cpu_percent' THEN 80 END, CASE WHEN s.metric = 'host_cpu_percent' THEN 95 END,
               CASE WHEN s.metric = 'host_cpu_percent' THEN (random() ^ 8 * 600) END,
               CASE WHEN s.metric = 'host_cpu_percent' THEN (random() ^ 16 * 120) END, h.hour + interval '1 hour'
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') h(hour)
        CROSS JOIN {SCHEMA}.series s ORDER BY h.hour""", {"start": start, "end": NOW})
    conn.execute(f"UPDATE {SCHEMA}.series_health_hourly SET completeness = least(1, received::float8 / expected)")
    days_start, days_end = start.replace(hour=0), NOW.replace(hour=0)
    partitioning.ensure_partitions(conn, SCHEMA, "series_health_daily", days_start, days_end)
    conn.execute(rollups._read("health_daily.sql").replace("{{schema}}", SCHEMA), {"start": days_start, "end": days_end})
    conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.series_health_hourly")
    conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.series_health_daily")
    return conn.execute(f"SELECT count(*) FROM {SCHEMA}.series_health_hourly").fetchone()[0]


def add_month_sketches(conn: psycopg.Connection) -> int:
    """The monthly sketches of the year of daily ones, as the daily rollup's refresh writes them
    (lib/rollups `month_sketches`; `build` writes the tiers' rows directly)."""
    first, after = rollups.month_window(NOW - timedelta(days=400), NOW)
    partitioning.ensure_partitions(conn, SCHEMA, "rollup_1mo_sketch", first, after)
    with conn.transaction():
        written = rollups.month_sketches(conn, SCHEMA, first, after)
    conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.rollup_1mo_sketch")
    return written


def drive(url: str, token: str, request: Request, clients: int, seconds: float) -> tuple[list[float], dict[int, int], int]:
    """`clients` threads sending `request` for `seconds`; latencies (ms), statuses, items of the answers.

    Each client is a keep-alive `http.client` connection: the load generator shares the machine's two
    cores with the server and PostgreSQL, and `requests` costs about twice the CPU per request."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sizes: list[int] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds
    address = urllib.parse.urlsplit(url)

    def client(n: int) -> None:
        rng = random.Random(n)
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        headers = {"Authorization": f"Bearer {token}"}
        seen = False
        while time.monotonic() < stop:
            target = f"/api/v1/{request.path}?{urllib.parse.urlencode(request.params(rng))}"
            t0 = time.perf_counter()
            conn.request("GET", target, headers=headers)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - t0) * 1000
            # Only a client's first answer is parsed (for its size): parsing every one took the CPU
            # the server is measured on (a real dashboard runs on another machine).
            size = _size(json.loads(body)) if response.status == 200 and not seen else None
            seen = seen or size is not None
            with lock:
                latencies.append(elapsed)
                statuses[response.status] = statuses.get(response.status, 0) + 1
                if size is not None:
                    sizes.append(size)
        conn.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, statuses, int(np.median(sizes)) if sizes else 0


def _size(body: dict) -> int:
    if "items" in body:
        return len(body["items"])
    if "series" in body:
        return sum(len(s.get("points", [1])) for s in body["series"])
    return 0


def reference(warehouse: ReadPool, request: Request, runs: int) -> list[float]:
    """The same requests through lib/query.py in this process (pooled connections, as the API's), one at a time."""
    retention = RetentionConfig()
    rng = random.Random(99)
    out = []
    for _ in range(runs):
        params = request.params(rng)
        filters = query.Filters(metric=[params["metric"]] if "metric" in params else [],
                                resource=[params["resource"]] if "resource" in params else [])
        t0 = time.perf_counter()
        if request.path in ("series", "latest"):
            getattr(query, request.path)(warehouse, TENANT, filters)
        elif request.path == "query":
            query.history(warehouse, TENANT, filters, start=datetime.fromisoformat(params["from"]),
                          end=datetime.fromisoformat(params["to"]), step=query.parse_step(params["step"]),
                          statistic=params.get("stat", "avg"), now=NOW, retention=retention)
        elif request.path == "summary":
            query.summary(warehouse, TENANT, filters, start=datetime.fromisoformat(params["from"]),
                          end=datetime.fromisoformat(params["to"]), now=NOW, retention=retention)
        else:
            query.alerts(warehouse, TENANT, state=params.get("state", "firing"),
                         since=datetime.fromisoformat(params["since"]) if "since" in params else None)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of load per endpoint")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--no-write", action="store_true", help="do not write to docs/benchmarks.md")
    parser.add_argument("--built", metavar="DSN", help="a database this benchmark built before (kept, not rebuilt)")
    parser.add_argument("--sketch-cache-mb", type=int, default=64,
                        help="the API's sketch cache per worker (config/api.yaml sketch_cache_mb; 0: every read cold)")
    args = parser.parse_args()
    idle = "/".join(f"{x:.1f}" for x in os.getloadavg())  # before this run adds its own load

    with (contextlib.nullcontext(args.built) if args.built else scratch_database(BENCH_DB)) as dsn, \
            tempfile.TemporaryDirectory() as tmp:
        warehouse = Warehouse(dsn, SCHEMA)
        migrate.migrate(warehouse)
        with psycopg.connect(dsn, autocommit=True) as conn:
            t0 = time.perf_counter()
            if args.built:
                counts = {t: conn.execute(f"SELECT count(*) FROM {SCHEMA}.{t}").fetchone()[0] for t in TABLES}
            else:
                counts = build(conn, make_series())
                counts["series_health_hourly"] = add_health(conn)
                counts["rollup_1mo_sketch"] = add_month_sketches(conn)
            print(f"built in {time.perf_counter() - t0:.0f} s: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
        pool = ReadPool(warehouse)
        api_keys.create_tenant(warehouse, TENANT)
        token = api_keys.create_key(warehouse, TENANT, ["read"]).token
        # The key's request rate (default 200/s) is raised: this measures the reads, not the limiter.
        proc, url = start_api(dsn, Path(tmp) / "landing", Path(tmp), args.workers,
                              {"rate_limit": {"requests_per_second": 100_000}, "sketch_cache_mb": args.sketch_cache_mb})
        try:
            rows = []
            for request in REQUESTS:
                drive(url, token, request, args.clients, 1.0)  # warm-up: connections, plans, caches
                latencies, statuses, size = drive(url, token, request, args.clients, args.seconds)
                ref = reference(pool, request, 20)
                p50, p95 = np.percentile(latencies, [50, 95])
                rows.append((request, len(latencies), p50, p95, float(np.percentile(ref, 50)), statuses, size))
                print(f"{request.name:22s} {len(latencies):6d} req  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  "
                      f"library p50 {rows[-1][4]:6.1f} ms  {size:6d} items  statuses {statuses}", flush=True)
        finally:
            pool.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    table = ["| request | what | requests | p50 ms | p95 ms | library p50 ms | items/steps | target p95 | meets |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for request, n, p50, p95, ref, statuses, size in rows:
        bad = {s: c for s, c in statuses.items() if s != 200}
        table.append(f"| `{request.name}` | {request.what} | {n:,} | {p50:.1f} | {p95:.1f} | {ref:.1f} | {size:,} | "
                     f"{request.target_ms:.0f} ms | {'yes' if p95 < request.target_ms and not bad else 'NO'}"
                     f"{f' (statuses {bad})' if bad else ''} |")
    text = "\n".join(table)
    print(text)
    worst = max(rows, key=lambda r: r[3] / r[0].target_ms)
    missed = [r[0].name for r in rows if r[3] >= r[0].target_ms or set(r[5]) != {200}]
    data = (f"{counts['series']} series; 1 y of 1 h ({counts['rollup_1h']:,} rows) + 1 d, 90 d of 5 m "
            f"({counts['rollup_5m']:,} rows), 7 d raw, {counts['series_health_hourly']:,} health hours, "
            f"{counts['alerts']:,} alerts")
    if not args.no_write:
        replace_section("api_queries", f"Last run ({datetime.now().date()}, load average before the run {idle} on "
                        f"{os.cpu_count()} cores: other work shared the machine if it was above ~0.5; "
                        f"{args.clients} concurrent clients, "
                        f"{args.seconds:g} s per endpoint, `metrics-pipeline api --workers {args.workers}`, "
                        f"sketch cache {args.sketch_cache_mb} MiB a worker, tenant "
                        f"`{TENANT}`; {data}; p50/p95 end to end over HTTP; the library column is the same requests "
                        f"through lib/query.py in-process, one at a time):\n\n{text}")
        append_result("api queries", data,
                      f"{len(REQUESTS)} requests x {args.clients} clients, {args.workers} workers: worst "
                      f"{worst[0].name} p95 {worst[3]:.1f} ms (library p50 {worst[4]:.1f} ms); "
                      f"{len(missed)} miss: {', '.join(missed) or 'none'}",
                      f"p95 < {TARGET_MS:.0f} ms (up to 7 days), < {YEAR_TARGET_MS:.0f} ms (a year)",
                      f"{worst[3] / worst[0].target_ms:.2f} x target")


if __name__ == "__main__":
    sys.exit(main())
