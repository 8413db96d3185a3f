"""The compact raw tier: closed hours of `points` packed into a row per series and hour (migration 0026).

Why: a row of `points` costs ~85 bytes a point with its primary key; at 1-second sampling that is
~200 GB for 100 hosts and a week. A packed row holds one series' hour as two arrays (timestamps to
the microsecond, values) that PostgreSQL compresses, and pays the row and index overhead once per
hour: a few bytes a point (docs/benchmarks.md, `host_fleet`).

The rule: a (series, hour) lives either in `points` or in one `points_packed` row, never both.
* `pack_hour` moves a closed hour, all its series, in one statement (one transaction): a crash
  leaves the hour as it was. A packed row met next to rows of the same (series, hour) in `points`
  (a writer that bypassed `load_points`) is merged first, the rows in `points` winning.
* `unpack` is called by `load_points` in its own transaction before it looks at its window: the
  packed rows of the load's series in the hours it touches go back to `points`, so replacing a
  window, appending, and last-write-wins upserts into a packed hour work exactly as on rows. The
  load marks the hours it wrote (`mark_hours`), and the next pass packs them again.
* Readers read both tables as one (`points_in`, `latest_point`, and `bi_all_points` behind
  `v_points`, with an arm per packed day: `packed_view.py`).

Packing and loading exclude each other per hour with transaction advisory locks: a load takes a
shared lock per hour of its window (per UTC day for windows longer than `_HOUR_LOCKS_UP_TO`
hours, so a backfill does not take thousands of locks), a pack takes its hour's and its day's
lock exclusively. Loads never wait for each other here, the live loop of the hour in progress
never waits for the pack of the hour before, and a pack never sees half of a load.

When: `pack_closed_hours` packs every marked hour that closed at least `grace` ago (the hourly
`pack_raw_points` schedule, `defs/maintenance/pack.py`). After packing, the day's partition of
`points_packed` is analysed (its array columns have no statistics: `partitioning.NO_STATISTICS`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg

from metrics_pipeline.lib.warehouse import packed_view, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.partitioning import HOUR, floor_hour, hours

#: Hours a pass leaves alone after they close: the closed-hour runs of the sources land first, so
#: packing does not race them into an unpack and a second pack.
DEFAULT_GRACE = timedelta(minutes=20)
#: A load of a window up to this many hours locks each hour; a longer one locks whole days.
_HOUR_LOCKS_UP_TO = 48
_SQL = Path(__file__).parent / "sql"


def _read(name: str, schema: str) -> str:
    return (_SQL / name).read_text().replace("{{schema}}", schema)


def _key(schema: str, what: str) -> int:
    digest = hashlib.sha256(f"metrics_pipeline.pack:{schema}:{what}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _hour_key(schema: str, hour: datetime) -> int:
    return _key(schema, f"hour:{hour:%Y%m%d%H}")


def _day_key(schema: str, day: datetime) -> int:
    return _key(schema, f"day:{day:%Y%m%d}")


def lock_for_write(conn: psycopg.Connection, schema: str, start: datetime, end: datetime) -> None:
    """Shared locks that keep a pack out of [start, end) until this transaction ends."""
    touched = hours(start, end)
    if len(touched) <= _HOUR_LOCKS_UP_TO:
        keys = sorted({_hour_key(schema, h) for h in touched})
    else:
        keys = sorted({_day_key(schema, h.replace(hour=0)) for h in touched})
    conn.execute("SELECT pg_advisory_xact_lock_shared(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", (keys,))


def packed_in(conn: psycopg.Connection, schema: str, start: datetime, end: datetime) -> bool:
    """Whether any packed row lies in the hours [start, end) touches (one probe of the hour index)."""
    return conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {schema}.points_packed WHERE hour >= %s AND hour < %s)",
        (floor_hour(start), end),
    ).fetchone()[0]


def unpack(conn: psycopg.Connection, schema: str, source: str, start: datetime, end: datetime,
           only: list[int] | None = None) -> int:
    """Move the packed rows of `source`'s series (or of `only`) in the hours [start, end) touches
    back to `points`, in the caller's transaction (locked with `lock_for_write`). Returns the
    points moved."""
    return conn.execute(_read("unpack.sql", schema), {
        "first_hour": floor_hour(start), "end": end, "source": source, "only": only}).rowcount


def mark_hours(conn: psycopg.Connection, schema: str, start: datetime, end: datetime) -> None:
    """Record, in the caller's transaction, that `points` may hold rows of the hours of [start, end)."""
    conn.execute(f"INSERT INTO {schema}.points_unpacked_hours (hour) SELECT unnest(%s::timestamptz[])",
                 (hours(start, end),))


@dataclasses.dataclass(frozen=True)
class Packed:
    """One packed hour."""

    hour: datetime
    series: int  # packed rows written
    points: int  # points moved out of `points`
    merged: int  # points of packed rows merged back first (a writer that did not unpack)
    seconds: float


def pack_hour(warehouse: Warehouse, hour: datetime) -> Packed:
    """Pack the closed hour starting at `hour`, in one transaction. Idempotent: a second call finds
    nothing in `points` and writes nothing."""
    schema = warehouse.schema
    hour = floor_hour(hour)
    end = hour + HOUR
    started = time.perf_counter()
    with warehouse.connect() as conn:
        if partitioning.ensure_partitions(conn, schema, "points_packed", hour, end):
            packed_view.rebuild(conn, schema)  # an arm for the new day (correct without, faster with)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s), pg_advisory_xact_lock(%s)",
                         (_day_key(schema, hour.replace(hour=0)), _hour_key(schema, hour)))
            # Under the lock no load of this hour is in flight: every mark up to here is committed,
            # and a mark written after this read (a load after the pack) survives it.
            (seen,) = conn.execute(f"SELECT max(mark) FROM {schema}.points_unpacked_hours WHERE hour = %s",
                                   (hour,)).fetchone()
            params = {"hour": hour, "end": end}
            merged = conn.execute(_read("pack_repair.sql", schema), params).rowcount
            cur = conn.execute(_read("pack_hour.sql", schema), params)
            series = cur.rowcount
            (points,) = conn.execute(
                f"SELECT coalesce(sum(n), 0) FROM {schema}.points_packed WHERE hour = %s", (hour,)).fetchone() \
                if series else (0,)
            if seen is not None:
                conn.execute(f"DELETE FROM {schema}.points_unpacked_hours WHERE hour = %s AND mark <= %s",
                             (hour, seen))
        if series:
            (name, _, _), = partitioning.partition_bounds("points_packed", hour, end)
            conn.execute(f"ANALYZE {schema}.{name}")
    return Packed(hour, series, int(points), merged, time.perf_counter() - started)


def pending_hours(warehouse: Warehouse, now: datetime, grace: timedelta = DEFAULT_GRACE) -> list[datetime]:
    """Marked hours that closed at least `grace` before `now`, oldest first."""
    with warehouse.connect() as conn:
        rows = conn.execute(
            f"SELECT DISTINCT hour FROM {warehouse.schema}.points_unpacked_hours WHERE hour + interval '1 hour' <= %s "
            "ORDER BY hour", (now - grace,)).fetchall()
    return [hour.astimezone(timezone.utc) for (hour,) in rows]


def pack_closed_hours(warehouse: Warehouse, now: datetime | None = None, grace: timedelta = DEFAULT_GRACE,
                      ) -> list[Packed]:
    """Pack every marked hour that closed at least `grace` before `now` (default: the clock)."""
    now = now or datetime.now(timezone.utc)
    return [pack_hour(warehouse, hour) for hour in pending_hours(warehouse, now, grace)]
