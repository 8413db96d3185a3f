"""A small warehouse with a little of everything a BI user queries, for the dashboard and doc tests.

Three hours of points for every metric source (host, CloudWatch, WhaTap), loaded through the real
loader and rolled up by the real rollup and health SQL, plus the rows of the tables nothing writes
yet in these tests (ingestion runs, SLA, alerts), inserted directly. Everything is placed relative to
the current hour because the views compare with `now()` (`v_latest.age_s`, `v_alerts.duration`) and
Grafana's ranges are relative to now. Anomaly scores (`v_anomalies`) are placed directly too: three
hours are too short for the detector to learn anything.

Holes on purpose, so every panel and example has something to show: `db-1` stops reporting CPU for
half an hour (completeness < 1), WhaTap agent `web-01` goes silent after the first hour ("no data"
hours), `web-1` runs hot in the last 20 minutes (time above thresholds), one job keeps failing and another
does not run in the last hour (a `runs = 0` SLA row).
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import bi, partitioning
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

SCHEMA = "metrics"
HOSTS = {"web-1": "akonovia", "db-1": "boreal-logistique"}
EC2_INSTANCES = {"i-0a1b2c3d4e5f60001": "akonovia", "i-0busy0000000000006": "boreal-logistique"}
WHATAP_SERVERS = ("db-01", "web-01")
COMPANIES = ("akonovia", "boreal-logistique")


@dataclasses.dataclass(frozen=True)
class Sample:
    """Where the sample data lies: points in [start, end), `now` as used by the health refresh."""

    dsn: str
    now: datetime
    start: datetime
    end: datetime


def _day(ts: datetime) -> datetime:
    return ts.replace(hour=0, minute=0, second=0, microsecond=0)


def _grid(start: datetime, end: datetime, step_s: int) -> pd.DatetimeIndex:
    return pd.date_range(start, end, freq=f"{step_s}s", inclusive="left")


def _series(metric, resource, labels, unit, ts, values) -> dict:
    return {"metric": metric, "resource": resource, "labels": labels, "unit": unit, "ts": ts, "value": values}


def _host_frame(rng: np.random.Generator, start: datetime, end: datetime) -> pd.DataFrame:
    ts = _grid(start, end, 30)
    minutes = (ts - ts[0]).total_seconds().to_numpy() / 60
    series = []
    for host, tenant in HOSTS.items():
        labels = {"host": host, "tenant": tenant}
        cpu = np.clip(35 + 15 * np.sin(minutes / 25) + rng.normal(0, 5, len(ts)), 0, 100)
        cpu_ts = ts
        if host == "web-1":
            cpu[ts >= end - timedelta(minutes=20)] = 97.0  # above both CPU thresholds
        else:
            keep = (ts < start + timedelta(minutes=70)) | (ts >= start + timedelta(minutes=100))
            cpu_ts, cpu = ts[keep], cpu[keep]  # a 30-minute gap in the second hour
        series += [
            _series("host_cpu_percent", host, labels, "percent", cpu_ts, cpu),
            _series("host_memory_percent", host, labels, "percent", ts, np.clip(rng.normal(62, 3, len(ts)), 0, 100)),
            _series("host_load1", host, labels, "count", ts, np.abs(rng.normal(1.5, 0.5, len(ts)))),
        ]
        for mount, level in (("/", 48.0), ("/data", 83.0)):
            series.append(_series("host_filesystem_used_percent", host, {**labels, "mount": mount, "fstype": "ext4"},
                                  "percent", ts, level + np.linspace(0, 1, len(ts))))
    return points_frame(series)


def _cloudwatch_frame(rng: np.random.Generator, start: datetime, end: datetime) -> pd.DataFrame:
    ts = _grid(start, end, 60)
    base = {"region": "eu-west-1", "account": "demo", "account_id": "000000000000"}
    series = []
    for instance, tenant in EC2_INSTANCES.items():
        level = 92.0 if instance.startswith("i-0busy") else 30.0
        average = np.clip(rng.normal(level, 3, len(ts)), 0, 100)
        for statistic, values in (("Average", average), ("Maximum", np.minimum(100.0, average + 4))):
            labels = {**base, "namespace": "AWS/EC2", "statistic": statistic, "InstanceId": instance, "tenant": tenant}
            series.append(_series("aws_ec2_cpuutilization", instance, labels, "percent", ts, values))
        labels = {**base, "namespace": "AWS/EC2", "statistic": "Average", "InstanceId": instance, "tenant": tenant}
        series.append(_series("aws_ec2_networkin", instance, labels, "bytes", ts, np.abs(rng.normal(2e7, 2e6, len(ts)))))
    labels = {**base, "namespace": "AWS/RDS", "statistic": "Average", "DBInstanceIdentifier": "orders-db"}
    series.append(_series("aws_rds_cpuutilization", "orders-db", labels, "percent", ts, rng.normal(40, 5, len(ts))))
    return points_frame(series)


def _whatap_frame(rng: np.random.Generator, start: datetime, end: datetime) -> pd.DataFrame:
    project = {"project_code": "1202", "project_name": "hosts-seoul", "category": "sm_stat", "resolution": "m5"}
    series = []
    for oid, oname in enumerate(WHATAP_SERVERS, start=1830021144):
        ts = _grid(start, end if oname == "db-01" else start + timedelta(hours=1), 300)
        labels = {**project, "oid": str(oid), "oname": oname}
        for metric, level in (("whatap_server_cpu", 55.0), ("whatap_server_memory", 70.0), ("whatap_server_disk_used", 64.0)):
            series.append(_series(metric, oname, labels, "percent", ts, np.clip(rng.normal(level, 4, len(ts)), 0, 100)))
    ts = _grid(start, end, 60)
    apm = {"project_code": "1201", "project_name": "web-prod", "category": "app_counter", "oid": "904112233",
           "oname": "web-01-8080"}
    series += [
        _series("whatap_apm_tps", "web-01-8080", apm, "count_per_second", ts, np.abs(rng.normal(120, 15, len(ts)))),
        _series("whatap_apm_resp_time", "web-01-8080", apm, "milliseconds", ts, rng.lognormal(4.5, 0.4, len(ts))),
    ]
    return points_frame(series)


def _jobs() -> list[tuple[str, str, str, str]]:
    return [(company, zone, source, obj) for company in COMPANIES
            for zone, source, obj in (("1-Raw", "Zoho", "Deals"), ("2-Standardized", "PowerBI", "Dataset"))]


def _silent(job: tuple[str, str, str, str], bucket: datetime, width: timedelta, end: datetime) -> bool:
    """akonovia's Zoho job does not run in the last hour: a `runs = 0` SLA row, as the SLA assets keep."""
    return job[0] == "akonovia" and job[2] == "Zoho" and width == timedelta(hours=1) and bucket == end - width


def _insert_ingestion_runs(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    partitioning.ensure_partitions(conn, SCHEMA, "ingestion_runs", start, end)
    rows = []
    hour = start
    while hour < end:
        for n, (company, zone, source, obj) in enumerate(_jobs()):
            if _silent((company, zone, source, obj), hour, timedelta(hours=1), end):
                continue
            # boreal-logistique's PowerBI refresh fails every hour; the others succeed.
            failed = company == "boreal-logistique" and source == "PowerBI"
            began = hour + timedelta(minutes=5 + n)
            duration = 640.0 if failed else 35.0 + n
            rows.append((
                began.strftime("%Y-%m-%d-%H-%M"), company, zone, source, f"{obj.lower()}-{n}", obj,
                "REST API", "FAILED" if failed else "SUCCESS", began, began + timedelta(seconds=duration), duration,
                "Timeout after 600 s waiting for dataset refresh to complete" if failed else "Tout roule, pas de stress!",
                duration * 0.4, 250_000_000 + n, "sample/logs.json", n,
            ))
        hour += timedelta(hours=1)
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {SCHEMA}.ingestion_runs (sequence_no, company, zone, source_system, object_id, object,
                    transformation, status, started_at, ended_at, duration_s, description, cpu_time_s,
                    memory_used_bytes, source_file, source_position)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            rows,
        )


def _sla_rows(buckets: list[datetime], width: timedelta, now: datetime, runs: int) -> list[tuple]:
    rows = []
    for bucket in buckets:
        for company, zone, source, obj in _jobs():
            if _silent((company, zone, source, obj), bucket, width, buckets[-1] + width):
                last_success = bucket - timedelta(minutes=20)
                rows.append((bucket, company, zone, source, obj, 0, 0, 0, None, None, None, None, 0, last_success,
                             (min(bucket + width, now) - last_success).total_seconds(), None, None, True))
                continue
            failing = company == "boreal-logistique" and source == "PowerBI"
            successes = 0 if failing else runs
            last_success = None if failing else min(bucket + width, now) - timedelta(minutes=20)
            since = None if last_success is None else (min(bucket + width, now) - last_success).total_seconds()
            rows.append((
                bucket, company, zone, source, obj, runs, successes, runs - successes,
                (runs - successes) / runs, 640.0 if failing else 36.0, 640.0 if failing else 38.0,
                640.0 if failing else 39.0, runs if failing else 0, last_success, since,
                runs * (256.0 if failing else 14.5), 250_000_003, not failing,
            ))
    return rows


def _insert_sla(conn: psycopg.Connection, start: datetime, end: datetime, now: datetime) -> None:
    columns = """(bucket, company, zone, source_system, object, runs, successes, failures, failure_rate,
                  duration_p50_s, duration_p95_s, duration_max_s, sla_breaches, last_success_at,
                  time_since_last_success_s, cpu_time_s, peak_memory_bytes, sla_met)"""
    values = "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
    hours = [start + timedelta(hours=i) for i in range(int((end - start) / timedelta(hours=1)))]
    days = [_day(now) - timedelta(days=i) for i in (2, 1, 0)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {SCHEMA}.sla_hourly {columns} {values}",
                        _sla_rows(hours, timedelta(hours=1), now, 1))
        cur.executemany(f"INSERT INTO {SCHEMA}.sla_daily {columns} {values}",
                        _sla_rows(days, timedelta(days=1), now, 24))


def _insert_alerts(conn: psycopg.Connection, now: datetime) -> None:
    alerts = [
        ("HostCpuCritical", "critical", "firing", now - timedelta(minutes=19), None,
         {"alertname": "HostCpuCritical", "severity": "critical", "host": "web-1", "metric": "host_cpu_percent",
          "tenant": "akonovia"},
         {"summary": "CPU above 95 % on web-1 for 1 min", "description": "host_cpu_percent = 97 on web-1"}),
        ("FilesystemUsageWarning", "warning", "firing", now - timedelta(hours=2), None,
         {"alertname": "FilesystemUsageWarning", "severity": "warning", "host": "db-1", "mount": "/data",
          "metric": "host_filesystem_used_percent", "tenant": "boreal-logistique"},
         {"summary": "Disk /data above 80 % on db-1", "description": "host_filesystem_used_percent = 84 on db-1"}),
        ("IngestionFailureRate", "warning", "resolved", now - timedelta(hours=5), now - timedelta(hours=4),
         {"alertname": "IngestionFailureRate", "severity": "warning", "company": "akonovia", "tenant": "akonovia"},
         {"summary": "Ingestion failure rate above 5 % for akonovia"}),
    ]
    with conn.cursor() as cur:
        for name, severity, state, starts, ends, labels, annotations in alerts:
            cur.execute(
                f"""INSERT INTO {SCHEMA}.alerts (fingerprint, alertname, state, severity, labels, annotations,
                        starts_at, ends_at, generator_url, run_id, asset_key, partition_key)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (uuid.uuid5(uuid.NAMESPACE_URL, name).hex[:16], name, state, severity, Jsonb(labels),
                 Jsonb(annotations), starts, ends, "http://127.0.0.1:3000/runs/0f1e2d3c", "0f1e2d3c",
                 "host_points", starts.strftime("%Y-%m-%d-%H:00")),
            )


def _insert_events(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """A deploy per company and hour (`v_events`), keyed as lib/custom/load.py stores them."""
    partitioning.ensure_partitions(conn, SCHEMA, "events", start, end)
    rows, hour = [], start
    while hour < end:
        for company in COMPANIES:
            ts, text = hour + timedelta(minutes=17), f"{company} release {hour:%H}"
            rows.append((company, "deploy", ts, Jsonb({"app": "shop"}), text, ts,
                         custom_load.event_key(company, "deploy", ts, {"app": "shop"}, text), "bi_sample"))
        hour += timedelta(hours=1)
    with conn.cursor() as cur:
        cur.executemany(f"""INSERT INTO {SCHEMA}.events (tenant, name, ts, metadata, text, received_at, event_key, source_file)
                            VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""", rows)


def _insert_anomalies(conn: psycopg.Connection, start: datetime, end: datetime) -> None:
    """Anomaly scores of every 5-minute bucket (`v_anomalies`), shaped as the scorer writes them but
    placed directly: the sample's three hours are too short for the detector to have learnt anything.
    The expected value is the series' mean, the band two deviations around it; flagged: `web-1`'s CPU
    when it runs hot (akonovia) and `db-1`'s when it comes back after its gap (boreal-logistique)."""
    from metrics_pipeline.lib.anomalies import describe

    partitioning.ensure_partitions(conn, SCHEMA, "anomaly_scores", start, end)
    rows = conn.execute(
        f"""SELECT r.series_id, r.bucket, r.avg, s.metric, s.resource, s.unit,
                   avg(r.avg) OVER w, coalesce(stddev_pop(r.avg) OVER w, 0)
            FROM {SCHEMA}.rollup_5m r JOIN {SCHEMA}.series s USING (series_id)
            WHERE r.bucket >= %s AND r.bucket < %s
            WINDOW w AS (PARTITION BY r.series_id) ORDER BY 1, 2""", (start, end)).fetchall()
    flags = {("web-1", end - timedelta(minutes=20)), ("db-1", start + timedelta(minutes=100))}
    values = []
    for sid, bucket, value, metric, resource, unit, mean, sd in rows:
        flagged = metric == "host_cpu_percent" and (resource, bucket) in flags
        lower, upper = mean - 2 * sd - 0.5, mean + 2 * sd + 0.5
        values.append((sid, bucket, value, mean, lower, upper, 0.93 if flagged else 0.02, 0.93 if flagged else 0.04,
                       flagged, describe(value, lower, upper, "%" if unit == "percent" else unit) if flagged else None))
    with conn.cursor() as cur:
        cur.executemany(f"""INSERT INTO {SCHEMA}.anomaly_scores (series_id, bucket, value, expected, lower, upper,
                                score, surprise, flagged, description)
                            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""", values)


def populate(dsn: str, now: datetime | None = None) -> Sample:
    """Fill a migrated, empty warehouse with the sample; returns where the data lies."""
    now = now or datetime.now(timezone.utc)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=3)
    rng = np.random.default_rng(11)
    for source, frame in (("host", _host_frame(rng, start, end)), ("cloudwatch", _cloudwatch_frame(rng, start, end)),
                          ("whatap", _whatap_frame(rng, start, end))):
        loader.load_points(Warehouse(dsn, SCHEMA), frame, source=source, start=start, end=end)
    rollups.refresh(Warehouse(dsn, SCHEMA), ["rollup_5m", "rollup_1h"], start, end)
    rollups.refresh_health(Warehouse(dsn, SCHEMA), start, end, now=now)  # before the day's: it sums the health
    rollups.refresh(Warehouse(dsn, SCHEMA), ["rollup_1d"], _day(start), _day(end - timedelta(microseconds=1)) + timedelta(days=1))
    with psycopg.connect(dsn, autocommit=True) as conn:
        _insert_ingestion_runs(conn, start, end)
        _insert_events(conn, start, end)
        _insert_anomalies(conn, start, end)
        with conn.transaction():
            _insert_sla(conn, start, end, now)
            _insert_alerts(conn, now)
    return Sample(dsn=dsn, now=now, start=start, end=end)


@contextlib.contextmanager
def bi_login(admin_dsn: str) -> Iterator[str]:
    """A fresh read-only BI login (as `metrics-pipeline bi-role` makes it); yields its DSN, then drops it."""
    role, password = f"bi_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    bi.ensure_role(Warehouse(admin_dsn, SCHEMA), role, password=password)
    try:
        yield make_conninfo(admin_dsn, user=role, password=password)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP OWNED BY "{role}"')
            conn.execute(f'DROP ROLE "{role}"')


@contextlib.contextmanager
def sample_warehouse(pg_server, template: str) -> Iterator[tuple[Sample, str]]:
    """A migrated database holding the sample, and the DSN of a BI login on it; dropped afterwards.

    Module-scoped in the tests (the conftest's `warehouse_dsn` is per test): the sample is read-only
    for them, and building it once keeps one test per dashboard query cheap.
    """
    name = pg_server.create_database(template=template)
    try:
        sample = populate(pg_server.dsn(name))
        with bi_login(sample.dsn) as bi_dsn:
            yield sample, bi_dsn
    finally:
        pg_server.drop_database(name)
