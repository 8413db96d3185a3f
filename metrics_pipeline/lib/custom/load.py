"""Load pushed measures and events of a time window into `points` and `events`, atomically; the
hour in progress incrementally.

The whole window (`load_measures` / `load_events` by default, and whenever the incremental path is
not sure):
1. `index.sync_index` lists the receipt hours that can hold items of [start, end) and indexes the
   files the index has not seen in their current version;
2. the window's files (`index.files_touching`) are read with `read_landing` (committed batches
   only), their items of [start, end) kept, checked, and reduced to the last write of each identity
   (`items.take`: the later `received_at` wins, then the later file, then the later line). A
   client's retry carries the same identities, so it stores nothing twice;
3. one transaction replaces the window (points: `load_points`, scope "window", source `custom`;
   events: delete the window's rows of the files in the landing zone, insert the new ones),
   replaces the window's quarantine rows, marks the files' hours processed, and records what each
   hour now holds (`loaded.py`: totals, the latest write, each file's loaded prefix).

With `incremental=True` (the sensor's runs: `defs/custom/assets.py`), a run of one hour that has a
record loads only what is new since (`incremental.py`, where the argument that this equals the full
reload is made), and falls back to the whole window, saying why (`CustomLoad.full_because`), when
the window is not one hour, the hour has no record (never loaded, too old, other rules), or the
files or the warehouse disagree with the record. Runs of one hour hold a lock from reading the
record to the commit (`loaded.locked`), so two never build on the same record.

Files a measures or events topic landed (`.kafka`, `kafka_items.py`) are read with the push API's:
their items are validated by the API's rules, each message's items once however many files hold it
(`items.Redeliveries`: counted as `redelivered`), and a measure from Kafka that would take its tenant
past its series cap is quarantined (the API refuses such a batch with 422; here there is no one to
answer, `series_cap.kafka_series_cap`).

Accounting: read = loaded + quarantined, per hour. Loaded items include the duplicates dropped (a
retried batch is read and loaded, then replaced by its repeat). Quarantined (table `quarantine`,
source `custom_measures` / `custom_events`): an item the warehouse cannot store (a field missing
or of the wrong type, NUL or a lone surrogate, a name over 1,000 bytes, a non-finite value, a
metadata key `tenant`, a `tenant` other than the file's directory), one row per item at its
position (1-based, among the file's committed items); and a file's corrupt lines
(`LandingRead.corrupt_lines`: lines that are not JSON, or a batch its commit line disowns) as one
row at position 0 naming the count, owned by the file's receipt hour. A file the zone refuses to
read is one row at position -1 and is never marked processed (its content was never read).

Measures become points: metric = name, labels = metadata plus `tenant` (the line's, which the API
took from the key and which must match the file's tenant directory), unit = the item's (`none`
when it gave none; the last write's when one series changed unit), and resource = metadata
`resource`, else metadata `host`, else empty (SPEC §2: the thing measured, when the application
says what it is). The resource is derived from the metadata, so a measure's identity (tenant, name,
metadata, ts) is exactly its (series, ts).

Rows of landing files deleted since (landing retention) are kept in `events`; in `points` the window
is replaced whole, as for host files (landing retention never deletes a file before raw retention
dropped its points).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.custom import loaded
from metrics_pipeline.lib.custom.files import Kind
from metrics_pipeline.lib.custom.incremental import new_events, new_measures, read_new, upsert_events
from metrics_pipeline.lib.custom.index import files_touching, index_objects, list_hours, receipt_hours, sync_index
from metrics_pipeline.lib.custom.items import (  # noqa: F401 - event_key, parse_ts, resource_of: re-exported
    HOUR,
    INDEX_KIND,
    SOURCE,
    Redeliveries,
    event_key,
    event_rows,
    measure_frame,
    parse_ts,
    resource_of,
    take,
    take_corrupt,
    take_refused,
)
from metrics_pipeline.lib.custom.loaded import CustomLoad, FileState, HourState
from metrics_pipeline.lib.custom.series_cap import kafka_series_cap
from metrics_pipeline.lib.landing import LandingObject, LandingZone
from metrics_pipeline.lib.warehouse import landing_index, partitioning
from metrics_pipeline.lib.warehouse import quarantine as quarantine_table
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import load_points
from metrics_pipeline.lib.warehouse.partitioning import hours as hours_between

#: the API's `ts_back` / `ts_ahead` defaults (`config/api.yaml`)
DEFAULT_BACK = timedelta(days=6)
DEFAULT_AHEAD = timedelta(minutes=5)


@dataclasses.dataclass
class _Window:
    result: CustomLoad
    winners: dict[tuple, tuple]  # identity -> (order, file key, item)
    quarantine: list[tuple]
    touched: list[tuple[LandingObject, list[datetime]]]
    present: list[str]
    hours: dict[datetime, HourState]


def _read_window(conn, schema, zone, kind: Kind, start, end, back, ahead, now, admit=None) -> _Window:
    hours = {h: HourState(h, full_at=now, loaded_at=now) for h in hours_between(start, end)}
    listed = list_hours(zone, kind, receipt_hours(start, end, back, ahead, now))
    parsed = sync_index(conn, schema, zone, kind, listed)
    keys = files_touching(conn, schema, kind, start, end)
    missing = [k for k in keys if k not in listed]
    if missing:  # indexed under the window but received outside the listed hours (or deleted)
        for obj in zone.list(f"custom/{kind}/"):
            if obj.key in missing:
                listed[obj.key] = obj
        parsed.update(sync_index(conn, schema, zone, kind, {k: listed[k] for k in missing if k in listed}))
    present = [k for k in keys if k in listed]
    result = CustomLoad(kind, missing_files=len(keys) - len(present))
    winners: dict[tuple, tuple] = {}
    quarantine, touched = [], []
    redeliveries = Redeliveries(present)
    for key in present:
        if key not in parsed:
            parsed.update(index_objects(conn, schema, zone, kind, [listed[key]]))
        file = parsed[key]
        result.files += 1
        if file.refused:
            result.refused_files += 1
            for h in file.hours:
                if h in hours:
                    hours[h].files[key] = FileState(file.obj.etag, -1, "", 0, 0, False)
            if file.receipt_hour in hours:
                take_refused(kind, hours[file.receipt_hour], quarantine, key, file.refused)
            continue  # never marked processed: its content was never read
        touched.append((file.obj, file.hours))
        result.torn_files += int(file.torn)
        for h in file.hours:
            if h in hours:
                hours[h].files[key] = FileState(file.obj.etag, file.end, file.digest, len(file.items),
                                                file.corrupt_lines, file.torn)
        if file.corrupt_lines and file.receipt_hour in hours:
            take_corrupt(kind, hours[file.receipt_hour], quarantine, key, file.corrupt_lines, file.corrupt_lines)
        copies = redeliveries.covered(key)
        for item in file.items:
            if item.hour in hours:
                if copies and Redeliveries.is_copy(copies, item):
                    hours[item.hour].redelivered += 1
                    continue
                take(kind, hours[item.hour], winners, quarantine, key, item, admit)
    for order, _, item in winners.values():
        state = hours[item.hour]
        state.see(order)
        state.tenants.add(item.raw["tenant"])
        state.rows += 1
    totals = CustomLoad.of_hours(kind, list(hours.values()))
    for name in ("read", "loaded", "duplicates", "quarantined", "corrupt_lines", "tenants", "reasons", "empty_batches",
                 "redelivered"):
        setattr(result, name, getattr(totals, name))
    result.new_items, result.new_files = result.read, result.files
    in_zone = sorted(set(listed) | set(present))
    return _Window(result, winners, quarantine, touched, in_zone, hours)


def _record_full(conn, schema, kind: Kind, start, end, window: _Window, now: datetime, back: timedelta) -> None:
    """Inside the load's transaction: quarantine, processed marks and the hours' records."""
    quarantine_table.replace_window(conn, schema, INDEX_KIND[kind], start, end, window.present, window.quarantine)
    landing_index.mark_processed(conn, schema, INDEX_KIND[kind], window.touched, start, end)
    horizon = loaded.horizon(now, back)
    loaded.prune(conn, schema, INDEX_KIND[kind], horizon)
    loaded.save_full(conn, schema, INDEX_KIND[kind], max(start, horizon), max(end, horizon),
                     [s for h, s in window.hours.items() if h >= horizon])


def _full_measures(warehouse: Warehouse, zone, start, end, back, ahead, now) -> CustomLoad:
    schema = warehouse.schema
    with warehouse.connect() as conn:
        window = _read_window(conn, schema, zone, "measures", start, end, back, ahead, now, kafka_series_cap(warehouse))
    result = window.result
    result.points = load_points(warehouse, measure_frame(window.winners), source=SOURCE, start=start, end=end,
                                in_transaction=lambda conn: _record_full(conn, schema, "measures", start, end,
                                                                         window, now, back),
                                scope="window")
    result.rows = result.points.points
    return result


def _full_events(warehouse: Warehouse, zone, start, end, back, ahead, now) -> CustomLoad:
    schema = warehouse.schema
    with warehouse.connect() as conn:
        window = _read_window(conn, schema, zone, "events", start, end, back, ahead, now)
        rows = event_rows(window.winners)
        if rows:
            partitioning.ensure_partitions(conn, schema, "events", start, end)
        with conn.transaction():
            conn.execute(f"DELETE FROM {schema}.events WHERE ts >= %s AND ts < %s AND source_file = ANY(%s)",
                         (start, end, window.present))
            upsert_events(conn, schema, start, end, rows)
            for state in window.hours.values():
                state.rows = 0
            for hour, count in conn.execute(
                    f"""SELECT date_trunc('hour', ts AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', count(*)
                        FROM {schema}.events WHERE ts >= %s AND ts < %s GROUP BY 1""", (start, end)).fetchall():
                window.hours[hour].rows = count
            _record_full(conn, schema, "events", start, end, window, now, back)
    window.result.rows = sum(s.rows for s in window.hours.values())
    return window.result


def _load(kind: Kind, warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, *,
          back: timedelta, ahead: timedelta, now: datetime | None, incremental: bool) -> CustomLoad:
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    schema, index_kind = warehouse.schema, INDEX_KIND[kind]
    hours = hours_between(start, end)
    why = "asked for" if not incremental else None
    with warehouse.connect() as lock, loaded.locked(lock, schema, index_kind, hours):
        if why is None and (len(hours) != 1 or hours[0] != start or end != start + HOUR):
            why = "the window is not one hour"
        record = None if why else loaded.read_state(lock, schema, index_kind, start)
        if why is None and record is None:
            why = "the hour has no record of a load (never loaded, or too old)"
        elif why is None and record.rule != loaded.RULE:
            why = f"the hour's record was written under rules {record.rule}, these are {loaded.RULE}"
        if why is None and start < loaded.horizon(now, back):
            why = "the hour is older than the API's back window"
        if why is None:
            with warehouse.connect() as conn:
                new = read_new(conn, schema, zone, kind, start, back, ahead, now, record,
                               kafka_series_cap(warehouse) if kind == "measures" else None)
            if isinstance(new, str):
                why = new
            else:
                writer = new_measures if kind == "measures" else new_events
                result = writer(warehouse, new, record, now, back)
                if not isinstance(result, str):
                    return result
                why = result
        full = _full_measures if kind == "measures" else _full_events
        result = full(warehouse, zone, start, end, back, ahead, now)
        result.full_because = why
        return result


def load_measures(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, *,
                  back: timedelta = DEFAULT_BACK, ahead: timedelta = DEFAULT_AHEAD,
                  now: datetime | None = None, incremental: bool = False) -> CustomLoad:
    """Make `points` (source `custom`) hold exactly the last write of every pushed measure of [start, end).

    Args:
        warehouse: the (migrated) warehouse.
        zone: the landing zone the push API writes to.
        start, end: the window, timezone-aware (whole hours: the partitions).
        back, ahead: the API's `ts_back` / `ts_ahead`: which receipt hours may hold items of the window.
        now: the clock (default: the system's); receipt hours after it are not listed.
        incremental: load only what is new since the hour's last load, when that is safe (see the
            module docstring); otherwise, and by default, replace the window.

    Returns:
        CustomLoad: counts (items read, loaded, duplicates, quarantined, files) of the window, how it
        was loaded (`mode`, `full_because`), and the LoadResult.
    """
    return _load("measures", warehouse, zone, start, end, back=back, ahead=ahead, now=now, incremental=incremental)


def load_events(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, *,
                back: timedelta = DEFAULT_BACK, ahead: timedelta = DEFAULT_AHEAD,
                now: datetime | None = None, incremental: bool = False) -> CustomLoad:
    """Make `events` hold exactly the last write of every pushed event of [start, end) (arguments as
    `load_measures`). Rows loaded from files no longer in the landing zone are kept."""
    return _load("events", warehouse, zone, start, end, back=back, ahead=ahead, now=now, incremental=incremental)
