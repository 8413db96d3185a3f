"""What each hour of pushed items holds in the warehouse: the record incremental loads build on.

Tables `custom_load_hours` and `custom_load_files` (migration 0018), written by `lib/custom/load.py`
in the same transaction as the rows they describe, so they never disagree with `points`, `events`
and `quarantine`. Per (kind, hour): the totals a full reload would report (read = loaded +
quarantined), the order of the latest write loaded (`last`), and per file of the hour the committed
prefix read (bytes, digest, items and corrupt lines in it, version when read). A run that finds this
record reads only what lies past each file's prefix; anything it cannot reconcile with the record
makes it reload the hour whole (see `load.py`).

Runs of one (kind, hour) are serialised by a session advisory lock held from before the record is
read until after the commit: two runs of the hour never build on the same record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.warehouse.load import LoadResult

#: Version of the loader's rules (identity, last write wins, positions, accounting) a record was
#: written under. Change it with the rules: records of another version make the next run reload.
RULE = 1
#: Windows longer than this lock the kind as a whole instead of hour by hour (lock table size).
_MAX_HOUR_LOCKS = 168


@dataclasses.dataclass(frozen=True)
class FileState:
    """The part of one landing file an hour was loaded from."""

    etag: str  # the version listed when it was read
    loaded_bytes: int  # the committed prefix read; -1: the zone refused the file
    digest: str  # of that prefix (`prefix_digest`)
    items: int  # committed items in the prefix, of every hour: the next item's position - 1
    corrupt_lines: int  # corrupt lines in the prefix
    torn: bool  # bytes were left after the prefix (a batch being written, or a writer that died)

    @property
    def refused(self) -> bool:
        return self.loaded_bytes < 0


Order = tuple[datetime, str, int]  # (received_at, file key, position): later wins


@dataclasses.dataclass
class HourState:
    """What one hour of one kind holds: the totals a full reload of its files reports, and its files."""

    hour: datetime
    last: Order | None = None  # the latest write loaded (None: nothing storable yet)
    read: int = 0
    loaded: int = 0
    duplicates: int = 0
    quarantined: int = 0
    corrupt_lines: int = 0
    refused_files: int = 0
    rows: int = 0
    empty_batches: int = 0  # Kafka messages holding an empty JSON array: counted, nothing to load
    redelivered: int = 0  # Kafka items read again from a second file (a consumer restarted): counted once
    tenants: set[str] = dataclasses.field(default_factory=set)
    reasons: Counter = dataclasses.field(default_factory=Counter)
    files: dict[str, FileState] = dataclasses.field(default_factory=dict)
    full_at: datetime | None = None
    loaded_at: datetime | None = None
    incremental_loads: int = 0
    rule: int = RULE

    @property
    def torn_files(self) -> int:
        return sum(1 for f in self.files.values() if f.torn)

    def see(self, order: Order) -> None:
        if self.last is None or order > self.last:
            self.last = order


def prefix_digest(data: bytes, end: int) -> str:
    """The digest of `data[:end]`: equal exactly when a file still begins with what was loaded."""
    return hashlib.sha1(memoryview(data)[:end], usedforsecurity=False).hexdigest()


def _lock_key(schema: str, kind: str, hour: datetime | None) -> int:
    name = f"metrics_pipeline.custom_load:{schema}:{kind}:{hour.isoformat() if hour else '*'}"
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def locked(conn: psycopg.Connection, schema: str, kind: str, hours: list[datetime]) -> Iterator[None]:
    """Hold the hours of `kind` for the block (session advisory locks on `conn`, autocommit).

    Each run holds its hours exclusively, in sorted order (no deadlock), and the kind's lock
    shared; a window of more than a week takes the kind's lock exclusively instead."""
    whole = len(hours) > _MAX_HOUR_LOCKS
    kind_key = _lock_key(schema, kind, None)
    keys = [] if whole else sorted(_lock_key(schema, kind, h) for h in hours)
    conn.execute("SELECT pg_advisory_lock(%s)" if whole else "SELECT pg_advisory_lock_shared(%s)", (kind_key,))
    try:
        for key in keys:
            conn.execute("SELECT pg_advisory_lock(%s)", (key,))
        yield
    finally:
        if not conn.closed and not conn.broken:
            conn.execute("SELECT pg_advisory_unlock_all()")


# -- what a load did, and the record's lifetime ----------------------------------------------------

#: records of hours this far beyond the API's back window are forgotten (no item can reach them)
KEEP_BEYOND_BACK = timedelta(days=1)


def horizon(now: datetime, back: timedelta) -> datetime:
    """Hours before this can receive no item any more: their records are not kept."""
    return (now - back - KEEP_BEYOND_BACK).astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


@dataclasses.dataclass
class CustomLoad:
    """What loading a window of pushed items did; the counts are the window's (whole hours), also
    after an incremental load."""

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
    empty_batches: int = 0  # Kafka messages holding an empty array (not items: not in `read`)
    redelivered: int = 0  # Kafka items seen again in a second file, not counted again in `read`
    tenants: int = 0
    mode: str = "full"  # "full": the window replaced; "incremental": only what is new read and added
    full_because: str = ""  # why a full replace (empty for an incremental load)
    new_items: int = 0  # items (and corrupt lines, refused files) this run read for the window
    new_files: int = 0  # files this run read (new, grown, or all of the window's for a full replace)
    reasons: Counter = dataclasses.field(default_factory=Counter)
    points: LoadResult | None = None

    def as_metadata(self) -> dict:
        meta = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("reasons", "points", "kind")}
        meta = {("items_read" if k == "read" else k): v for k, v in meta.items()}
        if self.points is not None:
            meta = {**self.points.as_metadata(), **meta}
            meta["points"] = self.rows  # the window's, also when this run added only what is new
        meta["dagster/row_count"] = self.rows
        return meta

    @classmethod
    def of_hours(cls, kind: str, states: list[HourState], **extra) -> CustomLoad:
        result = cls(kind, **extra)
        tenants: set[str] = set()
        for s in states:
            result.read += s.read
            result.loaded += s.loaded
            result.duplicates += s.duplicates
            result.quarantined += s.quarantined
            result.corrupt_lines += s.corrupt_lines
            result.rows += s.rows
            result.empty_batches += s.empty_batches
            result.redelivered += s.redelivered
            result.reasons.update(s.reasons)
            tenants |= s.tenants
        result.tenants = len(tenants)
        return result


# -- reading ---------------------------------------------------------------------------------------

_HOUR_COLUMNS = ("rule", "last_received_at", "last_key", "last_position", "items_read", "loaded", "duplicates",
                 "quarantined", "corrupt_lines", "refused_files", "rows", "tenants", "reasons", "full_at",
                 "loaded_at", "incremental_loads", "empty_batches", "redelivered")


def read_state(conn: psycopg.Connection, schema: str, kind: str, hour: datetime) -> HourState | None:
    """The record of `hour`, or None when it was never loaded (or its record expired)."""
    row = conn.execute(f"SELECT {', '.join(_HOUR_COLUMNS)} FROM {schema}.custom_load_hours WHERE kind = %s AND hour = %s",
                       (kind, hour)).fetchone()
    if row is None:
        return None
    v = dict(zip(_HOUR_COLUMNS, row))
    state = HourState(
        hour, last=(v["last_received_at"], v["last_key"], v["last_position"]) if v["last_key"] is not None else None,
        read=v["items_read"], loaded=v["loaded"], duplicates=v["duplicates"], quarantined=v["quarantined"],
        corrupt_lines=v["corrupt_lines"], refused_files=v["refused_files"], rows=v["rows"], tenants=set(v["tenants"]),
        reasons=Counter(v["reasons"]), full_at=v["full_at"], loaded_at=v["loaded_at"],
        incremental_loads=v["incremental_loads"], rule=v["rule"], empty_batches=v["empty_batches"],
        redelivered=v["redelivered"])
    files = conn.execute(
        f"""SELECT key, etag, loaded_bytes, digest, items, corrupt_lines, torn FROM {schema}.custom_load_files
            WHERE kind = %s AND hour = %s""", (kind, hour)).fetchall()
    state.files = {key: FileState(*rest) for key, *rest in files}
    return state


def hours_to_close(conn: psycopg.Connection, schema: str, kind: str, now: datetime,
                   quiet: timedelta) -> dict[datetime, str]:
    """Closed hours loaded incrementally since their last full replace and quiet for `quiet`: the
    hour -> a token naming that state (the sensor's run key), for the closing full reload."""
    rows = conn.execute(
        f"""SELECT hour, loaded_at FROM {schema}.custom_load_hours
            WHERE kind = %s AND incremental_loads > 0 AND hour <= %s AND loaded_at <= %s ORDER BY hour""",
        (kind, now - quiet - timedelta(hours=1), now - quiet),
    ).fetchall()
    return {hour: f"{loaded_at.timestamp():.6f}" for hour, loaded_at in rows}


# -- writing (inside the load's transaction) -------------------------------------------------------

def _hour_row(kind: str, s: HourState) -> tuple:
    last = s.last or (None, None, None)
    return (kind, s.hour, s.rule, *last, s.read, s.loaded, s.duplicates, s.quarantined, s.corrupt_lines,
            s.refused_files, s.rows, sorted(s.tenants), json.dumps(dict(sorted(s.reasons.items()))), s.full_at,
            s.loaded_at, s.incremental_loads, s.empty_batches, s.redelivered)


def _upsert_hours(conn: psycopg.Connection, schema: str, kind: str, states: Iterable[HourState]) -> None:
    columns = ("kind", "hour", *_HOUR_COLUMNS)
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.custom_load_hours ({', '.join(columns)})
                VALUES ({', '.join(['%s'] * len(columns))})
                ON CONFLICT (kind, hour) DO UPDATE SET
                {', '.join(f'{c} = EXCLUDED.{c}' for c in _HOUR_COLUMNS)}""",
            [_hour_row(kind, s) for s in states],
        )


def _copy_files(conn: psycopg.Connection, schema: str, kind: str, rows: list[tuple]) -> None:
    with conn.cursor() as cur, cur.copy(
            f"""COPY {schema}.custom_load_files (kind, hour, key, etag, loaded_bytes, digest, items, corrupt_lines, torn)
                FROM STDIN""") as copy:
        for row in rows:
            copy.write_row((kind, *row))


def save_full(conn: psycopg.Connection, schema: str, kind: str, start: datetime, end: datetime,
              states: list[HourState]) -> None:
    """Replace the records of [start, end) with `states` (a full reload of those hours)."""
    conn.execute(f"DELETE FROM {schema}.custom_load_files WHERE kind = %s AND hour >= %s AND hour < %s",
                 (kind, start, end))
    conn.execute(f"DELETE FROM {schema}.custom_load_hours WHERE kind = %s AND hour >= %s AND hour < %s",
                 (kind, start, end))
    _upsert_hours(conn, schema, kind, states)
    _copy_files(conn, schema, kind, [(s.hour, key, *dataclasses.astuple(f)) for s in states
                                     for key, f in sorted(s.files.items())])


def save_incremental(conn: psycopg.Connection, schema: str, kind: str, state: HourState,
                     files: dict[str, FileState]) -> None:
    """Record an incremental load of `state.hour`: its new totals, and the files read (`files`)."""
    _upsert_hours(conn, schema, kind, [state])
    if not files:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.custom_load_files
                    (kind, hour, key, etag, loaded_bytes, digest, items, corrupt_lines, torn)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (kind, hour, key) DO UPDATE SET etag = EXCLUDED.etag,
                    loaded_bytes = EXCLUDED.loaded_bytes, digest = EXCLUDED.digest, items = EXCLUDED.items,
                    corrupt_lines = EXCLUDED.corrupt_lines, torn = EXCLUDED.torn""",
            [(kind, state.hour, key, *dataclasses.astuple(f)) for key, f in sorted(files.items())],
        )


def prune(conn: psycopg.Connection, schema: str, kind: str, before: datetime) -> None:
    """Forget the records of hours before `before` (no item can reach them any more)."""
    conn.execute(f"DELETE FROM {schema}.custom_load_files WHERE kind = %s AND hour < %s", (kind, before))
    conn.execute(f"DELETE FROM {schema}.custom_load_hours WHERE kind = %s AND hour < %s", (kind, before))
