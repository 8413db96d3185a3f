"""Dashboard queries through the BI views over a year of rollups for 200 series (SPEC §8 "BI queries", issue 17).

    python benchmarks/bi_queries.py [--runs 30 | --quick] [--explain] [--experiments]

Builds, with set-based SQL (this benchmark is about reads, not the rollup code path), what a year
of the pipeline leaves behind for 200 series: 110 host series (cpu, memory, filesystem, network;
labels host/account/region, a third with a `tenant`) and 90 CloudWatch series (EC2, RDS, ALB;
labels namespace/account/region/statistic/dimension, tenant per account):
* rollup_1h and rollup_1d for 365 days, rollup_5m for the last 90 days (SPEC retention), raw
  points for the last 7 days at 60 s (for v_latest), every row with a sparse sketch of realistic
  size, written in time order like the hourly refreshes write them;
* sla_daily and sla_hourly for 50 jobs x 365 days, and 3,000 alerts (25 still firing).
Then VACUUM ANALYZE, and creates two BI logins with `bi.ensure_role`: `metrics_bi` (every tenant)
and `metrics_bi_tenant` (restricted to RESTRICTED_TENANTS). Each query of QUERIES runs `--runs`
times (5 with `--quick`) as each BI login, with varying parameters (host, metric, tenant, time
window), sent as a BI tool sends them: text with the values inlined (ClientCursor), planned each
time. For a reference column, the superuser runs the same statements on the bare joins of the
tables (`bi_all_*`: the views without their tenant gate), to show what the views cost. BI_TOOL_QUERIES are
written the way Grafana, Metabase, Superset and psql users write them (issue 17). p50/p95 per query
and login against its target (p95 < 50 ms for dashboard queries, < 500 ms for whole-year
aggregates) are printed, the table is written into docs/benchmarks.md's BI section and one row
(the worst query relative to its target) is appended to the results table.

`--explain` prints EXPLAIN (ANALYZE, BUFFERS) of every query that misses, as the login that missed;
`--experiments` re-times the affected queries as each BI login after each change of EXPERIMENTS
(rewrites of a query the way docs/data-dictionary.md "Writing fast queries" advises, or candidate
index/view changes applied to the scratch database only), paired with the query as written.

The logins are cluster-wide roles: they stay on the benchmark's server (their grants and tenant
rows go with the scratch database); `--bi-role` / `--tenant-role` choose other names on a shared one.

Uses METRICS_PIPELINE_DSN's server if set, otherwise the embedded PostgreSQL under
.metrics_pipeline/bench-pg; the scratch database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
from common import append_result, replace_section, scratch_database
from psycopg.conninfo import make_conninfo

from metrics_pipeline.dev.simulate_logs import COMPANIES, SOURCES, ZONES
from metrics_pipeline.lib.warehouse import bi, migrate, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

BENCH_DB = "metrics_bench_bi"
SCHEMA = "metrics"
TARGET_MS = 50.0
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
TODAY = NOW.replace(hour=0)
HOSTS = [f"host-{i:03d}" for i in range(1, 31)]
ACCOUNTS = {"prod-eu": ("acme", ["eu-west-1", "eu-central-1"]), "prod-us": ("globex", ["us-east-1"]),
            "shared": (None, ["eu-west-1", "us-east-1"])}


# -- data ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Series:
    source: str
    metric: str
    resource: str
    labels: dict[str, str]
    unit: str
    base: float  # typical value
    amp: float  # daily swing
    cap: float  # ceiling (100 for percentages)
    samples_5m: int  # samples per 5-minute bucket (1 s host data is 300)
    bins: tuple[int, int, int]  # sketch bins per 5 m / 1 h / 1 d row


def make_series() -> list[Series]:
    """110 host series and 90 CloudWatch series, as the collectors would register them."""
    out: list[Series] = []
    for i, host in enumerate(HOSTS):
        account = list(ACCOUNTS)[i % 3]
        tenant, regions = ACCOUNTS[account]
        labels = {"host": host, "account": account, "region": regions[i % len(regions)], **({"tenant": tenant} if tenant else {})}
        out += [
            Series("host", "host_cpu_percent", host, labels, "percent", 20 + i, 15, 100, 30, (20, 60, 120)),
            Series("host", "host_memory_percent", host, labels, "percent", 45 + i, 5, 100, 30, (6, 15, 30)),
            Series("host", "host_filesystem_used_percent", host, {**labels, "mountpoint": "/"}, "percent", 30 + 2 * i, 1, 100, 30, (2, 4, 8)),
        ]
        if i < 20:
            out.append(Series("host", "host_network_receive_bytes_per_second", host, {**labels, "interface": "eth0"},
                              "bytes/s", 2e6 * (1 + i), 1.5e6 * (1 + i), 1e12, 30, (20, 60, 120)))
    cw = [("AWS/EC2", "aws_ec2_cpuutilization", "InstanceId", "i-{:017x}", "Average", 40, "percent", 35, 20, 100),
          ("AWS/EC2", "aws_ec2_cpuutilization", "InstanceId", "i-{:017x}", "Maximum", 10, "percent", 60, 30, 100),
          ("AWS/EC2", "aws_ec2_networkin", "InstanceId", "i-{:017x}", "Sum", 20, "bytes", 5e8, 3e8, 1e15),
          ("AWS/RDS", "aws_rds_cpuutilization", "DBInstanceIdentifier", "db-{:02d}", "Average", 10, "percent", 25, 15, 100),
          ("AWS/ApplicationELB", "aws_applicationelb_requestcount", "LoadBalancer", "app/lb-{:02d}/0f1e2d3c", "Sum", 10, "count", 3e4, 2e4, 1e12)]
    for namespace, metric, dim, fmt, stat, count, unit, base, amp, cap in cw:
        for j in range(count):
            account = list(ACCOUNTS)[j % 3]
            tenant, regions = ACCOUNTS[account]
            resource = fmt.format(j + 1 if "{:02d}" in fmt else 0xABC000 + j)
            labels = {"namespace": namespace, "account": account, "region": regions[j % len(regions)], "statistic": stat,
                      dim: resource, **({"tenant": tenant} if tenant else {})}
            out.append(Series("cloudwatch", metric, resource, labels, unit, base * (0.5 + j / count), amp, cap, 5, (5, 30, 80)))
    assert len(out) == 200, len(out)
    return out


ROLLUP_SQL = """
INSERT INTO {schema}.{table} (series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99)
SELECT sh.series_id, b.bucket, c.n, v.avg * c.n, v.avg - v.spread, v.avg + v.spread, v.avg, v.avg + 0.1 * v.spread,
       v.avg - 0.05 * v.spread, v.avg + 0.8 * v.spread, v.avg + 0.95 * v.spread
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '{width}', interval '{width}') AS b(bucket)
CROSS JOIN bench.shape sh
CROSS JOIN LATERAL (SELECT sh.samples_5m * {per5m} AS n) c
CROSS JOIN LATERAL (
    SELECT least(sh.cap, greatest(0, sh.base + sh.amp * sin(2 * pi() * extract(epoch FROM b.bucket) / 86400 + sh.phase)
                                      + 0.1 * sh.amp * (random() - 0.5))) AS avg,
           0.2 * sh.amp AS spread
) v
ORDER BY b.bucket, sh.series_id
"""

#: Every rollup row's sketch, in the tier's side table (migration 0013), as the rollups write them.
SKETCH_SQL = """
INSERT INTO {schema}.{table}_sketch (series_id, bucket, sketch_keys, sketch_counts)
SELECT sh.series_id, b.bucket, sh.keys_{tier}, sh.counts_{tier}
FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '{width}', interval '{width}') AS b(bucket)
CROSS JOIN bench.shape sh
ORDER BY b.bucket, sh.series_id
"""


def build(conn: psycopg.Connection, series: list[Series]) -> dict[str, int]:
    """Fill the warehouse tables; returns rows per table."""
    conn.execute("CREATE SCHEMA bench")
    conn.execute("""CREATE TABLE bench.shape (series_id integer, base float8, amp float8, cap float8, phase float8,
        samples_5m integer, keys_5m integer[], counts_5m bigint[], keys_1h integer[], counts_1h bigint[],
        keys_1d integer[], counts_1d bigint[])""")
    rng = np.random.default_rng(3)
    with conn.transaction():
        for s in series:
            series_id = conn.execute(
                f"INSERT INTO {SCHEMA}.series (source, metric, resource, labels, unit, first_seen) "
                "VALUES (%s, %s, %s, %s::jsonb, %s, %s) RETURNING series_id",
                (s.source, s.metric, s.resource, psycopg.types.json.Jsonb(s.labels), s.unit, NOW - timedelta(days=400)),
            ).fetchone()[0]
            sketches = []
            for tier, bins in zip(("5m", "1h", "1d"), s.bins):
                first = 1_000_000 + int(np.log(max(s.base, 1)) / 0.02) - bins // 2
                counts = rng.multinomial(s.samples_5m * {"5m": 1, "1h": 12, "1d": 288}[tier], np.ones(bins) / bins)
                sketches += [list(range(first, first + bins)), [int(c) for c in counts]]
            conn.execute("INSERT INTO bench.shape VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                         (series_id, s.base, s.amp, s.cap, float(rng.uniform(0, 6.28)), s.samples_5m, *sketches))

    windows = {"rollup_5m": (NOW - timedelta(days=90), "5 minutes", 1, "5m"),
               "rollup_1h": (NOW - timedelta(days=365), "1 hour", 12, "1h"),
               "rollup_1d": (TODAY - timedelta(days=365), "1 day", 288, "1d")}
    for table, (start, width, per5m, tier) in windows.items():
        end = TODAY if table == "rollup_1d" else NOW
        partitioning.ensure_partitions(conn, SCHEMA, table, start, end)
        for statement in (ROLLUP_SQL, SKETCH_SQL):
            conn.execute(statement.format(schema=SCHEMA, table=table, tier=tier, width=width, per5m=per5m),
                         {"start": start, "end": end})

    # Raw points: the last 7 days at 60 s (SPEC raw retention), for v_latest.
    partitioning.ensure_partitions(conn, SCHEMA, "points", NOW - timedelta(days=7), NOW)
    conn.execute(f"""
        INSERT INTO {SCHEMA}.points (series_id, ts, value)
        SELECT sh.series_id, t.ts, least(sh.cap, greatest(0, sh.base + sh.amp * sin(2 * pi() * extract(epoch FROM t.ts) / 86400 + sh.phase)))
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 minute', interval '1 minute') t(ts)
        CROSS JOIN bench.shape sh ORDER BY t.ts, sh.series_id""", {"start": NOW - timedelta(days=7), "end": NOW})

    # SLA: 50 jobs (company, zone, source system, object), one row per job and day for a year.
    jobs = [(c, z, src, obj) for c in COMPANIES for z in ZONES for src, spec in SOURCES.items() for obj in spec[1]]
    random.Random(5).shuffle(jobs)
    conn.execute("CREATE TABLE bench.jobs (company text, zone text, source_system text, object text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO bench.jobs VALUES (%s, %s, %s, %s)", jobs[:50])
    conn.execute(f"""
        INSERT INTO {SCHEMA}.sla_daily (bucket, company, zone, source_system, object, runs, successes, failures,
            failure_rate, duration_p50_s, duration_p95_s, duration_max_s, sla_breaches, last_success_at,
            time_since_last_success_s, cpu_time_s, peak_memory_bytes, sla_met)
        SELECT d.day, j.company, j.zone, j.source_system, j.object, x.runs, x.runs - x.failures, x.failures,
               x.failures::float8 / x.runs, 40 + 20 * random(), 90 + 60 * random(), 200 + 300 * random(),
               (random() < 0.05)::int, d.day + interval '23 hours', 3600 * random(), 500 * random(),
               (2e8 + 1e9 * random())::bigint, x.failures::float8 / x.runs < 0.05
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 day', interval '1 day') d(day)
        CROSS JOIN bench.jobs j
        CROSS JOIN LATERAL (SELECT 24 + (random() * 72)::int AS runs, (random() ^ 6 * 8)::int AS failures) x
        ORDER BY d.day""", {"start": TODAY - timedelta(days=365), "end": TODAY})

    # SLA hourly: the same 50 jobs, one row per job and hour for a year (the monthly SLA report of
    # issue 17 is built from it, as a BI user who finds no monthly view would).
    conn.execute(f"""
        INSERT INTO {SCHEMA}.sla_hourly (bucket, company, zone, source_system, object, runs, successes, failures,
            failure_rate, duration_p50_s, duration_p95_s, duration_max_s, sla_breaches, last_success_at,
            time_since_last_success_s, cpu_time_s, peak_memory_bytes, sla_met)
        SELECT h.hour, j.company, j.zone, j.source_system, j.object, x.runs, x.runs - x.failures, x.failures,
               x.failures::float8 / x.runs, 40 + 20 * random(), 90 + 60 * random(), 200 + 300 * random(),
               (random() < 0.05)::int, h.hour + interval '55 minutes', 600 * random(), 20 * random(),
               (2e8 + 1e9 * random())::bigint, x.failures = 0
        FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour', interval '1 hour') h(hour)
        CROSS JOIN bench.jobs j
        CROSS JOIN LATERAL (SELECT 1 + (random() * 3)::int AS runs, (random() ^ 12 * 2)::int AS failures) x
        ORDER BY h.hour""", {"start": NOW - timedelta(days=365), "end": NOW})

    # Alerts: 3,000 over the year, the 25 most recent still firing.
    conn.execute(f"""
        INSERT INTO {SCHEMA}.alerts (fingerprint, alertname, state, severity, labels, annotations, starts_at, ends_at,
                                     asset_key, partition_key, created_at, updated_at)
        SELECT md5(s.series_id::text || a.name), a.name, CASE WHEN g.i > 2975 THEN 'firing' ELSE 'resolved' END,
               CASE WHEN g.i %% 4 = 0 THEN 'critical' ELSE 'warning' END,
               s.labels || jsonb_build_object('alertname', a.name, 'metric', s.metric, 'resource', s.resource),
               jsonb_build_object('summary', s.metric || ' on ' || s.resource || ' above threshold',
                                  'description', 'value stayed above the threshold for 10 minutes'),
               g.at, CASE WHEN g.i > 2975 THEN NULL ELSE g.at + interval '1 minute' * (5 + (random() * 180)::int) END,
               'rollup_5m', to_char(g.at, 'YYYY-MM-DD'), g.at, g.at
        FROM (SELECT i, %(start)s::timestamptz + (i * interval '365 days' / 3000) + interval '1 second' * (random() * 600)::int AS at
              FROM generate_series(1, 3000) i) g
        JOIN {SCHEMA}.series s ON s.series_id = 1 + (g.i * 37) %% 200
        CROSS JOIN LATERAL (SELECT CASE WHEN s.metric LIKE '%%cpu%%' THEN 'HighCpu' WHEN s.metric LIKE '%%memory%%' THEN 'HighMemory'
                                        WHEN s.metric LIKE '%%filesystem%%' THEN 'DiskFilling' ELSE 'NoData' END AS name) a
        ORDER BY g.at""", {"start": NOW - timedelta(days=365)})

    conn.execute("VACUUM (ANALYZE)")
    conn.execute("CHECKPOINT")
    tables = ["series", "points", "rollup_5m", "rollup_1h", "rollup_1d", "sla_hourly", "sla_daily", "alerts"]
    return {t: conn.execute(f"SELECT count(*) FROM {SCHEMA}.{t}").fetchone()[0] for t in tables}


# -- queries ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Query:
    name: str
    what: str
    sql: str
    params: Callable[[random.Random], dict]
    target_ms: float = TARGET_MS  # dashboard query (<= 100 K rows read); YEAR_TARGET_MS for whole-year aggregates


def _window(rng: random.Random, length: timedelta, *, days: bool = False) -> dict:
    """[start, end) of `length` ending at now, or up to 3 days earlier (a dashboard's time picker)."""
    end = TODAY - timedelta(days=rng.randint(0, 3)) if days else NOW - timedelta(hours=rng.randint(0, 72))
    return {"start": end - length, "end": end}


HOST_METRICS = ["host_cpu_percent", "host_memory_percent", "host_filesystem_used_percent"]
TREND_METRICS = HOST_METRICS + ["aws_ec2_cpuutilization", "aws_rds_cpuutilization", "host_network_receive_bytes_per_second"]
TENANTS = ["acme", "globex"]

# -- issue 17: the SQL BI tools write, sent as text with the values inlined (as Grafana, Superset and
# psql do; psycopg's ClientCursor renders the parameters into the statement).

def _grafana_range(rng: random.Random, length: timedelta) -> dict:
    """$__timeFilter(col) expands to `col BETWEEN '<from>' AND '<to>'`, untyped ISO literals."""
    w = _window(rng, length)
    return {"from": f"{w['start']:%Y-%m-%dT%H:%M:%SZ}", "to": f"{w['end']:%Y-%m-%dT%H:%M:%SZ}"}


def _hosts(rng: random.Random, k: int = 3) -> dict:
    """A multi-value dashboard variable, `IN ('host-004','host-017','host-023')` once rendered."""
    return {"hosts": tuple(sorted(rng.sample(HOSTS, k)))}


def _superset_range(rng: random.Random, length: timedelta) -> dict:
    w = _window(rng, length, days=True)
    return {"from": f"{w['start']:%Y-%m-%d %H:%M:%S}.000000", "to": f"{w['end']:%Y-%m-%d %H:%M:%S}.000000"}


def _grafana_hosts(length: timedelta) -> Callable[[random.Random], dict]:
    return lambda r: {**_hosts(r), **_grafana_range(r, length)}


GRAFANA_HOSTS_SQL = f"""SELECT bucket_start AS "time", host AS metric, avg AS value FROM {SCHEMA}.v_rollup_1h
    WHERE bucket_start BETWEEN %(from)s AND %(to)s AND metric = 'host_cpu_percent' AND host IN %(hosts)s
    ORDER BY 1"""
_TS_FORMAT = "'YYYY-MM-DD HH24:MI:SS.US'"
YEAR_TARGET_MS = 500.0

BI_TOOL_QUERIES = [
    Query("grafana_hosts_7d", "Grafana: hourly CPU of $host (3 of multi-value IN), $__timeFilter 7 d",
          GRAFANA_HOSTS_SQL, _grafana_hosts(timedelta(days=7))),
    Query("grafana_hosts_30d", "Grafana: the same panel over 30 d", GRAFANA_HOSTS_SQL, _grafana_hosts(timedelta(days=30))),
    Query("grafana_hosts_1y", "Grafana: the same panel over 1 y, $__timeGroup(bucket_start, 1d) on v_rollup_1h",
          f"""SELECT date_trunc('day', bucket_start) AS "time", host AS metric, avg(avg) AS value FROM {SCHEMA}.v_rollup_1h
              WHERE bucket_start BETWEEN %(from)s AND %(to)s AND metric = 'host_cpu_percent' AND host IN %(hosts)s
              GROUP BY 1, 2 ORDER BY 1""",
          _grafana_hosts(timedelta(days=365))),
    Query("grafana_top10_ec2_30d", "Grafana: top 10 EC2 instances by max CPU, $statistic multi-value, 30 d (1 h tier)",
          f"""SELECT resource AS metric, max(max) AS value FROM {SCHEMA}.v_rollup_1h
              WHERE bucket_start BETWEEN %(from)s AND %(to)s AND metric = 'aws_ec2_cpuutilization'
                AND statistic IN ('Average', 'Maximum') GROUP BY 1 ORDER BY 2 DESC LIMIT 10""",
          lambda r: _grafana_range(r, timedelta(days=30))),
    Query("metabase_week_region", "Metabase: weekly average CPU of one region (JSON field filter), last 12 weeks",
          f"""SELECT date_trunc('week', "{SCHEMA}"."v_rollup_1h"."bucket_start") AS "bucket_start",
                     avg("{SCHEMA}"."v_rollup_1h"."avg") AS "avg"
              FROM "{SCHEMA}"."v_rollup_1h"
              WHERE ("{SCHEMA}"."v_rollup_1h"."metric" = 'host_cpu_percent'
                 AND ("{SCHEMA}"."v_rollup_1h"."labels" #>> array['region']::text[]) = %(region)s
                 AND "{SCHEMA}"."v_rollup_1h"."bucket_start" >= date_trunc('week', (now() + INTERVAL '-12 week'))
                 AND "{SCHEMA}"."v_rollup_1h"."bucket_start" < date_trunc('week', now()))
              GROUP BY date_trunc('week', "{SCHEMA}"."v_rollup_1h"."bucket_start")
              ORDER BY date_trunc('week', "{SCHEMA}"."v_rollup_1h"."bucket_start") ASC""",
          lambda r: {"region": r.choice(["eu-west-1", "us-east-1", "eu-central-1"])}),
    Query("psql_current_date_14", "psql: daily max memory per host, bucket_start >= CURRENT_DATE - 14",
          f"""SELECT bucket_start::date AS day, resource, max(max) FROM {SCHEMA}.v_rollup_1h
              WHERE metric = %(metric)s AND bucket_start >= CURRENT_DATE - 14 GROUP BY 1, 2 ORDER BY 1, 2""",
          lambda r: {"metric": r.choice(HOST_METRICS)}),
    Query("superset_rds_30d", "Superset: daily RDS CPU, TO_TIMESTAMP bounds, 30 d (1 h tier)",
          f"""SELECT date_trunc('day', bucket_start) AS __timestamp, resource AS resource, AVG(avg) AS "AVG(avg)"
              FROM {SCHEMA}.v_rollup_1h
              WHERE bucket_start >= TO_TIMESTAMP(%(from)s, {_TS_FORMAT}) AND bucket_start < TO_TIMESTAMP(%(to)s, {_TS_FORMAT})
                AND metric IN ('aws_rds_cpuutilization') GROUP BY date_trunc('day', bucket_start), resource
              ORDER BY "AVG(avg)" DESC LIMIT 10000""",
          lambda r: _superset_range(r, timedelta(days=30))),
    Query("raw_export_day_labels", "export: a day of raw CPU points of every host, with labels (v_points)",
          f"""SELECT ts, metric, resource, value, labels FROM {SCHEMA}.v_points
              WHERE metric = 'host_cpu_percent' AND ts >= %(start)s AND ts < %(end)s ORDER BY ts, resource""",
          lambda r: (lambda d: {"start": d, "end": d + timedelta(days=1)})(TODAY - timedelta(days=r.randint(1, 5)))),
    Query("count_1y_rollup_1h", "psql: count(*) of a year of v_rollup_1h (whole-year aggregate)",
          f"""SELECT count(*) FROM {SCHEMA}.v_rollup_1h WHERE bucket_start >= %(start)s AND bucket_start < %(end)s""",
          lambda r: _window(r, timedelta(days=365)), YEAR_TARGET_MS),
    Query("superset_count_1y", "Superset: COUNT(*) of a year of v_rollup_1h, TO_TIMESTAMP bounds (whole-year aggregate)",
          f"""SELECT COUNT(*) AS count FROM {SCHEMA}.v_rollup_1h
              WHERE bucket_start >= TO_TIMESTAMP(%(from)s, {_TS_FORMAT}) AND bucket_start < TO_TIMESTAMP(%(to)s, {_TS_FORMAT})
              LIMIT 50000""",
          lambda r: _superset_range(r, timedelta(days=365)), YEAR_TARGET_MS),
    Query("sla_monthly_from_hourly", "monthly SLA report per company and source system from v_sla_hourly, 12 months (whole-year aggregate)",
          f"""SELECT date_trunc('month', bucket_start) AS month, company, source_system,
                     sum(runs) AS runs, sum(failures) AS failures, 1 - sum(failures)::float8 / nullif(sum(runs), 0) AS success_rate,
                     sum(sla_breaches) AS breaches, avg(sla_met::int) AS hours_sla_met
              FROM {SCHEMA}.v_sla_hourly
              WHERE bucket_start >= date_trunc('month', %(now)s::timestamptz) - interval '12 months'
                AND bucket_start < date_trunc('month', %(now)s::timestamptz)
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
          lambda r: {"now": NOW}, YEAR_TARGET_MS),
    Query("sla_monthly_report", "the same monthly SLA report from v_sla_monthly (the coarse tier), 12 months",
          f"""SELECT bucket_start AS month, company, source_system, sum(runs) AS runs, sum(failures) AS failures,
                     1 - sum(failures)::float8 / nullif(sum(runs), 0) AS success_rate, sum(sla_breaches) AS breaches,
                     sum(days_sla_met)::float8 / sum(days) AS days_sla_met
              FROM {SCHEMA}.v_sla_monthly
              WHERE bucket_start >= date_trunc('month', %(now)s::timestamptz, 'UTC') - interval '12 months'
                AND bucket_start < date_trunc('month', %(now)s::timestamptz, 'UTC')
              GROUP BY 1, 2, 3 ORDER BY 1, 2, 3""",
          lambda r: {"now": NOW}),
    Query("label_containment_7d", "hourly series matching labels @> '{\"account\": ..., \"namespace\": ...}', 7 d",
          f"""SELECT bucket_start, resource, avg, max FROM {SCHEMA}.v_rollup_1h
              WHERE labels @> %(match)s::jsonb AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY 2, 1""",
          lambda r: {"match": json.dumps({"account": r.choice(list(ACCOUNTS)), "namespace": r.choice(["AWS/RDS", "AWS/ApplicationELB"])}),
                     **_window(r, timedelta(days=7))}),
    Query("login_timeseries_24h", "time series of what the login may see: 5-minute CPU of every host, 24 h (no tenant filter in the SQL)",
          f"""SELECT bucket_start, resource, avg FROM {SCHEMA}.v_rollup_5m
              WHERE metric = 'host_cpu_percent' AND bucket_start >= now() - interval '24 hours' ORDER BY 2, 1""",
          lambda r: {}),
]


QUERIES = [
    Query("cpu_5m_24h_one_host", "5-minute CPU of one host, last 24 h",
          f"""SELECT bucket_start, avg, max, p95 FROM {SCHEMA}.v_rollup_5m
              WHERE metric = 'host_cpu_percent' AND resource = %(host)s
                AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY bucket_start""",
          lambda r: {"host": r.choice(HOSTS), **_window(r, timedelta(hours=24))}),
    Query("p95_1h_7d_all_hosts", "hourly p95 of one metric for every host, last 7 days",
          f"""SELECT resource, bucket_start, p95 FROM {SCHEMA}.v_rollup_1h
              WHERE metric = %(metric)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
              ORDER BY resource, bucket_start""",
          lambda r: {"metric": r.choice(HOST_METRICS), **_window(r, timedelta(days=7))}),
    Query("max_1d_30d_per_host", "daily max per host, last 30 days",
          f"""SELECT labels ->> 'host' AS host, bucket_start::date AS day, max FROM {SCHEMA}.v_rollup_1d
              WHERE metric = %(metric)s AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY 1, 2""",
          lambda r: {"metric": r.choice(HOST_METRICS), **_window(r, timedelta(days=30), days=True)}),
    Query("top10_avg_last_day", "top 10 series of a metric by average over the last day (5 m tier)",
          f"""SELECT series_id, resource, sum(sum) / sum(samples) AS avg FROM {SCHEMA}.v_rollup_5m
              WHERE metric = %(metric)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
              GROUP BY series_id, resource ORDER BY avg DESC LIMIT 10""",
          lambda r: {"metric": r.choice(["host_cpu_percent", "aws_ec2_cpuutilization", "host_network_receive_bytes_per_second"]),
                     **_window(r, timedelta(days=1))}),
    Query("latest_all_series", "latest value of every series (v_latest)",
          f"""SELECT metric, resource, unit, ts, value, age_s FROM {SCHEMA}.v_latest
              WHERE %(source)s::text IS NULL OR source = %(source)s ORDER BY metric, resource""",
          lambda r: {"source": r.choice([None, None, "host", "cloudwatch"])}),
    Query("sla_failure_rate_30d", "daily failure rate and breaches of one company, last 30 days",
          f"""SELECT bucket_start::date AS day, sum(failures)::float8 / nullif(sum(runs), 0) AS failure_rate,
                     sum(sla_breaches) AS breaches, count(*) FILTER (WHERE NOT sla_met) AS jobs_missing_sla
              FROM {SCHEMA}.v_sla_daily
              WHERE company = %(company)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
              GROUP BY 1 ORDER BY 1""",
          lambda r: {"company": r.choice(COMPANIES), **_window(r, timedelta(days=30), days=True)}),
    Query("active_alerts", "firing alerts, optionally of one tenant",
          f"""SELECT starts_at, severity, alertname, tenant, summary, duration_s AS firing_for_s,
                     (labels - 'alertname' - 'severity' - 'tenant')::text AS labels
              FROM {SCHEMA}.v_alerts
              WHERE state = 'firing' AND (%(tenant)s::text IS NULL OR tenant = %(tenant)s)
              ORDER BY severity = 'critical' DESC, starts_at""",
          lambda r: {"tenant": r.choice([None, *TENANTS])}),
    Query("trend_1d_1y", "1-year daily trend of a metric over all its series",
          f"""SELECT bucket_start::date AS day, avg(avg) AS avg, max(max) AS max, max(p99) AS p99 FROM {SCHEMA}.v_rollup_1d
              WHERE metric = %(metric)s AND bucket_start >= %(start)s AND bucket_start < %(end)s GROUP BY 1 ORDER BY 1""",
          lambda r: {"metric": r.choice(TREND_METRICS), **_window(r, timedelta(days=365), days=True)}),
    Query("ec2_cpu_by_statistic_30d", "dashboard panel 'EC2 CPU ($statistic)': every instance, last 30 days ($rollup = 1d)",
          f"""SELECT bucket_start AS "time", resource AS metric, CASE %(statistic)s WHEN 'Maximum' THEN max ELSE avg END AS value
              FROM {SCHEMA}.v_rollup_1d
              WHERE metric = 'aws_ec2_cpuutilization' AND statistic = %(statistic)s
                AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY 1, 2""",
          lambda r: {"statistic": r.choice(["Average", "Average", "Maximum"]), **_window(r, timedelta(days=30), days=True)}),
    Query("cw_account_region_7d", "hourly EC2 CPU of one account and region (label filters), last 7 days",
          f"""SELECT resource, bucket_start, avg, max FROM {SCHEMA}.v_rollup_1h
              WHERE metric = 'aws_ec2_cpuutilization' AND labels ->> 'account' = %(account)s
                AND labels ->> 'region' = %(region)s AND labels ->> 'statistic' = 'Average'
                AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY 1, 2""",
          lambda r: (lambda a: {"account": a, "region": r.choice(ACCOUNTS[a][1]), **_window(r, timedelta(days=7))})(r.choice(list(ACCOUNTS)))),
    Query("tenant_overview_6h", "every series of one tenant, 5-minute, last 6 h",
          f"""SELECT metric, resource, bucket_start, avg, max FROM {SCHEMA}.v_rollup_5m
              WHERE tenant = %(tenant)s AND bucket_start >= %(start)s AND bucket_start < %(end)s
              ORDER BY metric, resource, bucket_start""",
          lambda r: {"tenant": r.choice(TENANTS), **_window(r, timedelta(hours=6))}),
    Query("host_memory_90d_hourly", "hourly memory of one host (the view's host column), last 90 days",
          f"""SELECT bucket_start, avg, max, p95 FROM {SCHEMA}.v_rollup_1h
              WHERE metric = 'host_memory_percent' AND host = %(host)s
                AND bucket_start >= %(start)s AND bucket_start < %(end)s ORDER BY bucket_start""",
          lambda r: {"host": r.choice(HOSTS), **_window(r, timedelta(days=90))}),
    Query("host_variable", "dashboard variable $host: hosts that report (v_series)",
          f"""SELECT DISTINCT resource FROM {SCHEMA}.v_series WHERE source = %(source)s ORDER BY 1""",
          lambda r: {"source": "host"}),
    *BI_TOOL_QUERIES,
]


QUERY_SQL = {q.name: q.sql for q in QUERIES}


@dataclasses.dataclass
class Timing:
    query: Query
    login: str
    seed: int
    ms: list[float]  # end to end in the client: execute and fetch every row
    rows: list[int]
    server_ms: list[float]  # planning + execution in the server, rows not sent (EXPLAIN ANALYZE, TIMING OFF)

    @property
    def p50(self) -> float:
        return float(np.percentile(self.ms, 50))

    @property
    def p95(self) -> float:
        return float(np.percentile(self.ms, 95))

    @property
    def server_p95(self) -> float:
        return float(np.percentile(self.server_ms, 95))

    @property
    def meets(self) -> bool:
        return self.p95 < self.query.target_ms


def render(sql: str, params: dict) -> tuple[str, dict]:
    """Expand tuple parameters into `(%(x_0)s, %(x_1)s, ...)`: a multi-value variable as a BI tool renders it."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, tuple):
            sql = sql.replace(f"%({key})s", "(" + ", ".join(f"%({key}_{i})s" for i in range(len(value))) + ")")
            flat.update({f"{key}_{i}": v for i, v in enumerate(value)})
        else:
            flat[key] = value
    return sql, flat


def time_query(conn: psycopg.Connection, query: Query, runs: int, seed: int, sql: str | None = None,
               login: str = "", warmup: int = 2) -> Timing:
    """`runs` executions with parameters drawn from `seed`, then the same ones again in the server only."""
    sql = sql or query.sql
    rng = random.Random(seed)
    for _ in range(warmup):  # a dashboard is opened more than once
        conn.execute(*render(sql, query.params(rng))).fetchall()
    params = [render(sql, query.params(rng)) for _ in range(runs)]
    ms, rows = [], []
    for text, p in params:
        t0 = time.perf_counter()
        got = conn.execute(text, p).fetchall()
        ms.append((time.perf_counter() - t0) * 1000)
        rows.append(len(got))
    server_ms = []
    for text, p in params:
        (plan,) = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + text, p).fetchone()[0]
        server_ms.append(plan["Planning Time"] + plan["Execution Time"])
    return Timing(query, login, seed, ms, rows, server_ms)


def explain(conn: psycopg.Connection, query: Query, sql: str | None = None) -> str:
    text, params = render(sql or query.sql, query.params(random.Random(0)))
    plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + text, params).fetchall()
    return "\n".join(line for (line,) in plan)


def table(timings: dict[tuple[str, str], Timing], logins: list[str], reference: str) -> str:
    """One line per query and BI login, the superuser's p95 for the same statements on the bare joins beside it."""
    lines = [f"| query | what | login | rows (median) | p50 ms | p95 ms | server p95 ms | {reference} p95 ms | target p95 | meets |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for q in QUERIES:
        ref = timings[q.name, reference]
        for i, login in enumerate(logins):
            t = timings[q.name, login]
            lines.append(f"| {q.name if i == 0 else ''} | {q.what if i == 0 else ''} | {login} | {int(np.median(t.rows)):,} "
                         f"| {t.p50:.1f} | {t.p95:.1f} | {t.server_p95:.1f} | {ref.p95:.1f} (rows {int(np.median(ref.rows)):,}) "
                         f"| < {q.target_ms:.0f} ms | {'ok' if t.meets else '**MISS**'} |")
    return "\n".join(lines)


# -- experiments: candidate fixes, applied to the scratch database only ---------------------------

@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    ddl: list[str]
    queries: list[tuple[str, str | None]]  # (query name, rewritten SQL or None for the same SQL)
    same_rows: bool = True  # False: the change returns other rows on purpose (a coarser tier)


RAW_EXPORT_HOST_SQL = QUERY_SQL["raw_export_day_labels"].replace("value, labels FROM", "value, host FROM")
TIMESTAMPTZ_BOUND_SQL = QUERY_SQL["psql_current_date_14"].replace("CURRENT_DATE - 14", "(CURRENT_DATE - 14)::timestamptz")
EXPERIMENTS: list[Experiment] = [
    Experiment(
        "export: the label column needed (`host`) instead of the whole `labels` jsonb, which the client decodes row by row",
        [],
        [("raw_export_day_labels", RAW_EXPORT_HOST_SQL)],
    ),
    Experiment(
        "psql: a timestamptz bound, `bucket_start >= (CURRENT_DATE - 14)::timestamptz`, instead of comparing with a date",
        [],
        [("psql_current_date_14", TIMESTAMPTZ_BOUND_SQL)],
    ),
    Experiment(
        "Superset: a year-long chart on v_rollup_1d instead of v_rollup_1h (365 rows a series instead of 8,760)",
        [],
        [("superset_count_1y", QUERY_SQL["superset_count_1y"].replace("v_rollup_1h", "v_rollup_1d"))],
        same_rows=False,
    ),
]


def run_experiments(admin: psycopg.Connection, conns: dict[str, psycopg.Connection], runs: int,
                    baseline: dict[tuple[str, str], Timing]) -> list[tuple[str, list[str]]]:
    """Each experiment, as each BI login: re-time its queries as shipped (a paired baseline), apply its
    change to the scratch database, time them again (rewritten where the change is in the query)."""
    findings = []
    for exp in EXPERIMENTS:
        names = dict.fromkeys(name for name, _ in exp.queries)
        before = {(name, login): time_query(conn, baseline[name, login].query, runs, seed=baseline[name, login].seed)
                  for name in names for login, conn in conns.items()}
        t0 = time.perf_counter()
        for ddl in exp.ddl:
            admin.execute(ddl.format(schema=SCHEMA))
        print(f"\nexperiment: {exp.name} (setup {time.perf_counter() - t0:.1f} s)")
        findings.append((exp.name, []))
        for name, sql in exp.queries:
            for login, conn in conns.items():
                b = before[name, login]
                a = time_query(conn, b.query, runs, seed=b.seed, sql=sql)
                assert a.rows == b.rows or not exp.same_rows, f"{exp.name} changed the rows of {name}"
                rows = "" if exp.same_rows else f", {int(np.median(b.rows)):,} -> {int(np.median(a.rows)):,} rows"
                line = (f"{name} as {login}{' (query rewritten' + rows + ')' if sql else ''}: p95 {b.p95:.1f} -> {a.p95:.1f} ms "
                        f"(p50 {b.p50:.1f} -> {a.p50:.1f}; server p95 {b.server_p95:.1f} -> {a.server_p95:.1f})")
                print("  " + line)
                findings[-1][1].append(line)
    return findings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per query and login (default 30, 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="5 runs and 1 warm-up per query and login")
    parser.add_argument("--bi-role", default=bi.DEFAULT_ROLE, help="the unrestricted BI login to create or update")
    parser.add_argument("--tenant-role", default=f"{bi.DEFAULT_ROLE}_tenant", help="the tenant-restricted login")
    parser.add_argument("--explain", action="store_true", help="EXPLAIN (ANALYZE, BUFFERS) the queries that miss")
    parser.add_argument("--experiments", action="store_true", help="re-time after the candidate fixes of EXPERIMENTS")
    parser.add_argument("--no-write", action="store_true", help="do not write to docs/benchmarks.md")
    args = parser.parse_args()
    args.runs = args.runs or (5 if args.quick else 30)

    with scratch_database(BENCH_DB) as dsn:
        run(dsn, args)


#: The restricted login sees one series tenant and one SLA company (the sample's SLA jobs belong to
#: the log simulator's companies, its series to the CloudWatch accounts' tenants).
RESTRICTED_TENANTS = ["acme", COMPANIES[0]]
SUPERUSER = "superuser"


def base_table_sql(sql: str) -> str:
    """The reference statement: the same query on the bare joins of the tables (`bi_all_*`, what every
    `v_*` view is for a login that sees every tenant, with no tenant gate), as the superuser."""
    return re.sub(r"\bv_(\w+)", r"bi_all_\1", sql)


def bi_logins(dsn: str, args: argparse.Namespace) -> dict[str, str]:
    """Create (or update) the BI login and the tenant-restricted login with `bi.ensure_role`; their DSNs."""
    warehouse = Warehouse(dsn, SCHEMA)
    out = {}
    for role, tenants in ((args.bi_role, []), (args.tenant_role, RESTRICTED_TENANTS)):
        password = secrets.token_urlsafe(18)
        bi.ensure_role(warehouse, role, password=password, tenants=tenants)
        out[role] = make_conninfo(dsn, user=role, password=password)
    return out


def run(dsn: str, args: argparse.Namespace) -> None:
    migrate.migrate(Warehouse(dsn, SCHEMA))
    with psycopg.connect(dsn, autocommit=True) as conn:
        t0 = time.perf_counter()
        counts = build(conn, make_series())
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]
        print(f"built in {time.perf_counter() - t0:.0f} s ({size}): " + ", ".join(f"{t} {n:,}" for t, n in counts.items()))
    dsns = {**bi_logins(dsn, args), SUPERUSER: dsn}
    logins = [args.bi_role, args.tenant_role]

    # A BI tool's session: statements sent as text with their values inlined (ClientCursor), each
    # planned with them (no prepared plans). Same seeds for every login: the same statements.
    conns = {login: psycopg.connect(d, autocommit=True, cursor_factory=psycopg.ClientCursor) for login, d in dsns.items()}
    t0 = time.perf_counter()
    try:
        for login, conn in conns.items():
            who = conn.execute("SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                               f"{SCHEMA}.visible_tenants(current_user::text)").fetchone()
            print(f"{login}: connected as {who[0]} (superuser {who[1]}), visible tenants {who[2] or 'all'}")
        timings = {(q.name, login): time_query(conns[login], q, args.runs, seed=i, login=login, warmup=1 if args.quick else 2,
                                               sql=base_table_sql(q.sql) if login == SUPERUSER else None)
                   for i, q in enumerate(QUERIES) for login in [*logins, SUPERUSER]}
        print(f"\n{args.runs} runs per query and login ({time.perf_counter() - t0:.0f} s), varying parameters; "
              "end to end = execute + fetch in psycopg; server = planning + execution, rows not sent\n")
        print(table(timings, logins, SUPERUSER))
        missed = [t for (_, login), t in timings.items() if login in logins and not t.meets]
        if args.explain:
            for t in missed:
                print(f"\n--- EXPLAIN (ANALYZE, BUFFERS) {t.query.name} as {t.login}\n{explain(conns[t.login], t.query)}")
        findings = (run_experiments(conns[SUPERUSER], {login: conns[login] for login in logins}, args.runs, timings)
                    if args.experiments else [])
    finally:
        for conn in conns.values():
            conn.close()

    worst = max((t for t in timings.values() if t.login in logins), key=lambda t: t.p95 / t.query.target_ms)
    data = (f"{counts['series']} series; 1 y of 1 h ({counts['rollup_1h']:,} rows) + 1 d, 90 d of 5 m "
            f"({counts['rollup_5m']:,} rows), 7 d raw; {counts['sla_hourly']:,} SLA hours, {counts['sla_daily']:,} SLA days, "
            f"{counts['alerts']:,} alerts")
    missed_names = list(dict.fromkeys(t.query.name for t in missed))
    if not args.no_write:
        replace_section(
            "bi_queries",
            f"Last run ({datetime.now(timezone.utc):%Y-%m-%d}, {args.runs} runs per query and login"
            f"{' (--quick)' if args.quick else ''}, {data}; {args.bi_role} unrestricted, {args.tenant_role} restricted to "
            f"{', '.join(RESTRICTED_TENANTS)}; p50/p95 end to end in psycopg, server = planning + execution without "
            f"sending rows; the {SUPERUSER} column is the same statements on the bare table joins `bi_all_*`, "
            "the views without their tenant gate, as the superuser: what the views cost):\n\n"
            + table(timings, logins, SUPERUSER)
            + ("\n\nCandidate fixes, measured in the scratch database as " + args.bi_role + " (paired: as shipped -> changed):\n"
               + "\n".join(f"- {name}:\n" + "\n".join(f"  - {line}" for line in lines) for name, lines in findings)
               if findings else ""),
        )
        append_result(
            "bi queries", data,
            f"{len(QUERIES)} queries x 2 BI logins ({args.bi_role}, {args.tenant_role}){', --quick' if args.quick else ''}: "
            f"worst {worst.query.name} as {worst.login} p95 {worst.p95:.1f} ms ({worst.server_p95:.1f} ms in the server, "
            f"{int(np.median(worst.rows)):,} rows; superuser {timings[worst.query.name, SUPERUSER].p95:.1f} ms); "
            f"{len(missed_names)} of {len(QUERIES)} queries miss for at least one login: {', '.join(missed_names) or 'none'}",
            f"p95 < {TARGET_MS:.0f} ms (dashboards), < {YEAR_TARGET_MS:.0f} ms (year aggregates)",
            f"{worst.p95 / worst.query.target_ms:.2f} x target",
        )


if __name__ == "__main__":
    main()
