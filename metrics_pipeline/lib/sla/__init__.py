"""SLA and failure metrics of the data-ingestion jobs (SPEC §5), computed in PostgreSQL.

One INSERT .. SELECT (`sql/refresh.sql`) fills `sla_hourly` or `sla_daily` for a whole window, however
many buckets: a week of hourly backfill is one statement, not a loop per hour. Percentiles are exact
(`percentile_cont` over the raw runs of the bucket), so the daily table is computed from
`ingestion_runs` directly, never from hourly rows.

A job is (company, zone, source_system, object). Three choices shape the rows:
* Silence is visible. A job seen during the lookback before a bucket (default 7 days) but with no run
  in it still gets a row (runs = 0) so a job that stopped running shows up as a freshness breach
  instead of vanishing from the table.
* Freshness is "as of" the bucket end, or `now` for the in-progress bucket, over all of
  `ingestion_runs`, not only the bucket. A job that never succeeded counts from its first run.
* Targets are configuration (`config.SlaConfig`), passed as one jsonb parameter and matched per job
  in SQL, so changing a target never needs a code change.

A window is replaced atomically: delete it and insert, one transaction, under an advisory lock per
table. A window older than the oldest `ingestion_runs` partition (dropped by retention) keeps its rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from metrics_pipeline.lib import migrate, partitioning, settings
from metrics_pipeline.lib.sla.config import CONFIG_ENV, ConfigError, SlaConfig, load_config  # noqa: F401

_SQL = Path(__file__).parent / "sql"
_ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)

#: grain -> (table, bucket width)
GRAINS: dict[str, tuple[str, timedelta]] = {
    "hour": ("sla_hourly", timedelta(hours=1)),
    "day": ("sla_daily", timedelta(days=1)),
}


@dataclasses.dataclass(frozen=True)
class SlaResult:
    """What one refresh did over [start, end): rows written and breaching, or why it kept old rows."""

    table: str
    start: datetime
    end: datetime
    rows: int = 0
    deleted: int = 0
    groups: int = 0
    groups_breaching: int = 0
    rows_breaching: int = 0
    worst: tuple[dict, ...] = ()
    skipped: str | None = None


@cache
def _read(name: str) -> str:
    return (_SQL / name).read_text()


def sql(name: str, schema: str, table: str) -> str:
    """`sql/<name>.sql` for `schema.table` (both validated identifiers)."""
    return _read(f"{name}.sql").replace("{{schema}}", schema).replace("{{table}}", table)


def _utc(ts: datetime, name: str) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {ts!r}")
    return ts.astimezone(timezone.utc)


def _check_window(grain: str, start: datetime, end: datetime) -> tuple[str, timedelta]:
    if grain not in GRAINS:
        raise ValueError(f"unknown SLA grain {grain!r}; expected one of {list(GRAINS)}")
    table, width = GRAINS[grain]
    for name, ts in (("start", start), ("end", end)):
        if (ts - _ORIGIN) % width:
            raise ValueError(f"{table}: window {name} {ts.isoformat()} is not aligned to {width}")
    if end <= start:
        raise ValueError(f"{table}: empty window {start.isoformat()} .. {end.isoformat()}")
    return table, width


def _lock(conn: psycopg.Connection, schema: str, table: str) -> None:
    # Automation and a backfill may refresh overlapping windows; between DELETE and INSERT they would
    # race. Refreshes are short, so they queue per table.
    digest = hashlib.sha256(f"metrics_pipeline.sla:{schema}.{table}".encode()).digest()
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),))


def refresh(dsn: str, schema: str, grain: str, start: datetime, end: datetime, config: SlaConfig,
            now: datetime | None = None, *, worst_limit: int = 10) -> SlaResult:
    """Recompute `sla_hourly` (grain "hour") or `sla_daily` (grain "day") over [start, end), atomically.

    Args:
        dsn: warehouse DSN.
        schema: warehouse schema.
        grain: "hour" or "day".
        start, end: timezone-aware window aligned to the grain (UTC hours or days).
        config: targets and the silent-job lookback (`load_config()`).
        now: the current time (default: the clock); buckets starting at or after it get no rows, the
            in-progress bucket is measured as of it.
        worst_limit: how many breaching rows to return in `SlaResult.worst`.
    Returns:
        The SlaResult of the window (rows written, replaced, breaching, the worst rows).
    """
    schema = settings.validate_identifier(schema, what="schema")
    start, end = _utc(start, "start"), _utc(end, "end")
    table, width = _check_window(grain, start, end)
    now = _utc(now or datetime.now(timezone.utc), "now")
    migrate.ensure_migrated(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        # Buckets are UTC hours and days: generate_series and `bucket + interval '1 day'` follow the
        # session time zone, so pin it for this transaction.
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        oldest = partitioning.oldest_partition_start(conn, schema, "ingestion_runs")
        covered = None if oldest is None else max(start, oldest)
        if covered is None or covered >= end:
            return SlaResult(table, start, end, skipped="ingestion_runs expired or never loaded: existing rows kept")
        _lock(conn, schema, table)
        deleted = conn.execute(
            f"DELETE FROM {schema}.{table} WHERE bucket >= %s AND bucket < %s", (covered, end)
        ).rowcount
        params = {"start": covered, "end": end, "now": now, "width": width,
                  "lookback": config.silent_job_lookback, "targets": config.rules_json()}
        rows = conn.execute(sql("refresh", schema, table), params).rowcount
        window = {"start": covered, "end": end}
        with conn.cursor(row_factory=dict_row) as cur:
            summary = cur.execute(sql("summary", schema, table), window).fetchone()
            worst = cur.execute(sql("worst", schema, table), {**window, "limit": worst_limit}).fetchall()
    skipped = f"before {covered.isoformat()}: ingestion_runs expired, existing rows kept" if covered > start else None
    return SlaResult(table, covered, end, rows=rows, deleted=deleted, worst=tuple(worst), skipped=skipped, **summary)
