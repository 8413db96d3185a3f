"""Which landing files feed an hour: listing the receipt hours, and the warehouse's index of the
hours each custom file holds items of (`landing_files`, kinds `custom_measures` / `custom_events`).

Files are keyed by receipt time, but an item's `ts` may be up to `ts_back` (6 days) before its
receipt and `ts_ahead` (5 minutes) after it, so one file holds items of many hours; a file grows
while its minute lasts, so a file is indexed again whenever its version (etag) changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import psycopg

from metrics_pipeline.lib.custom.files import Kind, hour_prefix
from metrics_pipeline.lib.custom.items import HOUR, INDEX_KIND, ParsedFile, hour_of, parse_file
from metrics_pipeline.lib.landing import LandingObject, LandingZone, read_many
from metrics_pipeline.lib.warehouse import landing_index
from metrics_pipeline.lib.warehouse.partitioning import hours as hours_between


def index_objects(conn: psycopg.Connection, schema: str, zone: LandingZone, kind: Kind,
                  objects: list[LandingObject], keep: dict | None = None) -> dict[str, ParsedFile]:
    """Read `objects` and record the hours their items fall in (`landing_index.index_files`);
    with `keep`, also keep each object's bytes (or refusal) there, by key."""
    parsed = {}
    for obj, (_, data) in zip(objects, read_many(zone, objects)):
        parsed[obj.key] = parse_file(obj, kind, data)
        if keep is not None:
            keep[obj.key] = data
    landing_index.index_files(conn, schema, INDEX_KIND[kind],
                              [(p.obj, p.hours, len(p.items) + p.corrupt_lines) for p in parsed.values()])
    return parsed


def receipt_hours(start: datetime, end: datetime, back: timedelta, ahead: timedelta,
                  now: datetime | None = None) -> list[datetime]:
    """The receipt hours whose files may hold items of [start, end)."""
    first = hour_of(start - ahead)
    last = hour_of(end - timedelta(microseconds=1) + back)
    if now is not None:
        last = min(last, hour_of(now) + HOUR)
    return hours_between(first, last + HOUR)


def list_hours(zone: LandingZone, kind: Kind, hours: Iterable[datetime]) -> dict[str, LandingObject]:
    return {o.key: o for hour in hours for o in zone.list(hour_prefix(kind, hour))}


def sync_index(conn, schema, zone, kind: Kind, listed: dict[str, LandingObject],
               keep: dict | None = None) -> dict[str, ParsedFile]:
    """Index the listed files that are new or changed since indexed."""
    known = dict(conn.execute(f"SELECT key, etag FROM {schema}.landing_files WHERE kind = %s AND key = ANY(%s)",
                              (INDEX_KIND[kind], list(listed))).fetchall())
    stale = [o for key, o in sorted(listed.items()) if known.get(key) != o.etag]
    return index_objects(conn, schema, zone, kind, stale, keep)


def files_touching(conn: psycopg.Connection, schema: str, kind: Kind, start: datetime, end: datetime) -> list[str]:
    """Keys of indexed files holding records of [start, end) (through the index on `hours`)."""
    hours = hours_between(start, end)
    if len(hours) > 24 * 31:
        return landing_index.files_touching(conn, schema, INDEX_KIND[kind], start, end)
    rows = conn.execute(f"SELECT key FROM {schema}.landing_files WHERE kind = %s AND hours && %s::timestamptz[] "
                        "ORDER BY key", (INDEX_KIND[kind], hours)).fetchall()
    return [key for (key,) in rows]
