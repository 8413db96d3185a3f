"""Rollups (5 m, 1 h, 1 d) and per-series health, computed in PostgreSQL with set-based SQL.

Each tier replaces its window in one statement for the whole window, however long (a week of
backfill is one INSERT .. SELECT, not a loop per hour): `rollup_5m` from the raw points,
`rollup_1h` from `rollup_5m` and `rollup_1d` from `rollup_1h`.

Percentiles must survive merging (SPEC §3), so every row has a sparse log-scale histogram
(`sketch_keys`, `sketch_counts`; the DDSketch mapping with 1 % relative accuracy, see migration
0005). Coarser tiers add the bins of the finer rows, and p50/p95/p99 are read from the merged bins:
within 1 % of the true sample quantile at every tier, never an average of percentiles.
The sketches are kept apart from the rows, in `rollup_5m_sketch`, `rollup_1h_sketch` and
`rollup_1d_sketch` (migration 0013): they were four fifths of every row, and BI scans, which never
read them, paid for them on every page. A tier's statement writes both tables; the coarser tier reads
a finer row's sketch by a primary-key probe.

Each tier's statement is one pipeline of sorts, window functions and aggregates, with no join of
two aggregated inputs: points (or finer rows) -> one row per sketch bin -> one row per bucket. Rows
that must be looked up (`last`, how many values equal the minimum) are scalar subqueries, i.e.
primary-key probes. So the plan cannot turn on statistics: a freshly loaded hour is never analysed
when it is rolled up, and an earlier shape (bucket statistics and sketch percentiles aggregated
separately, then joined) became a nested loop re-aggregating the window once per bucket (issue 16:
165 s instead of 0.27 s for 515 series x 1 hour). ANALYZE at the end of each load would also have
fixed that plan, but it costs every load an ANALYZE of its day partition, it still leaves the plan to
the statistics (a write that does not go through the loader, or one landing between the ANALYZE and
the rollup, brings the plan back), and the 1 h tier reads 5-minute rows written in the same
transaction, which nothing has analysed.

Re-running gives the same rows, bit for bit: floating-point sums are added in a defined order (points
in value order within a bin, bins in key order, finer buckets in time order), never in the order rows
happen to arrive, so a day rolled up in one run or hour by hour, in any order, gives the same bytes.

Percentiles are the bin's representative, within 1 %, except when the requested rank falls among the
values equal to the bucket's minimum or maximum (`min_count`, `max_count`, migration 0010): then the
exact value, so a p95 of a 0/1 metric reads 1, not 0.99.

Windows are replaced the way every derived table is (`metrics_pipeline.lib.warehouse.replace_window`): aligned,
locked per table, and never recomputed from input that retention has dropped.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

from metrics_pipeline.lib.warehouse import pack, partitioning
from metrics_pipeline.lib.warehouse import replace_window as windows
from metrics_pipeline.lib.warehouse.db import Warehouse

_SQL = Path(__file__).parent / "sql"

#: Relative accuracy of the stored percentiles (the sketch's alpha; see migration 0005).
RELATIVE_ACCURACY = 0.01


@dataclasses.dataclass(frozen=True)
class Tier:
    table: str
    source: str
    width: timedelta
    width_sql: str


TIERS: dict[str, Tier] = {
    "rollup_5m": Tier("rollup_5m", "points", timedelta(minutes=5), "5 minutes"),
    "rollup_1h": Tier("rollup_1h", "rollup_5m", timedelta(hours=1), "1 hour"),
    "rollup_1d": Tier("rollup_1d", "rollup_1h", timedelta(days=1), "1 day"),
}


@dataclasses.dataclass(frozen=True)
class TierResult:
    """What one tier's refresh did: rows written over [start, end), or why it kept the old rows."""

    table: str
    start: datetime
    end: datetime
    rows: int = 0
    deleted: int = 0
    skipped: str | None = None

    def as_metadata(self) -> dict[str, object]:
        """The metadata each rollup asset reports (`dagster/row_count` is Dagster's key)."""
        return {
            "dagster/row_count": self.rows,
            "rows_replaced": self.deleted,
            "window": f"{self.start.isoformat()} .. {self.end.isoformat()}",
            "percentile_relative_accuracy": RELATIVE_ACCURACY,
            **({"kept": self.skipped} if self.skipped else {}),
        }


@cache
def _read(name: str) -> str:
    return (_SQL / name).read_text()


def tier_sql(schema: str, table: str, points: str | None = None) -> str:
    """The INSERT .. SELECT that fills `table` over %(start)s .. %(end)s (schema already validated);
    the 5-minute tier reads `points` (default: the schema's `points` table)."""
    tier = TIERS[table]
    body = _read("from_points.sql") if tier.source == "points" else _read("merge.sql")
    text = body + _read("insert.sql")
    return (
        text.replace("{{points}}", points or f"{schema}.points").replace("{{schema}}", schema)
        .replace("{{source_sketches}}", partitioning.SKETCH_TABLES.get(tier.source, ""))
        .replace("{{sketches}}", partitioning.SKETCH_TABLES[tier.table])
        .replace("{{source}}", tier.source).replace("{{target}}", tier.table).replace("{{width}}", tier.width_sql)
    )


def health_sql(schema: str) -> str:
    return _read("health.sql").replace("{{schema}}", schema)


def _check_aligned(table: str, start: datetime, end: datetime) -> None:
    width = TIERS[table].width if table in TIERS else timedelta(hours=1)
    windows.check_aligned(table, start, end, width)


def _replace(conn, schema, table, sql, start, end, params) -> TierResult:
    """Delete [start, end) of `table` and insert what `sql` computes, in the caller's transaction."""
    source = TIERS[table].source if table in TIERS else "points"
    done = windows.replace_window(conn, schema, table, source, start, end, sql, params)
    if done is None:
        return TierResult(table, start, end, skipped="input expired or never loaded: existing rows kept")
    skipped = f"before {done.start.isoformat()}: input expired, existing rows kept" if done.start > start else None
    return TierResult(table, done.start, end, rows=done.rows, deleted=done.deleted, skipped=skipped)


def refresh(warehouse: Warehouse, tables: list[str], start: datetime, end: datetime) -> list[TierResult]:
    """Recompute `tables` (in tier order) over [start, end), atomically: one transaction for all.

    Args:
        warehouse: the warehouse (migrated).
        tables: any of "rollup_5m", "rollup_1h", "rollup_1d"; a coarser tier reads the finer one's
            fresh rows when both are listed.
        start, end: timezone-aware window, aligned to the coarsest tier listed.
    Returns:
        One TierResult per table.
    """
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    ordered = [t for t in TIERS if t in tables]
    unknown = set(tables) - set(TIERS)
    if unknown:
        raise ValueError(f"unknown rollup tables {sorted(unknown)}; expected some of {list(TIERS)}")
    for table in ordered:
        _check_aligned(table, start, end)
    results = []
    daily = "rollup_1d" in ordered
    with warehouse.connect() as conn:
        for table in ordered:
            partitioning.ensure_partitions(conn, schema, table, start, end)
        if daily:
            partitioning.ensure_partitions(conn, schema, "series_health_daily", start, end)
            partitioning.ensure_partitions(conn, schema, "rollup_1mo_sketch", *month_window(start, end))
        with conn.transaction():
            for table in ordered:
                sql = None
                if TIERS[table].source == "points" and pack.packed_in(conn, schema, start, end):
                    sql = tier_sql(schema, table, _stage_raw(conn, schema, start, end))
                results.append(_replace(conn, schema, table, sql or tier_sql(schema, table), start, end, {}))
            if daily:  # what goes with the days, not results of their own (migrations 0027, 0028)
                windows.replace_window(conn, schema, "series_health_daily", "series_health_hourly", start, end,
                                       _read("health_daily.sql").replace("{{schema}}", schema), {})
                month_sketches(conn, schema, start, end)
    return results


def _stage_raw(conn, schema: str, start: datetime, end: datetime) -> str:
    """A temporary copy of the raw points of [start, end), both tiers, keyed like `points`: the
    5-minute SQL probes its input by (series_id, ts) for each bucket, which on a packed hour would
    decompress the hour's arrays again for every probe. Costs about what loading the rows did."""
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _mp_raw (series_id integer, ts timestamptz, value double precision, "
                 "PRIMARY KEY (series_id, ts)) ON COMMIT DROP")
    conn.execute("TRUNCATE _mp_raw")
    conn.execute(f"INSERT INTO _mp_raw SELECT series_id, ts, value FROM {schema}.points_in(%s, %s) "
                 "ORDER BY series_id, ts", (start, end))
    conn.execute("ANALYZE _mp_raw")
    return "_mp_raw"


def month_window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    """The UTC months overlapping [start, end), as [first month's start, the next month after the last)."""
    first = start.astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    last = (end - timedelta(microseconds=1)).astimezone(timezone.utc).replace(day=1, hour=0, minute=0, second=0,
                                                                                microsecond=0)
    return first, (last + timedelta(days=32)).replace(day=1)


def month_sketches(conn, schema: str, start: datetime, end: datetime) -> int:
    """Rewrite the monthly sketches (migration 0028) of the months overlapping [start, end) from the
    daily sketches, in the caller's transaction (after the days' rollup_1d rows are written). A month
    is rewritten whole: ~31 daily sketches a series, about what the day's own merge of 24 hourly ones
    costs. Returns the rows written."""
    first, after = month_window(start, end)
    conn.execute(f"DELETE FROM {schema}.rollup_1mo_sketch WHERE bucket >= %s AND bucket < %s", (first, after))
    return conn.execute(_read("month_sketches.sql").replace("{{schema}}", schema),
                        {"start": first, "end": after}).rowcount


#: Defaults of SPEC §6, used for "time above thresholds" unless configured otherwise.
DEFAULT_THRESHOLDS: tuple[dict, ...] = tuple(
    {"metric": m, "warning": w, "critical": c}
    for names, w, c in (
        (("host_cpu_percent", "aws_ec2_cpuutilization", "aws_rds_cpuutilization", "whatap_server_cpu"), 80.0, 95.0),
        (("host_memory_percent", "whatap_server_memory", "whatap_server_memory_pused"), 85.0, 95.0),
        (("host_filesystem_used_percent", "whatap_server_disk_used", "whatap_server_disk_usedpercent"), 80.0, 90.0),
    )
    for m in names
)


def refresh_health(warehouse: Warehouse, start: datetime, end: datetime, *, now: datetime | None = None,
                   thresholds: list[dict] | tuple[dict, ...] = DEFAULT_THRESHOLDS,
                   lookback: timedelta = timedelta(hours=24)) -> TierResult:
    """Recompute `series_health_hourly` over the hours of [start, end), atomically."""
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    _check_aligned("series_health_hourly", start, end)
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    params = {"now": now, "lookback": f"{int(lookback.total_seconds())} seconds",
              "thresholds": json.dumps(list(thresholds))}
    with warehouse.connect() as conn:
        partitioning.ensure_partitions(conn, schema, "series_health_hourly", start, end)
        with conn.transaction():
            return _replace(conn, schema, "series_health_hourly", health_sql(schema), start, end, params)
