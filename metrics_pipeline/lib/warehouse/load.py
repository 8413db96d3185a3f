"""The one way points reach the warehouse: validate a frame, register its series, replace a window.

`load_points(warehouse, frame, source=..., start=..., end=...)` makes `points` hold, for that source and
[start, end), exactly the rows of `frame`: nothing older survives in the window, nothing is
duplicated, and a failure at any step leaves the window as it was.

How, and why this way:
1. The frame is validated and normalised by `lib.points.prepare` (vectorised; no per-row Python).
2. Distinct series are registered with two set-based statements (insert missing, then look up ids).
3. In **one transaction**, replace the window:
   - empty window (first loads, backfills): `COPY ... FROM STDIN (FORMAT BINARY)` straight into
     `points` (into the day partition itself when the window lies in one day, which skips per-row
     partition routing). Validation and de-duplication already happened in step 1, so staging
     would only write every row twice. The binary COPY payload is built by numpy.
   - window with data (late-data re-runs): COPY into a temporary staging table, then delete the
     rows that vanished, update those whose value changed and insert the new ones, so a re-run
     that fetched the same data rewrites nothing and reports how many points changed.
   - appending (scope "append", the hour in progress loaded as it grows): COPY straight in when no
     row can meet a stored point (each series' stored points are all older than its new rows: one
     index probe per series), else the merge above without its delete.
   Atomicity comes from the transaction: if anything fails half-way, all of it is rolled back.
   Closed hours may have been packed (`lib/warehouse/pack.py`, migration 0026): before it looks at
   its window, the load moves the packed rows of its series in the hours the window touches back
   into `points` (same transaction), so every case above works on rows; it then marks those hours
   for the next pack.
4. Loads of the same source and UTC day take a transaction advisory lock (in sorted order, so no
   deadlocks), so overlapping windows of one source never interleave their delete and insert.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from metrics_pipeline.lib.points import (
    MAX_NAME_BYTES,
    PG_EPOCH_US,
    Prepared,
    intervals,
    is_sorted,
    prepare,
    text_problem,
    utc,
)
from metrics_pipeline.lib.warehouse import pack, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
# One binary COPY row of points(series_id int4, ts timestamptz, value float8), big-endian, packed.
_COPY_ROW = np.dtype(
    [("nfields", ">i2"), ("len_sid", ">i4"), ("sid", ">i4"), ("len_ts", ">i4"), ("ts", ">i8"),
     ("len_value", ">i4"), ("value", ">f8")]
)
_COPY_CHUNK_ROWS = 250_000


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What a load did; `as_metadata()` gives the plain values assets put in their metadata."""

    source: str
    start: datetime
    end: datetime
    points: int  # rows the window holds for this source after the load
    inserted: int  # rows that were not there before
    updated: int  # rows whose value changed
    deleted: int  # rows that were there before and are not in this fetch
    series: int
    new_series: int
    dropped: dict[str, int]
    first_ts: datetime | None
    last_ts: datetime | None

    @property
    def changed(self) -> int:
        """Rows inserted, updated or deleted: 0 when a re-run fetched exactly what was stored."""
        return self.inserted + self.updated + self.deleted

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_metadata(self) -> dict[str, Any]:
        """The metadata every point asset reports (plain values; `dagster/row_count` is Dagster's key)."""
        return {
            "dagster/row_count": self.points,
            "points": self.points,
            "points_changed": self.changed,
            "points_inserted": self.inserted,
            "points_updated": self.updated,
            "points_deleted": self.deleted,
            "series": self.series,
            "new_series": self.new_series,
            # Sent twice for one series and timestamp (the last is kept) and NaN/inf values.
            "duplicate_points": self.dropped.get("duplicate", 0),
            "non_finite_values": self.dropped.get("non_finite", 0),
            # Samples whose clock puts them outside the window (a skewed or broken clock).
            "out_of_window_points": self.dropped.get("out_of_window", 0),
            "dropped_points": self.dropped_total,
            "first_sample": self.first_ts.isoformat() if self.first_ts else "none",
            "last_sample": self.last_ts.isoformat() if self.last_ts else "none",
            "window": f"{self.start.isoformat()} .. {self.end.isoformat()}",
        }


def _series_document(prepared: Prepared, index: np.ndarray | None = None) -> str:
    """The frame's series (or those at `index`) as one JSON array of [ordinal, metric, resource,
    labels, unit]: one parameter the server decodes in C, instead of four text arrays that psycopg
    escapes string by string (seconds for tens of thousands of series, on every load)."""
    dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":")).encode
    rows = range(len(prepared.series_metric)) if index is None else index.tolist()
    return "[" + ",".join(
        f"[{i + 1},{dumps(prepared.series_metric[i])},{dumps(prepared.series_resource[i])},"
        f"{prepared.series_labels[i]},{dumps(prepared.series_unit[i])}]" for i in rows) + "]"


def _register_series(conn: psycopg.Connection, schema: str, source: str, prepared: Prepared) -> tuple[np.ndarray, int]:
    """Insert the frame's new series and return (series_id per distinct series, number created).
    Series already stored with the same unit are only looked up (an upsert would lock each row)."""
    lookup = f"""SELECT t.ord, s.series_id, s.unit IS NOT DISTINCT FROM t.unit
            FROM (SELECT (e->>0)::bigint AS ord, e->>1 AS metric, e->>2 AS resource, e->3 AS labels, e->>4 AS unit
                  FROM jsonb_array_elements(%(series)s::jsonb) AS e) AS t
            LEFT JOIN {schema}.series s
              ON s.series_key = {schema}.series_key(%(source)s, t.metric, t.resource, t.labels)"""
    ids = np.zeros(len(prepared.series_metric), dtype=np.int64)
    found = np.zeros(len(ids), dtype=bool)
    todo = []
    for ordinal, series_id, same_unit in conn.execute(lookup, {"source": source, "series": _series_document(prepared)}):
        if series_id is not None and same_unit:
            ids[ordinal - 1], found[ordinal - 1] = series_id, True
        else:
            todo.append(ordinal - 1)
    created = 0
    if todo:
        missing = _series_document(prepared, np.array(todo))
        # Sorted by key so that concurrent loads take index locks in one order (no deadlock).
        inserted = conn.execute(
            f"""INSERT INTO {schema}.series AS s (source, metric, resource, labels, unit)
                SELECT %(source)s, e->>1, e->>2, e->3, e->>4 FROM jsonb_array_elements(%(series)s::jsonb) AS e
                ORDER BY {schema}.series_key(%(source)s, e->>1, e->>2, e->3)
                ON CONFLICT (series_key) DO UPDATE SET unit = EXCLUDED.unit
                    WHERE s.unit IS DISTINCT FROM EXCLUDED.unit
                RETURNING (xmax = 0) AS created""",
            {"source": source, "series": missing},
        ).fetchall()
        created = sum(1 for (was_created,) in inserted if was_created)
        for ordinal, series_id, _ in conn.execute(lookup, {"source": source, "series": missing}):
            if series_id is not None:
                ids[ordinal - 1], found[ordinal - 1] = series_id, True
    if not found.all():
        raise RuntimeError("series registration did not return an id for every series")
    return ids, created


def copy_buffer(series_ids: np.ndarray, ts_us: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Binary COPY payload for points(series_id, ts, value), in chunks of at most 250k rows."""
    chunks = [_COPY_HEADER]
    for lo in range(0, len(series_ids), _COPY_CHUNK_ROWS):
        hi = lo + _COPY_CHUNK_ROWS
        rows = np.empty(len(series_ids[lo:hi]), dtype=_COPY_ROW)
        rows["nfields"] = 3
        rows["len_sid"] = 4
        rows["sid"] = series_ids[lo:hi]
        rows["len_ts"] = 8
        rows["ts"] = ts_us[lo:hi]
        rows["len_value"] = 8
        rows["value"] = values[lo:hi]
        chunks.append(rows.tobytes())
    chunks.append(_COPY_TRAILER)
    return chunks


def _copy_rows(conn: psycopg.Connection, table: str, series_ids: np.ndarray, prepared: Prepared) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} (series_id, ts, value) FROM STDIN (FORMAT BINARY)") as copy:
        for chunk in copy_buffer(series_ids, prepared.ts_us, prepared.values):
            copy.write(chunk)


def _copy_into_empty_window(conn, schema, target, series_ids, prepared) -> dict[str, int]:
    """First load of a window (the common case, and every backfill): COPY straight into the table."""
    if len(series_ids):
        _copy_rows(conn, f"{schema}.{target}", series_ids, prepared)
    return {"inserted": len(series_ids), "updated": 0, "deleted": 0}


def _merge_into_window(conn, schema, target, source, start, end, series_ids, prepared, only=None,
                       delete: bool = True) -> dict[str, int]:
    """Re-load of a window that holds data: touch only what differs.

    A late-data re-run usually fetches what is stored plus a few points. Deleting and re-inserting
    the whole window would rewrite every row (and leave as many dead tuples); instead the fetch is
    staged in a temporary table (no WAL) and three set-based statements delete what vanished,
    update what changed and insert what is new. The counts become the "points changed" metadata.
    """
    _create_stage(conn)
    _copy_rows(conn, "_mp_stage", series_ids, prepared)
    return _apply_stage(conn, schema, target, source, start, end, only, delete)


def _create_stage(conn: psycopg.Connection) -> None:
    """The (empty) temporary staging table of this transaction (several frames may be staged in turn)."""
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS _mp_stage (series_id integer, ts timestamptz, value double precision) "
        "ON COMMIT DROP"
    )
    conn.execute("TRUNCATE _mp_stage")


def _apply_stage(conn, schema, target, source, start, end, only, delete: bool) -> dict[str, int]:
    """Make the window (or its series `only`) hold what `_mp_stage` holds: three set-based statements."""
    conn.execute("ANALYZE _mp_stage")
    window = {"source": source, "start": start, "end": end, "only": only}
    deleted = 0 if not delete else conn.execute(
        f"""DELETE FROM {schema}.points p USING {schema}.series s
            WHERE s.source = %(source)s AND p.series_id = s.series_id
              AND p.ts >= %(start)s AND p.ts < %(end)s
              AND (%(only)s::integer[] IS NULL OR p.series_id = ANY(%(only)s::integer[]))
              AND NOT EXISTS (SELECT 1 FROM _mp_stage st WHERE st.series_id = p.series_id AND st.ts = p.ts)""",
        window,
    ).rowcount
    updated = conn.execute(
        f"""UPDATE {schema}.{target} p SET value = st.value FROM _mp_stage st
            WHERE p.series_id = st.series_id AND p.ts = st.ts AND p.ts >= %(start)s AND p.ts < %(end)s
              AND p.value <> st.value""",
        window,
    ).rowcount
    inserted = conn.execute(
        f"""INSERT INTO {schema}.{target} (series_id, ts, value)
            SELECT st.series_id, st.ts, st.value FROM _mp_stage st
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.points p
                              WHERE p.series_id = st.series_id AND p.ts = st.ts
                                AND p.ts >= %(start)s AND p.ts < %(end)s)""",
        window,
    ).rowcount
    return {"inserted": inserted, "updated": updated, "deleted": deleted}


def _append_collides(conn: psycopg.Connection, schema: str, series_ids: np.ndarray, ts_us: np.ndarray,
                     start: datetime, end: datetime) -> bool:
    """Whether a row to append may meet a stored point of its series: only at or after that series'
    earliest new timestamp (rows are grouped by series, time-ordered within). One index probe per series."""
    first = np.flatnonzero(np.concatenate([[True], series_ids[1:] != series_ids[:-1]]))
    earliest = (ts_us[first] + PG_EPOCH_US) / 1e6 - 0.001  # epoch seconds, a millisecond early: float rounding
    return conn.execute(
        f"""SELECT EXISTS (SELECT 1 FROM unnest(%s::integer[], %s::float8[]) AS u(series_id, earliest)
                           JOIN {schema}.points p ON p.series_id = u.series_id AND p.ts >= to_timestamp(u.earliest)
                           WHERE p.ts >= %s AND p.ts < %s)""",
        (series_ids[first].tolist(), earliest.tolist(), start, end),
    ).fetchone()[0]


def _record_intervals(conn: psycopg.Connection, schema: str, series_ids: np.ndarray, prepared: Prepared) -> None:
    """Keep `series_intervals` (the nominal sampling interval per series and day, which alert gap
    tolerance derives from): the smallest median spacing any load saw, so any load order agrees."""
    index, day, seconds = intervals(prepared)
    if not len(index):
        return
    # Arrays as literals built in one join each: psycopg's per-element dumping costs seconds at fleet scale.
    conn.execute(
        f"""INSERT INTO {schema}.series_intervals AS si (series_id, day, interval_s)
            SELECT s, DATE '2000-01-01' + d, i FROM unnest(%s::integer[], %s::integer[], %s::float8[]) AS u(s, d, i)
            ON CONFLICT (series_id, day) DO UPDATE SET interval_s = EXCLUDED.interval_s
            WHERE EXCLUDED.interval_s < si.interval_s""",
        tuple("{" + ",".join(map(repr, values.tolist())) + "}" for values in (series_ids[index], day, seconds)),
    )


def load_points(
    warehouse: Warehouse,
    frame: pd.DataFrame | Iterable[pd.DataFrame],
    *,
    source: str,
    start: datetime,
    end: datetime,
    out_of_window: str = "error",
    in_transaction: Callable[[psycopg.Connection], None] | None = None,
    scope: str = "window",
) -> LoadResult:
    """Replace `source`'s points in [start, end) with the rows of `frame`, atomically.

    Args:
        warehouse: the (migrated) warehouse.
        frame: normalised points: metric, resource, labels (dict or JSON object text), unit,
            ts (timezone-aware), value; an optional `source` column must equal `source`. Or an
            iterable of such frames that share no series (e.g. one per group of hosts): each is
            validated and written in turn, in the same transaction, so a window never has to be in
            memory whole, and an iterator may build the next frame while the database writes one.
        source: the source whose window is replaced (e.g. "host", "cloudwatch").
        start, end: the window [start, end), timezone-aware.
        out_of_window: "error" (default) raises on rows outside the window; "drop" counts them.
        in_transaction: called with the connection inside the load's transaction, after the
            points are written (e.g. to mark landing files processed in the same commit).
        scope: "window" (default): the source's whole window is replaced; "series": only the
            series present in the frame are replaced, others keep their points (for sources whose
            fetch may legitimately omit series, like CloudWatch discovery of terminated resources);
            "append": the frame's rows are inserted (or update a stored value), nothing is deleted
            (the hour in progress, loaded as it grows; its closed-hour run replaces the window).

    Returns:
        LoadResult with points written, points replaced, series seen and created, and the rows
        dropped per reason ("non_finite", "duplicate", "out_of_window").

    Raises:
        ValueError: a malformed frame or window, naming the column and an example row.
    """
    schema = warehouse.schema
    if scope not in ("window", "series", "append"):
        raise ValueError(f"scope must be 'window', 'series' or 'append', got {scope!r}")
    if not isinstance(source, str) or not source or text_problem(source, max_bytes=MAX_NAME_BYTES):
        raise ValueError(f"source must be a non-empty string without NUL characters, at most {MAX_NAME_BYTES} "
                         f"bytes, got {source[:100] if isinstance(source, str) else source!r}")
    start, end = utc(start, "start"), utc(end, "end")
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} must be after start {start.isoformat()}")
    single = isinstance(frame, pd.DataFrame)
    # A single frame is validated before anything touches the database; frames of an iterable as they come.
    first = prepare(frame, source=source, start=start, end=end, out_of_window=out_of_window) if single else None
    preparing = iter([first]) if single else (
        prepare(f, source=source, start=start, end=end, out_of_window=out_of_window) for f in frame)
    totals = {"points": 0, "inserted": 0, "updated": 0, "deleted": 0, "series": 0, "new_series": 0}
    dropped: Counter = Counter()
    ts_range: list[int] = []

    with warehouse.connect() as conn:
        bounds = partitioning.partition_bounds("points", start, end)
        if not single or len(first.codes) or pack.packed_in(conn, schema, start, end):
            partitioning.ensure_partitions(conn, schema, "points", pack.floor_hour(start), end)
        # One day partition: COPY into it directly and skip per-row tuple routing.
        target = bounds[0][0] if len(bounds) == 1 else "points"
        with conn.transaction():
            for key in partitioning.day_lock_keys(f"metrics_pipeline.load:{schema}:{source}", start, end):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            pack.lock_for_write(conn, schema, start, end)
            unpacked = pack.unpack(conn, schema, source, start, end) if scope == "window" else 0
            # The whole window is replaced: one look at whether it holds anything, then every frame
            # is copied in (empty window) or staged and merged at the end.
            staged = scope == "window" and _window_has_rows(conn, schema, source, start, end, None)
            if staged:
                _create_stage(conn)
            seen: set[int] = set()
            for prepared in preparing:
                new_series = 0
                series_ids = np.empty(0, dtype=np.int64)
                if len(prepared.codes):
                    series_ids, new_series = _register_series(conn, schema, source, prepared)
                    _record_intervals(conn, schema, series_ids, prepared)
                if not single:
                    if seen.intersection(series_ids.tolist()):
                        raise ValueError("the frames of one load must not share a series (split them by series)")
                    seen.update(series_ids.tolist())
                rows = series_ids[prepared.codes]
                if len(rows) and not is_sorted(rows, prepared.ts_us):
                    # Rows are grouped by series already; put the groups in series_id order so the
                    # primary-key index is filled left to right (append-only page splits).
                    order = np.argsort(rows, kind="stable")
                    rows = rows[order]
                    prepared = dataclasses.replace(prepared, ts_us=prepared.ts_us[order], values=prepared.values[order])
                if scope == "window":
                    if staged:
                        _copy_rows(conn, "_mp_stage", rows, prepared)
                        changes = {}
                    else:
                        changes = _copy_into_empty_window(conn, schema, target, rows, prepared)
                else:
                    only = [int(i) for i in series_ids]
                    if len(rows):
                        unpacked += pack.unpack(conn, schema, source, start, end, only)
                    if not len(rows):
                        changes = {}
                    elif not _window_has_rows(conn, schema, source, start, end, only):
                        changes = _copy_into_empty_window(conn, schema, target, rows, prepared)
                    elif scope == "append" and not _append_collides(conn, schema, rows, prepared.ts_us, start, end):
                        # Every row is newer than what its series holds (the hour in progress, loaded
                        # as it grows): nothing to update, so no staging either.
                        changes = _copy_into_empty_window(conn, schema, target, rows, prepared)
                    else:
                        changes = _merge_into_window(conn, schema, target, source, start, end, rows, prepared, only,
                                                     delete=scope != "append")
                for name, count in changes.items():
                    totals[name] += count
                totals["points"] += len(prepared.codes)
                totals["series"] += len(prepared.series_metric)
                totals["new_series"] += new_series
                dropped.update(prepared.dropped)
                if len(prepared.ts_us):
                    ts_range += [int(prepared.ts_us.min()), int(prepared.ts_us.max())]
            if staged:
                for name, count in _apply_stage(conn, schema, target, source, start, end, None, True).items():
                    totals[name] += count
            if unpacked or totals["inserted"] or totals["updated"]:
                pack.mark_hours(conn, schema, start, end)
            if in_transaction is not None:
                in_transaction(conn)

    first_ts = last_ts = None
    if ts_range:
        first_ts = datetime.fromtimestamp((min(ts_range) + PG_EPOCH_US) / 1e6, tz=timezone.utc)
        last_ts = datetime.fromtimestamp((max(ts_range) + PG_EPOCH_US) / 1e6, tz=timezone.utc)
    return LoadResult(source=source, start=start, end=end, dropped=dict(dropped), first_ts=first_ts, last_ts=last_ts,
                      **totals)


def _window_has_rows(conn: psycopg.Connection, schema: str, source: str, start: datetime, end: datetime,
                     only: list[int] | None) -> bool:
    return conn.execute(
        f"""SELECT EXISTS (SELECT 1 FROM {schema}.points p JOIN {schema}.series s USING (series_id)
            WHERE s.source = %s AND p.ts >= %s AND p.ts < %s
              AND (%s::integer[] IS NULL OR p.series_id = ANY(%s::integer[])))""",
        (source, start, end, only, only),
    ).fetchone()[0]


def window_has_points(warehouse: Warehouse, source: str, start: datetime, end: datetime) -> bool:
    """Whether `source` has any point stored in [start, end), packed or not."""
    schema = warehouse.schema
    with warehouse.connect() as conn:
        return conn.execute(
            f"""SELECT EXISTS (SELECT 1 FROM {schema}.points_in(%s, %s) p JOIN {schema}.series s USING (series_id)
                WHERE s.source = %s)""",
            (start, end, source),
        ).fetchone()[0]
