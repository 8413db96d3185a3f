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
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from psycopg.rows import dict_row

from metrics_pipeline.lib.sla.config import CONFIG_ENV, ConfigError, SlaConfig, load_config  # noqa: F401
from metrics_pipeline.lib.warehouse import replace_window as windows
from metrics_pipeline.lib.warehouse.db import Warehouse

_SQL = Path(__file__).parent / "sql"

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


def _check_window(grain: str, start: datetime, end: datetime) -> tuple[str, timedelta]:
    if grain not in GRAINS:
        raise ValueError(f"unknown SLA grain {grain!r}; expected one of {list(GRAINS)}")
    table, width = GRAINS[grain]
    windows.check_aligned(table, start, end, width)
    return table, width


def refresh(warehouse: Warehouse, grain: str, start: datetime, end: datetime, config: SlaConfig,
            now: datetime | None = None, *, worst_limit: int = 10) -> SlaResult:
    """Recompute `sla_hourly` (grain "hour") or `sla_daily` (grain "day") over [start, end), atomically.

    Args:
        warehouse: the warehouse (migrated).
        grain: "hour" or "day".
        start, end: timezone-aware window aligned to the grain (UTC hours or days).
        config: targets and the silent-job lookback (`load_config()`).
        now: the current time (default: the clock); buckets starting at or after it get no rows, the
            in-progress bucket is measured as of it.
        worst_limit: how many breaching rows to return in `SlaResult.worst`.
    Returns:
        The SlaResult of the window (rows written, replaced, breaching, the worst rows).
    """
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    table, width = _check_window(grain, start, end)
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    params = {"now": now, "width": width, "lookback": config.silent_job_lookback, "targets": config.rules_json()}
    with warehouse.connect() as conn, conn.transaction():
        done = windows.replace_window(conn, schema, table, "ingestion_runs", start, end,
                                      sql("refresh", schema, table), params)
        if done is None:
            return SlaResult(table, start, end, skipped="ingestion_runs expired or never loaded: existing rows kept")
        covered, rows, deleted = done.start, done.rows, done.deleted
        window = {"start": covered, "end": end}
        with conn.cursor(row_factory=dict_row) as cur:
            summary = cur.execute(sql("summary", schema, table), window).fetchone()
            worst = cur.execute(sql("worst", schema, table), {**window, "limit": worst_limit}).fetchall()
    skipped = f"before {covered.isoformat()}: ingestion_runs expired, existing rows kept" if covered > start else None
    return SlaResult(table, covered, end, rows=rows, deleted=deleted, worst=tuple(worst), skipped=skipped, **summary)
