"""A small warehouse whose pipeline health is known exactly, for `/metrics` (issue 19).

Rows are written straight into the tables `lib/warehouse/health.py` reads, relative to `now`, with
one of each case a reading must get right: a source whose newest sample is days old (beyond the
one-day probe), a series silent in the last complete hour and another only in the hour in progress,
quarantine rows inside and outside the last day, a landing file half committed, one fully committed
and an empty one, firing and resolved alerts, one whose webhook delivery failed. Tenants carry names
no scrape may show (`TENANT`).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import psycopg
from psycopg.types.json import Jsonb

from metrics_pipeline.lib.warehouse import partitioning

SCHEMA = "metrics"
TENANT = "tenant-nobody-may-see"


@dataclasses.dataclass(frozen=True)
class Expected:
    now: datetime
    hour: datetime  # the hour in progress
    newest_sample: dict[str, datetime]
    points_last_hour: dict[str, int]
    quarantined_last_day: dict[str, int]
    firing: dict[tuple[str, str], int]  # the non-zero ones


def _series(conn, source: str, metric: str, resource: str) -> int:
    return conn.execute(
        f"""INSERT INTO {SCHEMA}.series (source, metric, resource, labels, unit)
            VALUES (%s, %s, %s, %s, 'percent') RETURNING series_id""",
        (source, metric, resource, Jsonb({"host": resource, "tenant": TENANT})),
    ).fetchone()[0]


def populate(conn: psycopg.Connection, now: datetime) -> Expected:
    """Fill a migrated, empty warehouse (`conn` in autocommit mode); returns what a reading must say."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    for table in ("points", "rollup_5m", "rollup_1h", "series_health_hourly", "ingestion_runs"):
        partitioning.ensure_partitions(conn, SCHEMA, table, now - timedelta(days=4), now + timedelta(hours=1))
    host_a = _series(conn, "host", "host_cpu_percent", "web-1")
    host_b = _series(conn, "host", "host_cpu_percent", "db-1")
    cloudwatch = _series(conn, "cloudwatch", "aws_ec2_cpuutilization", "i-1")
    whatap = _series(conn, "whatap", "whatap_server_cpu", "was-1")
    custom = _series(conn, "custom", "orders_processed", "")
    points = [
        (host_a, now - timedelta(minutes=40)), (host_a, now - timedelta(seconds=30)),
        (host_b, now - timedelta(minutes=10)),
        (cloudwatch, now - timedelta(hours=2)),
        (whatap, now - timedelta(days=3, minutes=5)), (whatap, now - timedelta(days=3)),  # older than the probe
        (custom, now - timedelta(minutes=1)),
    ]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {SCHEMA}.points (series_id, ts, value) VALUES (%s, %s, 1.0)", points)
        rollup = [(host_a, now - timedelta(minutes=20), 10), (host_b, now - timedelta(minutes=10), 20),
                  (host_a, now - timedelta(hours=2), 99)]  # the last one is older than an hour
        cur.executemany(f"""INSERT INTO {SCHEMA}.rollup_5m (series_id, bucket, count, sum, min, max, avg, last)
                            VALUES (%s, %s, %s, 1, 1, 1, 1, 1)""", rollup)
        cur.execute(f"""INSERT INTO {SCHEMA}.rollup_1h (series_id, bucket, count, sum, min, max, avg, last)
                        VALUES (%s, %s, 1, 1, 1, 1, 1, 1)""", (host_a, hour - timedelta(hours=1)))
        health = [(host_a, hour - timedelta(hours=1), False), (host_b, hour - timedelta(hours=1), True),
                  (cloudwatch, hour - timedelta(hours=1), False),
                  (host_a, hour, True), (host_b, hour, True)]  # the hour in progress: not complete, not read
        cur.executemany(f"""INSERT INTO {SCHEMA}.series_health_hourly (series_id, bucket, received, no_data)
                            VALUES (%s, %s, 1, %s)""", health)
        runs = [now - timedelta(hours=3), now - timedelta(minutes=7)]
        cur.executemany(
            f"""INSERT INTO {SCHEMA}.ingestion_runs (sequence_no, company, zone, source_system, object_id, object,
                    transformation, status, started_at, ended_at, duration_s, source_file, source_position)
                VALUES (%s, %s, 'z', 's', 'o', 'o', 't', 'SUCCESS', %s, %s, 1, 'f.json', 0)""",
            [(str(i), TENANT, ts, ts + timedelta(seconds=1)) for i, ts in enumerate(runs)])
        quarantine = [("ingestion_logs", hour - timedelta(hours=h)) for h in (0, 1, 5)]
        quarantine += [("ingestion_logs", hour - timedelta(days=2)), ("custom_measures", hour)]
        cur.executemany(f"""INSERT INTO {SCHEMA}.quarantine (source, source_file, position, raw, reason, record_hour)
                            VALUES (%s, %s, %s, 'raw', 'bad', %s)""",
                        [(source, f"{TENANT}/file.json", i, h) for i, (source, h) in enumerate(quarantine)])
        files = [
            ("ingestion_logs", "a.json", [hour - timedelta(hours=3)], [hour - timedelta(hours=3)], now),
            ("ingestion_logs", "b.json", [hour - timedelta(hours=2), hour - timedelta(hours=1)],
             [hour - timedelta(hours=2)], None),  # half committed: waits for hour - 1
            ("ingestion_logs", "c.json", [hour], [], None),
            ("ingestion_logs", "empty.json", [], [], None),  # holds no hour: nothing waits
            ("custom_measures", f"custom/measures/{TENANT}/d.jsonl", [hour - timedelta(hours=1)],
             [hour - timedelta(hours=1)], now),
        ]
        cur.executemany(f"""INSERT INTO {SCHEMA}.landing_files
                                (kind, key, etag, size, hours, processed_hours, processed_at)
                            VALUES (%s, %s, 'e', 1, %s::timestamptz[], %s::timestamptz[], %s)""", files)
        alerts = [
            ("HostCpuCritical", "critical", "firing", "host", "web-1", now - timedelta(minutes=1), None),
            ("HostCpuCritical", "critical", "firing", "host", "db-1", now - timedelta(minutes=3), "webhook: HTTP 500"),
            ("Ec2CpuHigh", "warning", "firing", "cloudwatch", "i-1", None, None),
            ("HostCpuCritical", "critical", "resolved", "host", "web-1", now - timedelta(hours=1), None),
        ]
        cur.executemany(
            f"""INSERT INTO {SCHEMA}.alerts (fingerprint, alertname, state, severity, labels, starts_at, ends_at,
                    last_sent_at, last_error)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(f"fp{i}", name, state, severity, Jsonb({"alertname": name, "severity": severity, "source": source,
                                                      "resource": resource, "tenant": TENANT}),
              now - timedelta(hours=2, minutes=i), now - timedelta(hours=1) if state == "resolved" else None,
              sent, error)
             for i, (name, severity, state, source, resource, sent, error) in enumerate(alerts)])
        cur.execute(f"""INSERT INTO {SCHEMA}.sla_hourly (bucket, company, zone, source_system, object, runs, successes,
                            failures, sla_breaches, sla_met) VALUES (%s, %s, 'z', 's', 'o', 1, 1, 0, 0, true)""",
                    (hour - timedelta(hours=1), TENANT))
    return Expected(
        now=now,
        hour=hour,
        newest_sample={"host": now - timedelta(seconds=30), "cloudwatch": now - timedelta(hours=2),
                       "whatap": now - timedelta(days=3), "custom": now - timedelta(minutes=1),
                       "ingestion_logs": now - timedelta(minutes=7)},
        points_last_hour={"host": 30, "cloudwatch": 0, "whatap": 0, "custom": 0},
        quarantined_last_day={"ingestion_logs": 3, "custom_measures": 1},
        firing={("critical", "host"): 2, ("warning", "cloudwatch"): 1},
    )
