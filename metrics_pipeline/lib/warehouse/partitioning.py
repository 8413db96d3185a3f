"""Time partitions of the warehouse tables, created on demand for any window.

Each partitioned table has a fixed grain (points by UTC day, rollup_1h by month, ...). Before a
load writes into [start, end), `ensure_partitions` creates every missing child partition covering
that range, years back if a backfill asks for it. There is deliberately no DEFAULT partition: with
one, every new partition would have to scan it, and expiry could not drop whole partitions.

Partitions are created in their own short transaction under an advisory lock (two concurrent runs
for the same new day would otherwise race on CREATE TABLE), before the load's own transaction, so
the load never holds the parent's lock while it copies data.

A rollup tier keeps its percentile sketches in a table of their own (`rollup_1h_sketch` for
`rollup_1h`, migration 0013), partitioned the same way: whoever creates a partition of the tier
creates the sketch table's partition of the same range with it, and retention drops both.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import psycopg

#: rollup tier -> the table holding the percentile sketches of its rows (migration 0013).
SKETCH_TABLES: dict[str, str] = {tier: f"{tier}_sketch" for tier in ("rollup_5m", "rollup_1h", "rollup_1d")}

#: table -> partition grain. Retention (SPEC §3) drops whole partitions of these tables.
PARTITIONED_TABLES: dict[str, str] = {
    "points": "day",
    # closed hours of raw points, a row per series and hour (migration 0026, lib/warehouse/pack.py)
    "points_packed": "day",
    "rollup_5m": "day",
    "rollup_1h": "month",
    "rollup_1d": "year",
    "ingestion_runs": "month",
    "series_health_hourly": "month",
    "events": "month",
    # anomaly scores per 5-minute bucket (migration 0021), and the detector's state before each hour
    "anomaly_scores": "day",
    "anomaly_state": "day",
    # the sums of a day's hourly series health (migration 0027), written with the day's rollup_1d
    "series_health_daily": "year",
    # each month's daily sketches added up (migration 0028), written with the days of the month
    "rollup_1mo_sketch": "year",
}
PARTITIONED_TABLES.update({sketch: PARTITIONED_TABLES[tier] for tier, sketch in SKETCH_TABLES.items()})

#: sketch table -> the tier whose rows it describes (and whose retention it follows)
SKETCHES_OF: dict[str, str] = {sketch: tier for tier, sketch in SKETCH_TABLES.items()}

#: table -> the table whose retention it follows (the sketches their tier's; the anomaly scores the
#: 5-minute buckets they score); a table not listed has a retention of its own
RETENTION_OF: dict[str, str] = {**SKETCHES_OF, "anomaly_scores": "rollup_5m", "series_health_daily": "rollup_1d",
                                 "rollup_1mo_sketch": "rollup_1d", "points_packed": "points"}

#: table -> columns ANALYZE must skip. Statistics target 0 is not inherited by new partitions, so it is
#: set on each as it is created: the packed arrays are ~30 kB each compressed, and sampling 30,000
#: rows of them (ANALYZE, autovacuum) would decompress a gigabyte for statistics no query uses.
NO_STATISTICS: dict[str, tuple[str, ...]] = {"points_packed": ("ts", "value")}


HOUR = timedelta(hours=1)


def floor_hour(ts: datetime) -> datetime:
    """The UTC hour `ts` falls in (the grain of every hourly partition key and load window)."""
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def hours(start: datetime, end: datetime) -> list[datetime]:
    """The UTC hours [start, end) touches."""
    found, hour = [], floor_hour(start)
    while hour < end:
        found.append(hour)
        hour += HOUR
    return found


def _floor(ts: datetime, grain: str) -> datetime:
    ts = ts.astimezone(timezone.utc)
    if grain == "day":
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if grain == "month":
        return ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if grain == "year":
        return ts.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    raise ValueError(f"unknown partition grain {grain!r}")


def _next(ts: datetime, grain: str) -> datetime:
    if grain == "day":
        return ts + timedelta(days=1)
    if grain == "month":
        return ts.replace(year=ts.year + ts.month // 12, month=ts.month % 12 + 1)
    return ts.replace(year=ts.year + 1)


def partition_name(table: str, lower: datetime, grain: str) -> str:
    fmt = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}[grain]
    return f"{table}_p{lower.strftime(fmt)}"


def partition_bounds(table: str, start: datetime, end: datetime) -> list[tuple[str, datetime, datetime]]:
    """(name, lower, upper) of every partition of `table` that [start, end) touches."""
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("partition window bounds must be timezone-aware")
    grain = PARTITIONED_TABLES[table]
    bounds = []
    lower = _floor(start, grain)
    while lower < end:
        upper = _next(lower, grain)
        bounds.append((partition_name(table, lower, grain), lower, upper))
        lower = upper
    return bounds


def _lock_key(schema: str, table: str) -> int:
    digest = hashlib.sha256(f"metrics_pipeline.partitions:{schema}.{table}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def existing_partitions(conn: psycopg.Connection, schema: str, table: str) -> set[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           JOIN pg_namespace n ON n.oid = p.relnamespace
           WHERE n.nspname = %s AND p.relname = %s""",
        (schema, table),
    ).fetchall()
    return {name for (name,) in rows}


def oldest_partition_start(conn: psycopg.Connection, schema: str, table: str) -> datetime | None:
    """Lower bound of `table`'s oldest partition (None if it has none): older rows were never
    loaded or have been dropped by retention."""
    grain = PARTITIONED_TABLES[table]
    fmt = {"day": "%Y%m%d", "month": "%Y%m", "year": "%Y"}[grain]
    prefix = f"{table}_p"
    lowers = []
    for name in existing_partitions(conn, schema, table):
        if name.startswith(prefix):
            try:
                lowers.append(datetime.strptime(name[len(prefix):], fmt).replace(tzinfo=timezone.utc))
            except ValueError:
                continue  # a partition someone attached by hand: not ours to interpret
    return min(lowers) if lowers else None


def _missing(conn: psycopg.Connection, schema: str, tables: list[str], start: datetime,
             end: datetime) -> list[tuple[str, str, datetime, datetime]]:
    found = []
    for table in tables:
        have = existing_partitions(conn, schema, table)
        found += [(table, *b) for b in partition_bounds(table, start, end) if b[0] not in have]
    return found


def ensure_partitions(conn: psycopg.Connection, schema: str, table: str, start: datetime, end: datetime) -> list[str]:
    """Create the missing partitions of `schema.table` for [start, end). Returns the names created.

    A rollup tier's sketch table (`SKETCH_TABLES`) gets its partitions of the same ranges in the
    same transaction: a tier partition never exists without the one its sketches go to.
    `conn` must be in autocommit mode (no open transaction): the partitions are committed here.
    """
    tables = [table, SKETCH_TABLES[table]] if table in SKETCH_TABLES else [table]
    if not _missing(conn, schema, tables, start, end):
        return []
    created = []
    with conn.transaction():
        # one lock per tier and its sketch table, whichever of the two is asked for
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema, SKETCHES_OF.get(table, table)),))
        for parent, name, lower, upper in _missing(conn, schema, tables, start, end):
            conn.execute(
                f"CREATE TABLE {schema}.{name} PARTITION OF {schema}.{parent} "
                f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
            )
            for column in NO_STATISTICS.get(parent, ()):
                conn.execute(f"ALTER TABLE {schema}.{name} ALTER COLUMN {column} SET STATISTICS 0")
            created.append(name)
    return created


def day_lock_keys(namespace: str, start: datetime, end: datetime) -> list[int]:
    """Transaction advisory-lock keys, one per UTC day of [start, end) under `namespace`, sorted so
    that writers taking several never deadlock: loads of overlapping windows of one namespace
    (a source, the ingestion runs) serialise per day instead of interleaving their delete and insert."""
    keys = []
    for name, _, _ in partition_bounds("points", start, end):
        digest = hashlib.sha256(f"{namespace}:{name}".encode()).digest()
        keys.append(int.from_bytes(digest[:8], "big", signed=True))
    return sorted(keys)
