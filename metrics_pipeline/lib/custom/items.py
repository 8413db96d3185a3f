"""Pushed items as the loaders see them: a landing file's committed items, checked, and reduced to
the last write of each identity (pure Python: no warehouse, no landing zone).

Identity (SPEC §12): a measure is (tenant, name, metadata, ts), an event (tenant, name, ts,
metadata, text). The last write wins: the later `received_at`, then the later file (by key), then
the later position in the file: that is an item's `Order`, and the full and the incremental loads
(`load.py`, `incremental.py`) both reduce with `take`. Counting happens there too, per hour
(`loaded.HourState`): every item of an hour read is loaded or quarantined, so read = loaded +
quarantined whichever way the hour was loaded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd

from metrics_pipeline.lib.custom.files import Kind, hour_of_key, read_landing, tenant_dir
from metrics_pipeline.lib.custom.kafka_items import parse_kafka_file
from metrics_pipeline.lib.custom.loaded import HourState, prefix_digest
from metrics_pipeline.lib.kafka.files import SUFFIX as KAFKA_SUFFIX
from metrics_pipeline.lib.kafka.files import parse_key
from metrics_pipeline.lib.landing import LandingObject, RefusedObject
from metrics_pipeline.lib.points import MAX_NAME_BYTES, points_frame, text_problem
from metrics_pipeline.lib.warehouse.partitioning import floor_hour as hour_of

SOURCE = "custom"
#: `landing_files.kind` and `quarantine.source` of each kind of file
INDEX_KIND: dict[str, str] = {"measures": "custom_measures", "events": "custom_events"}
#: the unit of a measure sent without one (`points` requires a unit)
NO_UNIT = "none"
#: metadata keys naming the thing measured, in order of preference
RESOURCE_KEYS = ("resource", "host")
HOUR = timedelta(hours=1)
_CORRUPT = "{} corrupt line(s): not JSON objects, or a batch its commit line disowns"


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


@dataclasses.dataclass(slots=True)
class Item:
    """A committed item of a file, checked: `problem` is None when the warehouse can store it."""

    position: int  # 1-based among the file's committed items
    raw: dict
    hour: datetime
    ts: datetime | None = None
    received_at: datetime | None = None
    problem: str | None = None
    #: Kafka files (`kafka_items.py`): the quarantine key (message address, element), the value kept
    #: when refused, the message's (topic, partition, offset), whether it is an empty batch, and an
    #: accepted measure's series (`validate.series_key`, for the series cap)
    origin: tuple[str, int] | None = None
    excerpt: str | None = None
    message: tuple[str, int, int] | None = None
    empty: bool = False
    series: tuple | None = None


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
    end: int = 0  # offset just after the last commit line read
    digest: str = ""  # of the bytes before `end` (`loaded.prefix_digest`)


class _Memo:
    """What the items of one file repeat (tenant, names, metadata, units, receipt times), checked once."""

    def __init__(self, directory: str | None):
        self.directory = directory
        self.text_ok: set[str] = set()
        self.name_ok: set[str] = set()
        self.tenant_ok: set[str] = set()  # storable, and the tenant of the file's directory
        self.received: dict[str, datetime | None] = {}

    def text_problem(self, value: str, *, name: bool = False) -> str | None:
        ok = self.name_ok if name else self.text_ok
        if value in ok:
            return None
        problem = text_problem(value, max_bytes=MAX_NAME_BYTES if name else None)
        if problem is None:
            ok.add(value)
        return problem

    def received_at(self, value) -> datetime | None:
        if not isinstance(value, str):
            return None
        if value not in self.received:
            self.received[value] = parse_ts(value)
        return self.received[value]


def _check(kind: Kind, raw: dict, memo: _Memo) -> tuple[datetime | None, datetime | None, str | None]:
    """(ts, received_at, problem) of one item line."""
    ts = parse_ts(raw.get("ts"))
    received = memo.received_at(raw.get("received_at"))
    tenant, name, metadata = raw.get("tenant"), raw.get("name"), raw.get("metadata", {})
    if ts is None:
        return None, received, "ts: not an RFC 3339 time with a zone"
    if received is None:
        return ts, None, "received_at: not an RFC 3339 time with a zone"
    if not isinstance(tenant, str) or tenant not in memo.tenant_ok:
        if not isinstance(tenant, str) or not tenant or (p := memo.text_problem(tenant, name=True)):
            return ts, received, f"tenant: {p if isinstance(tenant, str) and tenant else 'missing or not a string'}"
        if memo.directory is not None and tenant_dir(tenant) != memo.directory:
            return ts, received, "tenant: not the tenant of the file's directory"
        memo.tenant_ok.add(tenant)
    if not isinstance(name, str) or not name or (p := memo.text_problem(name, name=True)):
        return ts, received, f"name: {p if isinstance(name, str) and name else 'missing or not a string'}"
    if not isinstance(metadata, dict):
        return ts, received, "metadata: not an object"
    for key, value in metadata.items():
        if not isinstance(value, str):
            return ts, received, "metadata: values must be strings"
        if key == "tenant":
            return ts, received, "metadata: `tenant` is reserved"
        if p := memo.text_problem(key) or memo.text_problem(value):
            return ts, received, f"metadata: {p}"
    if kind == "measures":
        value, unit = raw.get("value"), raw.get("unit", "")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return ts, received, "value: not a finite number"
        if not isinstance(unit, str) or (p := memo.text_problem(unit)):
            return ts, received, f"unit: {p or 'not a string'}"
    else:
        text = raw.get("text")
        if text is not None and (not isinstance(text, str) or (p := text_problem(text))):
            return ts, received, f"text: {p if isinstance(text, str) else 'not a string'}"
    return ts, received, None


def parse_file(obj: LandingObject, kind: Kind, data: bytes | RefusedObject, *, offset: int = 0,
               items_before: int = 0) -> ParsedFile:
    """Read one landing file's committed items and the hour each belongs to.

    Args:
        offset, items_before: read from byte `offset` (a commit boundary, the end of what was
            loaded before), numbering items after the `items_before` committed items before it.
    """
    receipt = hour_of_key(obj.key) or hour_of(datetime.fromtimestamp(obj.mtime, timezone.utc))
    parts = obj.key.split("/")
    directory = parts[4] if len(parts) == 6 else None
    if isinstance(data, RefusedObject):
        return ParsedFile(obj, kind, [], 0, False, data.reason, receipt, [receipt])
    if obj.key.endswith(KAFKA_SUFFIX):  # a measures or events topic's messages, landed by the consumer
        return parse_kafka_file(obj, kind, data, receipt, Item, ParsedFile)
    read = read_landing(data[offset:] if offset else data)
    items = []
    memo = _Memo(directory)
    for position, raw in enumerate(read.items, start=items_before + 1):
        ts, received, problem = _check(kind, raw, memo)
        items.append(Item(position, raw, hour_of(ts) if ts is not None else receipt, ts, received, problem))
    hours = {item.hour for item in items}
    if read.corrupt_lines or not items:
        hours.add(receipt)  # corrupt lines and empty files belong to the receipt hour
    end = offset + read.end
    return ParsedFile(obj, kind, items, read.corrupt_lines, read.torn, None, receipt, sorted(hours), end,
                      prefix_digest(data, end))


def identity_of(kind: Kind, item: Item) -> tuple:
    raw = item.raw
    identity = (raw["tenant"], raw["name"], tuple(sorted(raw.get("metadata", {}).items())), item.ts)
    return identity + (raw.get("text"),) if kind == "events" else identity


def take(kind: Kind, state: HourState, winners: dict, quarantine: list, key: str, item: Item,
         admit=None) -> None:
    """Count `item` (of `state`'s hour) and keep it if it is the last write of its identity so far.

    Args:
        admit: for measures from Kafka, the tenant's series cap: (tenant, `item.series`) -> None when
            the series may be stored, else why not (the item is then quarantined).
    """
    if item.empty:  # an empty Kafka batch: counted, nothing to load
        state.empty_batches += 1
        return
    state.read += 1
    problem = item.problem
    if problem is None and admit is not None and item.series is not None:
        problem = admit(item.raw["tenant"], item.series)
    if problem is not None:
        state.quarantined += 1
        state.reasons[problem.split(":")[0]] += 1
        raw = item.excerpt if item.excerpt is not None else json.dumps(item.raw, ensure_ascii=True)[:10_000]
        file, position = item.origin or (key, item.position)  # Kafka: keyed by the message (SPEC §12)
        quarantine.append((INDEX_KIND[kind], file, position, raw, problem, item.hour))
        return
    state.loaded += 1
    identity = identity_of(kind, item)
    order = (item.received_at, key, item.position)
    held = winners.get(identity)
    if held is not None:
        state.duplicates += 1
        if held[0] > order:
            return
    winners[identity] = (order, key, item)


class Redeliveries:
    """Which items of Kafka files are copies of a message read from another file (a consumer that died
    between a file and its commit read the same offsets again): each (topic, partition, offset) counts
    once. A file's offset range is in its name, and a file holds every message of its range, so a
    message of file F is a copy when another file of its partition covers its offset and comes first:
    a file loaded before (`loaded`, the incremental path), else one whose key sorts before F's.

    Args:
        keys: every file key the load reads (any kind: non-Kafka keys are ignored).
        loaded: keys of files whose messages were loaded before this load.
    """

    def __init__(self, keys, loaded=()):
        self._ranges: dict[tuple[str, int], list[tuple[int, int, str, bool]]] = {}
        for key, was_loaded in [(k, False) for k in keys] + [(k, True) for k in loaded]:
            if key.endswith(KAFKA_SUFFIX) and (parsed := parse_key(key)) is not None:
                topic, partition, first, last = parsed
                self._ranges.setdefault((topic, partition), []).append((first, last, key, was_loaded))
        self._covered: dict[str, list[tuple[int, int]]] = {}

    def covered(self, key: str) -> list[tuple[int, int]]:
        """The offset ranges of `key`'s partition that files before it hold."""
        if key not in self._covered:
            parsed = parse_key(key) if key.endswith(KAFKA_SUFFIX) else None
            ranges = []
            if parsed is not None:
                topic, partition, first, last = parsed
                ranges = [(a, b) for a, b, other, was_loaded in self._ranges.get((topic, partition), ())
                          if other != key and (was_loaded or other < key) and a <= last and b >= first]
            self._covered[key] = ranges
        return self._covered[key]

    @staticmethod
    def is_copy(ranges: list[tuple[int, int]], item: Item) -> bool:
        offset = item.message[2]
        return any(a <= offset <= b for a, b in ranges)


def take_corrupt(kind: Kind, state: HourState, quarantine: list, key: str, new: int, total: int) -> None:
    """Count `new` corrupt lines of file `key` (its receipt hour is `state`'s); its one quarantine
    row names all `total` of them."""
    state.read += new
    state.corrupt_lines += new
    state.quarantined += new
    state.reasons["corrupt lines"] += new
    quarantine.append((INDEX_KIND[kind], key, 0, None, _CORRUPT.format(total), state.hour))


def take_refused(kind: Kind, state: HourState, quarantine: list, key: str, reason: str) -> None:
    """Count a file the zone refuses (in its receipt hour, `state`'s): one item read, quarantined."""
    state.read += 1
    state.quarantined += 1
    state.refused_files += 1
    state.reasons["file refused"] += 1
    quarantine.append((INDEX_KIND[kind], key, -1, None, reason, state.hour))


def in_order(winners: dict[tuple, tuple]) -> list[tuple[str, Item]]:
    """(file key, item) of the last write of each identity, in write order (received_at, file key, position)."""
    return [(key, item) for _, key, item in sorted(winners.values(), key=lambda w: w[0])]


def measure_frame(winners: dict[tuple, tuple]) -> pd.DataFrame:
    """The points of `winners` (measures), one entry per series, each with its last write's unit."""
    series: dict[tuple, dict] = {}
    for _, item in in_order(winners):
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
    return points_frame(list(series.values()))


def event_rows(winners: dict[tuple, tuple]) -> list[tuple]:
    """The `events` rows of `winners`, in write order."""
    rows = []
    for key, item in in_order(winners):
        raw = item.raw
        metadata = raw.get("metadata", {})
        rows.append((raw["tenant"], raw["name"], item.ts, json.dumps(metadata, sort_keys=True, ensure_ascii=False),
                     raw.get("text"), item.received_at,
                     event_key(raw["tenant"], raw["name"], item.ts, metadata, raw.get("text")), key))
    return rows
