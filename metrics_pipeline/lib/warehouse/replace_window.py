"""Replace one time window of a derived table, the same way for rollups, series health and SLA.

Every derived table is recomputed by DELETE of the window then one INSERT .. SELECT, in the
caller's transaction, so re-running gives the same rows and a crash leaves the previous ones.
Three rules shared by all of them live here:
* windows are UTC and aligned to the table's bucket width (origin 2000-01-01 UTC);
* refreshes of the same table queue on an advisory lock (automation and a backfill may overlap;
  between DELETE and INSERT they would race on the primary key);
* the part of the window older than the input table's oldest partition is left alone: retention
  dropped that input, and recomputing it would replace good rows by nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg

from metrics_pipeline.lib.warehouse import partitioning

ORIGIN = datetime(2000, 1, 1, tzinfo=timezone.utc)


def utc(ts: datetime, name: str) -> datetime:
    if ts.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware, got {ts!r}")
    return ts.astimezone(timezone.utc)


def check_aligned(table: str, start: datetime, end: datetime, width: timedelta) -> None:
    for name, ts in (("start", start), ("end", end)):
        if (ts - ORIGIN) % width:
            raise ValueError(f"{table}: window {name} {ts.isoformat()} is not aligned to {width}")
    if end <= start:
        raise ValueError(f"{table}: empty window {start.isoformat()} .. {end.isoformat()}")


@dataclasses.dataclass(frozen=True)
class Replaced:
    """[start, end) actually recomputed (start moves forward past expired input), rows in and out."""

    start: datetime
    end: datetime
    rows: int
    deleted: int


def replace_window(conn: psycopg.Connection, schema: str, table: str, input_table: str,
                   start: datetime, end: datetime, insert_sql: str, params: dict[str, Any]) -> Replaced | None:
    """DELETE [start, end) of `schema.table` and run `insert_sql` over it, in the open transaction.

    Returns None (nothing touched) when `input_table` holds nothing from `start` on.
    """
    conn.execute("SET LOCAL TIME ZONE 'UTC'")  # generate_series and day arithmetic stay in UTC
    oldest = partitioning.oldest_partition_start(conn, schema, input_table)
    covered = None if oldest is None else max(start, oldest)
    if covered is None or covered >= end:
        return None
    digest = hashlib.sha256(f"metrics_pipeline.refresh:{schema}.{table}".encode()).digest()
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),))
    deleted = conn.execute(f"DELETE FROM {schema}.{table} WHERE bucket >= %s AND bucket < %s", (covered, end)).rowcount
    rows = conn.execute(insert_sql, {**params, "start": covered, "end": end}).rowcount
    return Replaced(covered, end, rows, deleted)
