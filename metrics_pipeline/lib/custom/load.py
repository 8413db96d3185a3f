"""Load pushed measures and events of a time window into `points` and `events`, atomically.

Landing files are keyed by receipt time, but an item's `ts` may be up to `ts_back` (6 days) before
its receipt and `ts_ahead` (5 minutes) after it, so one file holds items of many hours. As for the
ingestion logs (`lib/ingestion_logs/load.py`), the warehouse indexes each file with the hours its
items fall in (`landing_files`, kinds `custom_measures` / `custom_events`):
1. `sync_index` lists the receipt hours that can hold items of [start, end) and reads the files
   the index has not seen in their current version (a file grows while its minute lasts);
2. the window's files (`landing_index.files_touching`) are read with `read_landing` (committed
   batches only), their items of [start, end) kept, checked, and reduced to the last write of each
   identity (SPEC §12): the later `received_at` wins, then the later file (by key), then the later
   line. A client's retry carries the same identities, so it stores nothing twice;
3. one transaction replaces the window (points: `load_points`, scope "window", source `custom`;
   events: delete the window's rows of the files in the landing zone, insert the new ones),
   replaces the window's quarantine rows and marks the files' hours processed.

Accounting: read = loaded + quarantined. Loaded items include the duplicates dropped (a retried
batch is read and loaded, then replaced by its repeat). Quarantined (table `quarantine`, source
`custom_measures` / `custom_events`): an item the warehouse cannot store (a field missing or of the
wrong type, NUL or a lone surrogate, a name over 1,000 bytes, a non-finite value, a metadata key
`tenant`, a `tenant` other than the file's directory), one row per item at its position (1-based,
among the file's committed items); and a file's corrupt lines (`LandingRead.corrupt_lines`: lines
that are not JSON, or a batch its commit line disowns) as one row at position 0 naming the count,
owned by the file's receipt hour. A file the zone refuses to read is one row at position -1 and is
never marked processed (its content was never read).

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
import hashlib
import json
import math
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.custom.files import Kind, hour_of_key, hour_prefix, read_landing, tenant_dir
from metrics_pipeline.lib.landing import LandingObject, LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.points import MAX_NAME_BYTES, points_frame, text_problem
from metrics_pipeline.lib.warehouse import landing_index, partitioning
from metrics_pipeline.lib.warehouse import quarantine as quarantine_table
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

SOURCE = "custom"
#: `landing_files.kind` and `quarantine.source` of each kind of file
INDEX_KIND: dict[str, str] = {"measures": "custom_measures", "events": "custom_events"}
DEFAULT_BACK = timedelta(days=6)
DEFAULT_AHEAD = timedelta(minutes=5)
#: the unit of a measure sent without one (`points` requires a unit)
NO_UNIT = "none"
#: metadata keys naming the thing measured, in order of preference
RESOURCE_KEYS = ("resource", "host")
_EVENT_COLUMNS = ("tenant", "name", "ts", "metadata", "text", "received_at", "event_key", "source_file")


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def parse_ts(value) -> datetime | None:
    """A landing timestamp (`2026-01-05T13:00:00.123456Z`) as an aware UTC datetime, or None."""
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return ts.astimezone(timezone.utc)


def resource_of(metadata: dict[str, str]) -> str:
    """What a pushed measure measures: metadata `resource`, else `host`, else empty."""
    for key in RESOURCE_KEYS:
        if metadata.get(key):
            return metadata[key]
    return ""


def event_key(tenant: str, name: str, ts: datetime, metadata: dict[str, str], text: str | None) -> uuid.UUID:
    """The stored identity of an event: md5 of its canonical (tenant, name, ts in us, metadata, text)."""
    us = int((ts - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))
    canonical = json.dumps([tenant, name, us, sorted(metadata.items()), text], ensure_ascii=False,
                           separators=(",", ":"))
    return uuid.UUID(bytes=hashlib.md5(canonical.encode("utf-8")).digest())


# -- one file --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Item:
    """A committed item of a file, checked: `problem` is None when the warehouse can store it."""

    position: int  # 1-based among the file's committed items
    raw: dict
    hour: datetime
    ts: datetime | None = None
    received_at: datetime | None = None
    problem: str | None = None


@dataclasses.dataclass
class ParsedFile:
    obj: LandingObject
    kind: Kind
    items: list[Item]
    corrupt_lines: int
    torn: bool
    refused: str | None
    receipt_hour: datetime
    hours: list[datetime]  # the hours it is indexed under


def _check(kind: Kind, raw: dict, directory: str | None) -> tuple[datetime | None, datetime | None, str | None]:
    """(ts, received_at, problem) of one item line."""
    ts = parse_ts(raw.get("ts"))
    received = parse_ts(raw.get("received_at"))
    tenant, name, metadata = raw.get("tenant"), raw.get("name"), raw.get("metadata", {})
    if ts is None:
        return None, received, "ts: not an RFC 3339 time with a zone"
    if received is None:
        return ts, None, "received_at: not an RFC 3339 time with a zone"
    if not isinstance(tenant, str) or not tenant or (p := text_problem(tenant, max_bytes=MAX_NAME_BYTES)):
        return ts, received, f"tenant: {p if isinstance(tenant, str) and tenant else 'missing or not a string'}"
    if directory is not None and tenant_dir(tenant) != directory:
        return ts, received, "tenant: not the tenant of the file's directory"
    if not isinstance(name, str) or not name or (p := text_problem(name, max_bytes=MAX_NAME_BYTES)):
        return ts, received, f"name: {p if isinstance(name, str) and name else 'missing or not a string'}"
    if not isinstance(metadata, dict):
        return ts, received, "metadata: not an object"
    for key, value in metadata.items():
        if not isinstance(value, str):
            return ts, received, "metadata: values must be strings"
        if key == "tenant":
            return ts, received, "metadata: `tenant` is reserved"
        if p := text_problem(key) or text_problem(value):
            return ts, received, f"metadata: {p}"
    if kind == "measures":
        value, unit = raw.get("value"), raw.get("unit", "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return ts, received, "value: not a finite number"
        if not isinstance(unit, str) or (p := text_problem(unit)):
            return ts, received, f"unit: {p or 'not a string'}"
    else:
        text = raw.get("text")
        if text is not None and (not isinstance(text, str) or (p := text_problem(text))):
            return ts, received, f"text: {p if isinstance(text, str) else 'not a string'}"
    return ts, received, None


def parse_file(obj: LandingObject, kind: Kind, data: bytes | RefusedObject) -> ParsedFile:
    """Read one landing file's committed items and the hour each belongs to."""
    receipt = hour_of_key(obj.key) or _hour(datetime.fromtimestamp(obj.mtime, timezone.utc))
    parts = obj.key.split("/")
    directory = parts[4] if len(parts) == 6 else None
    if isinstance(data, RefusedObject):
        return ParsedFile(obj, kind, [], 0, False, data.reason, receipt, [receipt])
    read = read_landing(data)
    items = []
    for position, raw in enumerate(read.items, start=1):
        ts, received, problem = _check(kind, raw, directory)
        items.append(Item(position, raw, _hour(ts) if ts is not None else receipt, ts, received, problem))
    hours = {item.hour for item in items}
    if read.corrupt_lines or not items:
        hours.add(receipt)  # corrupt lines and empty files belong to the receipt hour
    return ParsedFile(obj, kind, items, read.corrupt_lines, read.torn, None, receipt, sorted(hours))


# -- the index -------------------------------------------------------------------------------------

def index_objects(conn: psycopg.Connection, schema: str, zone: LandingZone, kind: Kind,
                  objects: list[LandingObject]) -> dict[str, ParsedFile]:
    """Read `objects` and record the hours their items fall in (`landing_index.index_files`)."""
    parsed = {}
    for obj, (_, data) in zip(objects, read_many(zone, objects)):
        parsed[obj.key] = parse_file(obj, kind, data)
    landing_index.index_files(conn, schema, INDEX_KIND[kind],
                              [(p.obj, p.hours, len(p.items) + p.corrupt_lines) for p in parsed.values()])
    return parsed


def receipt_hours(start: datetime, end: datetime, back: timedelta, ahead: timedelta,
                  now: datetime | None = None) -> list[datetime]:
    """The receipt hours whose files may hold items of [start, end)."""
    first = _hour(start - ahead)
    last = _hour(end - timedelta(microseconds=1) + back)
    if now is not None:
        last = min(last, _hour(now) + timedelta(hours=1))
    hours, hour = [], first
    while hour <= last:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def list_hours(zone: LandingZone, kind: Kind, hours: Iterable[datetime]) -> dict[str, LandingObject]:
    return {o.key: o for hour in hours for o in zone.list(hour_prefix(kind, hour))}


def sync_index(conn, schema, zone, kind: Kind, listed: dict[str, LandingObject]) -> dict[str, ParsedFile]:
    """Index the listed files that are new or changed since indexed."""
    known = landing_index.indexed(conn, schema, INDEX_KIND[kind])
    stale = [o for key, o in sorted(listed.items()) if known.get(key) != o.etag]
    return index_objects(conn, schema, zone, kind, stale)


# -- a window --------------------------------------------------------------------------------------

@dataclasses.dataclass
class CustomLoad:
    """What loading a window of pushed items did."""

    kind: str
    files: int = 0
    read: int = 0  # items of the window's hours (and corrupt lines the window owns)
    loaded: int = 0  # storable items, duplicates included
    duplicates: int = 0  # items replaced by a later write of the same identity
    quarantined: int = 0
    corrupt_lines: int = 0
    torn_files: int = 0  # files ending in an unfinished batch (a writer died, or is writing now)
    refused_files: int = 0
    missing_files: int = 0  # indexed files gone from the landing zone
    rows: int = 0  # points or events the window holds after the load
    tenants: int = 0
    reasons: Counter = dataclasses.field(default_factory=Counter)
    points: LoadResult | None = None

    def as_metadata(self) -> dict:
        meta = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("reasons", "points", "kind")}
        meta = {("items_read" if k == "read" else k): v for k, v in meta.items()}
        if self.points is not None:
            meta = {**self.points.as_metadata(), **meta}
        meta["dagster/row_count"] = self.rows
        return meta


@dataclasses.dataclass
class _Window:
    result: CustomLoad
    winners: dict[tuple, tuple]  # identity -> (order, file key, item)
    quarantine: list[tuple]
    touched: list[tuple[LandingObject, list[datetime]]]
    present: list[str]


def _read_window(conn, schema, zone, kind: Kind, start, end, back, ahead, now) -> _Window:
    result = CustomLoad(kind)
    listed = list_hours(zone, kind, receipt_hours(start, end, back, ahead, now))
    parsed = sync_index(conn, schema, zone, kind, listed)
    keys = landing_index.files_touching(conn, schema, INDEX_KIND[kind], start, end)
    missing = [k for k in keys if k not in listed]
    if missing:  # indexed under the window but received outside the listed hours (or deleted)
        for obj in zone.list(f"custom/{kind}/"):
            if obj.key in missing:
                listed[obj.key] = obj
        parsed.update(sync_index(conn, schema, zone, kind, {k: listed[k] for k in missing if k in listed}))
    present = [k for k in keys if k in listed]
    result.missing_files = len(keys) - len(present)
    winners: dict[tuple, tuple] = {}
    quarantine, touched, tenants = [], [], set()
    source = INDEX_KIND[kind]
    for key in present:
        if key not in parsed:
            parsed.update(index_objects(conn, schema, zone, kind, [listed[key]]))
        file = parsed[key]
        result.files += 1
        if file.refused:
            result.refused_files += 1
            if start <= file.receipt_hour < end:
                result.read += 1
                result.quarantined += 1
                result.reasons["file refused"] += 1
                quarantine.append((source, key, -1, None, file.refused, file.receipt_hour))
            continue  # never marked processed: its content was never read
        touched.append((file.obj, file.hours))
        result.torn_files += int(file.torn)
        if file.corrupt_lines and start <= file.receipt_hour < end:
            result.read += file.corrupt_lines
            result.corrupt_lines += file.corrupt_lines
            result.quarantined += file.corrupt_lines
            result.reasons["corrupt lines"] += file.corrupt_lines
            reason = f"{file.corrupt_lines} corrupt line(s): not JSON objects, or a batch its commit line disowns"
            quarantine.append((source, key, 0, None, reason, file.receipt_hour))
        for item in file.items:
            if not start <= item.hour < end:
                continue
            result.read += 1
            if item.problem is not None:
                result.quarantined += 1
                result.reasons[item.problem.split(":")[0]] += 1
                raw = json.dumps(item.raw, ensure_ascii=True)[:10_000]  # escapes NUL and lone surrogates
                quarantine.append((source, key, item.position, raw, item.problem, item.hour))
                continue
            result.loaded += 1
            raw = item.raw
            metadata = raw.get("metadata", {})
            identity = (raw["tenant"], raw["name"], tuple(sorted(metadata.items())), item.ts)
            if kind == "events":
                identity += (raw.get("text"),)
            order = (item.received_at, key, item.position)
            held = winners.get(identity)
            if held is not None:
                result.duplicates += 1
                if held[0] > order:
                    continue
            winners[identity] = (order, key, item)
            tenants.add(raw["tenant"])
    result.tenants = len(tenants)
    in_zone = sorted(set(listed) | set(present))
    return _Window(result, winners, quarantine, touched, in_zone)


def _replace_quarantine(conn, schema, kind: Kind, start, end, window: _Window) -> None:
    quarantine_table.replace_window(conn, schema, INDEX_KIND[kind], start, end, window.present, window.quarantine)


def _in_order(winners: dict[tuple, tuple]) -> list[tuple[str, Item]]:
    """(file key, item) of the last write of each identity, in write order (received_at, file key, position)."""
    return [(key, item) for _, key, item in sorted(winners.values(), key=lambda w: w[0])]


def load_measures(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, *,
                  back: timedelta = DEFAULT_BACK, ahead: timedelta = DEFAULT_AHEAD,
                  now: datetime | None = None) -> CustomLoad:
    """Make `points` (source `custom`) hold exactly the last write of every pushed measure of [start, end).

    Args:
        warehouse: the (migrated) warehouse.
        zone: the landing zone the push API writes to.
        start, end: the window, timezone-aware (whole hours: the partitions).
        back, ahead: the API's `ts_back` / `ts_ahead`: which receipt hours may hold items of the window.
        now: the clock (default: the system's); receipt hours after it are not listed.

    Returns:
        CustomLoad: counts (items read, loaded, duplicates, quarantined, files) and the LoadResult.
    """
    schema = warehouse.schema
    now = now or datetime.now(timezone.utc)
    with warehouse.connect() as conn:
        window = _read_window(conn, schema, zone, "measures", start, end, back, ahead, now)
    series: dict[tuple, dict] = {}
    for _, item in _in_order(window.winners):
        raw = item.raw
        metadata = raw.get("metadata", {})
        key = (raw["tenant"], raw["name"], tuple(sorted(metadata.items())))
        entry = series.get(key)
        if entry is None:
            entry = series[key] = {"metric": raw["name"], "resource": resource_of(metadata),
                                   "labels": {**metadata, "tenant": raw["tenant"]}, "ts": [], "value": []}
        entry["unit"] = raw.get("unit") or NO_UNIT  # the last write's unit is the series' unit
        entry["ts"].append(item.ts)
        entry["value"].append(float(raw["value"]))

    def in_transaction(conn: psycopg.Connection) -> None:
        _replace_quarantine(conn, schema, "measures", start, end, window)
        landing_index.mark_processed(conn, schema, INDEX_KIND["measures"], window.touched, start, end)

    result = window.result
    result.points = load_points(warehouse, points_frame(list(series.values())), source=SOURCE, start=start,
                                end=end, in_transaction=in_transaction, scope="window")
    result.rows = result.points.points
    return result


def load_events(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, *,
                back: timedelta = DEFAULT_BACK, ahead: timedelta = DEFAULT_AHEAD,
                now: datetime | None = None) -> CustomLoad:
    """Make `events` hold exactly the last write of every pushed event of [start, end) (arguments as
    `load_measures`). Rows loaded from files no longer in the landing zone are kept."""
    schema = warehouse.schema
    now = now or datetime.now(timezone.utc)
    with warehouse.connect() as conn:
        window = _read_window(conn, schema, zone, "events", start, end, back, ahead, now)
        rows = []
        for key, item in _in_order(window.winners):
            raw = item.raw
            metadata = raw.get("metadata", {})
            rows.append((raw["tenant"], raw["name"], item.ts, json.dumps(metadata, sort_keys=True, ensure_ascii=False),
                         raw.get("text"), item.received_at,
                         event_key(raw["tenant"], raw["name"], item.ts, metadata, raw.get("text")), key))
        if rows:
            partitioning.ensure_partitions(conn, schema, "events", start, end)
        with conn.transaction():
            for lock in partitioning.day_lock_keys(f"metrics_pipeline.events:{schema}", start, end):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            conn.execute(
                f"""DELETE FROM {schema}.events WHERE ts >= %s AND ts < %s AND source_file = ANY(%s)""",
                (start, end, window.present),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    f"""INSERT INTO {schema}.events ({', '.join(_EVENT_COLUMNS)})
                        VALUES (%s, %s, %s, %s::jsonb, %s, %s, %s, %s)
                        ON CONFLICT (event_key, ts) DO UPDATE
                        SET received_at = EXCLUDED.received_at, source_file = EXCLUDED.source_file""",
                    rows,
                )
            _replace_quarantine(conn, schema, "events", start, end, window)
            landing_index.mark_processed(conn, schema, INDEX_KIND["events"], window.touched, start, end)
        window.result.rows = conn.execute(
            f"SELECT count(*) FROM {schema}.events WHERE ts >= %s AND ts < %s", (start, end)).fetchone()[0]
    return window.result


# -- the sensor ------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class SensorCursor:
    """The custom sensor's cursor: the hour that was current at its last tick (receipt hours from
    the one before it are listed again, and hours after it had no partition then)."""

    through: datetime | None = None

    def encode(self) -> str:
        return json.dumps({"through": self.through.isoformat() if self.through else None})

    @classmethod
    def decode(cls, text: str | None) -> SensorCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(datetime.fromisoformat(raw["through"]) if raw.get("through") else None)


@dataclasses.dataclass(frozen=True)
class SensorPlan:
    """One tick: per kind, the hours to request (each with a digest of the files feeding it)."""

    hours: dict[str, dict[datetime, str]]
    cursor: SensorCursor
    files: int
    deferred: list[datetime] = dataclasses.field(default_factory=list)


def plan_sensor_tick(warehouse: Warehouse, zone: LandingZone, cursor: SensorCursor, *,
                     now: datetime | None = None, max_catchup: timedelta = timedelta(days=7)) -> SensorPlan:
    """Index the files received since the previous tick (new, or grown since indexed) and return
    the hours their items touch, per kind, for the hours that have a partition (up to the current
    one). Hours ahead of now are deferred; like `lib.ingestion_logs.load.plan_sensor_tick`, a
    later tick requests them once they begin, from `landing_index.uncommitted_hours`.

    Receipt hours listed: from the hour before the previous tick's current hour (files finish
    after their hour ends) to the current one; after a downtime at most `max_catchup` back.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    current = _hour(now)
    since = cursor.through if cursor.through is not None else current
    first = max(since - timedelta(hours=1), current - max_catchup)
    hours_listed = []
    hour = first
    while hour <= current:
        hours_listed.append(hour)
        hour += timedelta(hours=1)
    plan: dict[str, dict[datetime, str]] = {}
    files = 0
    deferred: set[datetime] = set()
    with warehouse.connect() as conn:
        for kind in ("measures", "events"):
            index_kind = INDEX_KIND[kind]
            listed = list_hours(zone, kind, hours_listed)
            keys = [k for k in listed]
            before = landing_index.hours_of(conn, warehouse.schema, index_kind, keys)
            parsed = sync_index(conn, warehouse.schema, zone, kind, listed)
            files += len(parsed)
            touched = {h for p in parsed.values() for h in p.hours}
            touched |= {h for key in parsed for h in before.get(key, [])}
            after = cursor.through if cursor.through is not None else current - timedelta(hours=1)
            arrived = landing_index.uncommitted_hours(conn, warehouse.schema, index_kind, after, current) \
                if after < current else []
            due = sorted({h for h in touched if h <= current} | set(arrived))
            deferred |= {h for h in touched if h > current}
            digests = landing_index.inputs_digest(conn, warehouse.schema, index_kind, due)
            plan[kind] = {h: digests.get(h, "none") for h in due}
    return SensorPlan(plan, SensorCursor(max(current, cursor.through or current)), files, sorted(deferred))
