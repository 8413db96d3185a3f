"""The pipeline's health as the warehouse shows it, read in one go for a Prometheus scrape (issue 19).

`read(warehouse)` answers, with a handful of cheap statements (the SQL files `sql/health_*.sql`):
per point source the newest sample and the points of the last hour; the newest ingestion run;
quarantined records of the last day; landing files not committed yet; firing alerts and their
delivery state; the newest bucket of every derived table; series that went silent. "Cheap" is the
design constraint, since a scrape comes every few seconds: every statement reads an index in
proportion to what it reports (the newest partitions, a recent window, the rows that wait), never a
table's whole history; `docs/operations.md` gives the measured costs.

Only aggregates per source, kind, table or severity leave this module: no tenant, no label of a
pushed series, no file name (SPEC §12: `/metrics` exposes per-source aggregates only). No FastAPI,
no prometheus_client here: the API turns a `PipelineHealth` into metrics (`api/metrics.py`).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from metrics_pipeline.lib.warehouse.db import Warehouse

_SQL = Path(__file__).parent / "sql"

#: the source under which ingestion-job runs are reported (their newest run's start)
INGESTION_SOURCE = "ingestion_logs"
#: derived tables whose newest bucket is reported
DERIVED_TABLES = ("rollup_5m", "rollup_1h", "rollup_1d", "series_health_hourly", "sla_hourly", "sla_daily")
#: alert delivery targets (lib/alerts/delivery.py SENT_COLUMN)
TARGETS = ("alertmanager", "webhook")
SEVERITIES = ("warning", "critical")
#: the per-series probe of the newest sample opens the partitions of this last stretch only
RECENT = timedelta(days=1)
QUARANTINE_WINDOW = timedelta(days=1)
#: alerts resolved this long after they started are no longer looked at for delivery
DELIVERY_WINDOW = timedelta(days=7)
#: quarantine sources that Kafka topics feed (job logs; measures and events)
KAFKA_SOURCES = ("ingestion_logs", "custom")


@dataclasses.dataclass(frozen=True)
class LandingWaiting:
    files: int  # indexed files holding records of an hour not committed yet
    oldest_hour: datetime | None  # the oldest such hour


@dataclasses.dataclass(frozen=True)
class Delivery:
    pending: int  # alerts the target has not had since their last change
    failing: int  # alerts whose last attempt to the target failed
    last_sent: datetime | None  # when it last got one


@dataclasses.dataclass(frozen=True)
class SilentSeries:
    silent: int  # series without a sample in the hour ("no data")
    reporting: int  # series with at least one


@dataclasses.dataclass(frozen=True)
class KafkaPartition:
    """The Kafka consumer's record of one partition (lib/kafka/health.py writes it at each commit)."""

    group_id: str
    topic: str
    partition: int
    lag: int
    committed_offset: int
    high_watermark: int | None
    messages: int
    bytes: int
    refused: int
    files: int
    committed_at: datetime


@dataclasses.dataclass(frozen=True)
class KafkaConsumers:
    running: int
    broker_unreachable: int  # running consumers that cannot reach their brokers
    last_report: datetime


@dataclasses.dataclass(frozen=True)
class PipelineHealth:
    """One reading; every mapping holds only what exists (a source never loaded is absent)."""

    read_at: datetime
    duration_s: float
    newest_sample: dict[str, datetime]  # source -> newest sample (ingestion_logs: newest run start)
    points_last_hour: dict[str, int]  # point source -> points in [read_at - 1 h, read_at)
    quarantined_last_day: dict[str, int]  # quarantine source -> records of the last 24 hours
    landing_waiting: dict[str, LandingWaiting]  # landing_files kind -> waiting files
    alerts_firing: dict[tuple[str, str], int]  # (severity, source) -> firing alerts, zeros included
    delivery: dict[str, Delivery]  # target -> delivery state
    newest_bucket: dict[str, datetime]  # derived table -> its newest bucket
    silent_series: dict[str, SilentSeries]  # point source -> series silent in `silent_hour`
    silent_hour: datetime | None  # the newest complete hour of series_health_hourly
    kafka_partitions: tuple[KafkaPartition, ...] = ()
    kafka_consumers: dict[str, KafkaConsumers] = dataclasses.field(default_factory=dict)  # group ->
    kafka_quarantined_last_day: dict[str, int] = dataclasses.field(default_factory=dict)  # topic ->


@cache
def _sql(name: str) -> str:
    return (_SQL / f"health_{name}.sql").read_text()


def _statement(name: str, schema: str) -> str:
    return _sql(name).replace("{{schema}}", schema)


def statements(schema: str, now: datetime) -> dict[str, tuple[str, dict | None]]:
    """Every statement of a reading, by name, with its parameters (the tests EXPLAIN each one)."""
    buckets = " UNION ALL ".join(f"SELECT '{table}', (SELECT max(bucket) FROM {schema}.{table})"
                                 for table in DERIVED_TABLES)
    return {
        "newest_samples": (_statement("newest_samples", schema), {"since": now - RECENT}),
        "points_last_hour": (_statement("points_last_hour", schema), {"since": now - timedelta(hours=1)}),
        "newest_run": (f"SELECT max(started_at) FROM {schema}.ingestion_runs", None),
        "quarantine": (_statement("quarantine", schema), {"since": now - QUARANTINE_WINDOW}),
        "landing_waiting": (_statement("landing_waiting", schema), None),
        "alerts_firing": (f"""SELECT severity, labels ->> 'source', count(*) FROM {schema}.alerts
                              WHERE state = 'firing' GROUP BY 1, 2""", None),
        "alert_delivery": (_statement("alert_delivery", schema), {"since": now - DELIVERY_WINDOW}),
        "newest_buckets": (buckets, None),
        "silent_series": (_statement("silent_series", schema), {"now": now}),
        "kafka_partitions": (_statement("kafka_partitions", schema), None),
        "kafka_consumers": (_statement("kafka_consumers", schema), None),
        "kafka_quarantine": (_statement("kafka_quarantine", schema),
                             {"sources": list(KAFKA_SOURCES), "since": now - QUARANTINE_WINDOW}),
    }


def read(warehouse: Warehouse, now: datetime | None = None, *, connect_timeout: float = 2.0,
         statement_timeout_s: float = 5.0) -> PipelineHealth:
    """Read the pipeline's health from the warehouse.

    Args:
        warehouse: where to read (a `Warehouse`, or anything with its `connect()`, such as the API's
            read pool), as its login: the base tables, not the BI views (no tenant filter applies to
            aggregates that name no tenant).
        now: the reading's "now" (default: the wall clock).
        connect_timeout: seconds to wait for a connection.
        statement_timeout_s: a statement running longer is cancelled (the reading fails).

    Raises:
        WarehouseUnavailable: the warehouse cannot be reached (its message names no password).
        psycopg.Error: a statement failed (e.g. the timeout).
    """
    now = now or datetime.now(timezone.utc)
    started = time.perf_counter()
    # One read-only transaction (a consistent snapshot), its settings transaction-local: `warehouse`
    # may lend pooled connections (the API's `ReadPool`), which must go back as they came.
    with warehouse.connect(connect_timeout=max(2, round(connect_timeout))) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(f"SET LOCAL statement_timeout = {int(statement_timeout_s * 1000)}")
        got = {name: conn.execute(sql, params).fetchall()
               for name, (sql, params) in statements(warehouse.schema, now).items()}
    newest = {source: ts for source, ts in got["newest_samples"] if ts is not None}
    points = dict.fromkeys(newest, 0)
    points.update(got["points_last_hour"])
    firing = {(severity, source): 0 for severity in SEVERITIES for source in newest}
    [(run,)] = got["newest_run"]
    if run is not None:
        newest[INGESTION_SOURCE] = run
        firing.update({(severity, INGESTION_SOURCE): 0 for severity in SEVERITIES})
    firing.update({(severity, source or ""): n for severity, source, n in got["alerts_firing"]})
    [state] = got["alert_delivery"]
    silent = got["silent_series"]
    return PipelineHealth(
        read_at=now,
        duration_s=time.perf_counter() - started,
        newest_sample=newest,
        points_last_hour=points,
        quarantined_last_day=dict(got["quarantine"]),
        landing_waiting={kind: LandingWaiting(files, oldest) for kind, files, oldest in got["landing_waiting"]},
        alerts_firing=firing,
        delivery={target: Delivery(*state[3 * i:3 * i + 3]) for i, target in enumerate(TARGETS)},
        newest_bucket={table: bucket for table, bucket in got["newest_buckets"] if bucket is not None},
        silent_series={source: SilentSeries(n, reporting) for source, _, n, reporting in silent},
        silent_hour=silent[0][1] if silent else None,
        kafka_partitions=tuple(KafkaPartition(*row) for row in got["kafka_partitions"]),
        kafka_consumers={group: KafkaConsumers(n, down, last) for group, n, down, last in got["kafka_consumers"]},
        kafka_quarantined_last_day=dict(got["kafka_quarantine"]),
    )
