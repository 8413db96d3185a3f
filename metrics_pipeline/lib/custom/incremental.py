"""The hour in progress, loaded incrementally: what is new since the hour's record, and nothing else.

A sensor's run of one hour that finds the hour's record (`loaded.py`) reads only the files that
changed since, from the end of the committed prefix it loaded (bytes, digest, items and corrupt
lines of `custom_load_files`), and writes their items with the "append" scope (points inserted or
their value updated; events upserted), the new quarantine rows, the processed marks and the new
record, in one transaction: a crash leaves the previous state, and a re-run reads the same lines
again.

Why that equals a full reload of all the files: a new write ordered after the latest write loaded
(the record's `last`) wins over every loaded write of its identity, as the full reduction would
have it. A new write ordered before it (a batch another API process stamped earlier but made
durable after the previous run read its file) is accepted only when its identity was never loaded,
which the run checks in the warehouse; for measures, also that its series' stored unit is the one
it carries when it is the series' last new write. Positions continue from the items before the
prefix, corrupt-line counts from the prefix's, and every count of the hour moves by what was read
(duplicates: the new writes that repeat a loaded identity, found in the same check).

`read_new` returns a reason instead when only a full reload can tell (`load.py` then replaces the
hour): a loaded file gone from the landing zone or no longer indexed under the hour, one that no
longer begins with what was loaded (rewritten, truncated), one readable before and refused now or
the reverse, a file of the hour not in the receipt hours listed; `new_measures` / `new_events`
when a late write repeats a loaded identity.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib.custom import loaded
from metrics_pipeline.lib.custom.files import Kind, hour_of_key
from metrics_pipeline.lib.custom.index import files_touching, list_hours, receipt_hours, sync_index
from metrics_pipeline.lib.custom.items import (
    HOUR,
    INDEX_KIND,
    NO_UNIT,
    SOURCE,
    Redeliveries,
    event_key,
    event_rows,
    hour_of,
    measure_frame,
    parse_file,
    resource_of,
    take,
    take_corrupt,
    take_refused,
)
from metrics_pipeline.lib.custom.loaded import CustomLoad, FileState, HourState, prefix_digest
from metrics_pipeline.lib.landing import LandingObject, RefusedObject, read_many
from metrics_pipeline.lib.warehouse import landing_index, partitioning
from metrics_pipeline.lib.warehouse import quarantine as quarantine_table
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
_EVENT_COLUMNS = ("tenant", "name", "ts", "metadata", "text", "received_at", "event_key", "source_file")


def upsert_events(conn, schema: str, start: datetime, end: datetime, rows: list[tuple]) -> None:
    for lock in partitioning.day_lock_keys(f"metrics_pipeline.events:{schema}", start, end):
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.events ({', '.join(_EVENT_COLUMNS)})
                VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s)
                ON CONFLICT (event_key, ts) DO UPDATE
                SET received_at = EXCLUDED.received_at, source_file = EXCLUDED.source_file""",
            rows,
        )


@dataclasses.dataclass
class _New:
    """What a run of one hour found beyond the hour's record; `state` is the record plus it."""

    state: HourState
    winners: dict[tuple, tuple] = dataclasses.field(default_factory=dict)
    quarantine: list[tuple] = dataclasses.field(default_factory=list)
    touched: list[tuple[LandingObject, list[datetime]]] = dataclasses.field(default_factory=list)
    files: dict[str, FileState] = dataclasses.field(default_factory=dict)  # files read, as recorded now
    in_zone: set[str] = dataclasses.field(default_factory=set)  # keys listed in the receipt hours
    read: int = 0


def read_new(conn, schema, zone, kind: Kind, hour: datetime, back, ahead, now, record: HourState,
             admit=None) -> _New | str:
    """What the files of `hour` hold beyond what `record` says was loaded, or why only a full
    reload can tell. `admit`: the series cap for measures from Kafka (`items.take`)."""
    end = hour + HOUR
    listed = list_hours(zone, kind, receipt_hours(hour, end, back, ahead, now))
    data: dict[str, bytes | RefusedObject] = {}
    fresh = sync_index(conn, schema, zone, kind, listed, keep=data)
    keys = files_touching(conn, schema, kind, hour, end)
    touching = set(keys)
    for key in record.files:
        if key not in listed:
            return f"{key} was loaded and is no longer in the landing zone"
        if key not in touching:
            return f"{key} was loaded and no longer holds items of the hour"
    for key in keys:
        if key not in listed:
            return f"{key} holds items of the hour and is not in the receipt hours listed"
    changed = [listed[k] for k in keys if k not in record.files or record.files[k].etag != listed[k].etag]
    unread = [o for o in changed if o.key not in data]
    for obj, (_, content) in zip(unread, read_many(zone, unread)):
        data[obj.key] = content
    indexed_hours = landing_index.hours_of(conn, schema, INDEX_KIND[kind], [o.key for o in changed if o.key not in fresh])
    new = _New(copy.deepcopy(dataclasses.replace(record, files={})), in_zone=set(listed))
    new.state.files = dict(record.files)
    redeliveries = Redeliveries([o.key for o in changed if o.key not in record.files], loaded=list(record.files))
    for obj in changed:
        key, content, before = obj.key, data[obj.key], record.files.get(obj.key)
        if isinstance(content, RefusedObject):
            if before is not None and not before.refused:
                return f"{key} was loaded and the landing zone refuses it now ({content.reason})"
            new.files[key] = FileState(obj.etag, -1, "", 0, 0, False)
            receipt = hour_of_key(key) or hour_of(datetime.fromtimestamp(obj.mtime, timezone.utc))
            if before is None and receipt == hour:
                new.read += 1
                take_refused(kind, new.state, new.quarantine, key, content.reason)
            continue
        offset = items_before = corrupt_before = 0
        if before is not None:
            if before.refused:
                return f"{key} was refused and can be read now"
            if len(content) < before.loaded_bytes or prefix_digest(content, before.loaded_bytes) != before.digest:
                return f"{key} changed: it no longer begins with what was loaded"
            offset, items_before, corrupt_before = before.loaded_bytes, before.items, before.corrupt_lines
        whole = fresh.get(key)
        if whole is not None:  # just indexed: read whole already, and the loaded part is unchanged
            file, items, corrupt = whole, whole.items[items_before:], whole.corrupt_lines - corrupt_before
        else:
            file = parse_file(obj, kind, content, offset=offset, items_before=items_before)
            items, corrupt = file.items, file.corrupt_lines
        if file.refused:  # a damaged Kafka landing file: one quarantine row, as the full reload writes it
            return f"{key} cannot be read ({file.refused})"
        new.files[key] = FileState(obj.etag, file.end, file.digest, items_before + len(items),
                                   corrupt_before + corrupt, file.torn)
        new.touched.append((obj, whole.hours if whole is not None else indexed_hours.get(key, [hour])))
        if corrupt and file.receipt_hour == hour:
            new.read += corrupt
            take_corrupt(kind, new.state, new.quarantine, key, corrupt, corrupt_before + corrupt)
        copies = redeliveries.covered(key)
        for item in items:
            if item.hour == hour:
                if copies and Redeliveries.is_copy(copies, item):
                    new.state.redelivered += 1
                    continue
                new.read += 1
                take(kind, new.state, new.winners, new.quarantine, key, item, admit)
    new.state.files.update(new.files)
    return new


def _is_late(order: loaded.Order, record: HourState) -> bool:
    """Is a new write ordered before the latest write already loaded (so it may lose to a loaded one)?"""
    return record.last is not None and order <= record.last


_POINTS_PRESENT = """
WITH s AS MATERIALIZED (
    SELECT t.n, s.series_id, s.unit IS DISTINCT FROM t.unit AS other_unit
    FROM unnest(%(metric)s::text[], %(resource)s::text[], %(labels)s::jsonb[], %(unit)s::text[])
         WITH ORDINALITY AS t(metric, resource, labels, unit, n)
    JOIN {schema}.series s ON s.series_key = {schema}.series_key(%(source)s, t.metric, t.resource, t.labels))
SELECT 'point', w.i FROM _mp_new w
JOIN s ON s.n = w.n
-- one index probe per new point, whatever the statistics of a partition filled moments ago say
-- (both tiers: an hour already packed is probed through its (series, hour) row, migration 0026)
JOIN LATERAL (SELECT 1 FROM {schema}.points_in(%(start)s, %(end)s) p WHERE p.series_id = s.series_id AND p.ts = w.ts
              LIMIT 1) found ON true
UNION ALL
SELECT 'unit', s.n FROM s WHERE s.other_unit
"""
#: one binary COPY row of _mp_new(i int4, n int4, ts timestamptz)
_NEW_ROW = np.dtype([("nfields", ">i2"), ("len_i", ">i4"), ("i", ">i4"), ("len_n", ">i4"), ("n", ">i4"),
                     ("len_ts", ">i4"), ("ts", ">i8")])
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=timezone.utc)
_US = timedelta(microseconds=1)


def _points_present(conn, schema: str, hour: datetime, winners: list[tuple]) -> tuple[list[bool], bool]:
    """For new winners (order, file key, item, late): is each one's (series, ts) in `points`
    already? And: does a series whose last new write is late have another unit stored (then whose
    unit is the series' last write's, only a full reload can tell)? The winners go over by binary
    COPY (a point each), the series as arrays (a few)."""
    series: dict[tuple, int] = {}
    params: dict[str, list] = {"metric": [], "resource": [], "labels": []}
    last: list[tuple] = []  # per series: (order, unit, late) of its last new write
    rows = np.empty(len(winners), dtype=_NEW_ROW)
    rows["nfields"], rows["len_i"], rows["len_n"], rows["len_ts"] = 3, 4, 4, 8
    rows["i"] = np.arange(1, len(winners) + 1)
    for i, (order, _, item, late) in enumerate(winners):
        raw = item.raw
        metadata = raw.get("metadata", {})
        key = (raw["tenant"], raw["name"], tuple(sorted(metadata.items())))
        n = series.get(key)
        if n is None:
            n = series[key] = len(series)
            params["metric"].append(raw["name"])
            params["resource"].append(resource_of(metadata))
            params["labels"].append(json.dumps({**metadata, "tenant": raw["tenant"]}))
            last.append((order, None, late))
        if last[n][1] is None or order > last[n][0]:
            last[n] = (order, raw.get("unit") or NO_UNIT, late)
        rows["n"][i] = n + 1
        rows["ts"][i] = (item.ts - _PG_EPOCH) // _US
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE _mp_new (i integer, n integer, ts timestamptz) ON COMMIT DROP")
        with conn.cursor() as cur, cur.copy("COPY _mp_new (i, n, ts) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(_COPY_HEADER + rows.tobytes() + _COPY_TRAILER)
        conn.execute("ANALYZE _mp_new")
        found = conn.execute(_POINTS_PRESENT.format(schema=schema),
                             {**params, "unit": [u for _, u, _ in last], "source": SOURCE, "start": hour,
                              "end": hour + HOUR}).fetchall()
    present = [False] * len(winners)
    other_unit = False
    for what, i in found:
        if what == "point":
            present[i - 1] = True
        elif last[i - 1][2]:
            other_unit = True
    return present, other_unit


def new_measures(warehouse: Warehouse, new: _New, record: HourState, now: datetime, back) -> CustomLoad | str:
    schema, hour = warehouse.schema, record.hour
    winners = [(order, key, item, _is_late(order, record)) for order, key, item in new.winners.values()]
    present: list[bool] = []
    if winners:
        with warehouse.connect() as conn:
            present, other_unit = _points_present(conn, schema, hour, winners)
        if any(p and w[3] for p, w in zip(present, winners)):
            return "a new write ordered before the latest loaded one repeats a loaded identity"
        if other_unit:
            return "a new write ordered before the latest loaded one changes its series' unit"
    added = present.count(False)
    state = _settle(new, added, now)

    def in_transaction(conn: psycopg.Connection) -> None:
        _record_new(conn, schema, "measures", new, now, back)

    points = None
    if winners:
        points = load_points(warehouse, measure_frame(new.winners), source=SOURCE, start=hour, end=hour + HOUR,
                             in_transaction=in_transaction, scope="append")
    else:
        with warehouse.connect() as conn, conn.transaction():
            in_transaction(conn)
    return _result("measures", new, state, points)


def new_events(warehouse: Warehouse, new: _New, record: HourState, now: datetime, back) -> CustomLoad | str:
    schema, hour = warehouse.schema, record.hour
    rows = event_rows(new.winners)
    late = {(event_key(item.raw["tenant"], item.raw["name"], item.ts, item.raw.get("metadata", {}),
                       item.raw.get("text")), item.ts): _is_late(order, record)
            for order, _, item in new.winners.values()}
    with warehouse.connect() as conn:
        stored = {}
        if rows:
            stored = {(k, ts): source_file for k, ts, source_file in conn.execute(
                f"""SELECT e.event_key, e.ts, e.source_file FROM unnest(%s::uuid[], %s::timestamptz[]) AS t(k, ts)
                    JOIN {schema}.events e ON e.event_key = t.k AND e.ts = t.ts""",
                ([r[6] for r in rows], [r[2] for r in rows])).fetchall()}
        added = 0
        for row in rows:
            source_file = stored.get((row[6], row[2]))
            if source_file in record.files:  # loaded before: this write replaces that one
                if late[(row[6], row[2])]:
                    return "a new write ordered before the latest loaded one repeats a loaded identity"
            elif source_file is not None and source_file in new.in_zone:
                return f"an event of the hour is stored from {source_file}, which the hour's record does not hold"
            else:  # never loaded, or kept from a file the landing zone no longer has
                added += 1
        state = _settle(new, added, now)
        if rows:
            partitioning.ensure_partitions(conn, schema, "events", hour, hour + HOUR)
        with conn.transaction():
            upsert_events(conn, schema, hour, hour + HOUR, rows)
            state.rows = conn.execute(f"SELECT count(*) FROM {schema}.events WHERE ts >= %s AND ts < %s",
                                      (hour, hour + HOUR)).fetchone()[0]
            _record_new(conn, schema, "events", new, now, back)
    return _result("events", new, state, None)


def _settle(new: _New, added: int, now: datetime) -> HourState:
    """The record after the load: `added` of the new winners were identities not loaded before."""
    state = new.state
    state.duplicates += len(new.winners) - added
    state.rows += added
    for order, _, item in new.winners.values():
        state.see(order)
        state.tenants.add(item.raw["tenant"])
    state.loaded_at = now
    state.incremental_loads += 1
    return state


def _record_new(conn, schema: str, kind: Kind, new: _New, now: datetime, back: timedelta) -> None:
    hour = new.state.hour
    quarantine_table.replace_window(conn, schema, INDEX_KIND[kind], hour, hour + HOUR, [], new.quarantine)
    landing_index.mark_processed(conn, schema, INDEX_KIND[kind], new.touched, hour, hour + HOUR)
    loaded.save_incremental(conn, schema, INDEX_KIND[kind], new.state, new.files)
    loaded.prune(conn, schema, INDEX_KIND[kind], loaded.horizon(now, back))


def _result(kind: Kind, new: _New, state: HourState, points: LoadResult | None) -> CustomLoad:
    return CustomLoad.of_hours(kind, [state], files=len(state.files), torn_files=state.torn_files,
                               refused_files=state.refused_files, mode="incremental", new_items=new.read,
                               new_files=len(new.files), points=points)
