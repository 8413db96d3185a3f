"""Load ingestion-log records of a time window into `ingestion_runs` and `quarantine`, atomically.

Records are partitioned by their start hour, and one file may hold records of many hours. So:
1. `sync_index` lists the landing prefix and parses files the warehouse has not indexed (or whose
   content changed) to record which hours each holds (`landing_files.hours`);
2. `load_window` reads the files touching [start, end), keeps the records attributed to those
   hours (rejected records too, see `ParsedFile.hours`), and in one transaction: replaces the rows
   of those files in the window (upsert on the natural key, so the same run in two files is stored
   once), replaces the window's quarantine rows, and marks the files' hours processed.

Rows of files that are gone from the landing zone are kept: a re-run after landing retention must
not erase history. Re-processing a file never duplicates a run (natural-key upsert).

Every file is owned by at least one hour: an empty file, or one the zone refuses to read, belongs to
its arrival hour. So an empty file is marked processed by that hour's run, and landing retention
deletes it in time. A refused file (a name that is not UTF-8, over the size limit, unreadable) is
quarantined as one record (position -1) and counted, but never marked processed: its content was
never read, so retention must not delete it; someone renames or fixes it, or removes it by hand.

Records are judged against the file's arrival (its modification time), not the clock of the run, so
re-running an hour judges a file exactly as its first run did. A record may start up to a day after
that (a wrong clock, naive times in the wrong zone) and then belongs to an hour that has no
partition yet: the sensor (`plan_sensor_tick`) defers it and requests the hour once it exists.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections import Counter
from datetime import datetime, timezone

import psycopg

from metrics_pipeline.lib.ingestion_logs.parse import SOURCE, ParsedFile, ParseOptions, Rejected, parse_file
from metrics_pipeline.lib.kafka import files as kafka_files
from metrics_pipeline.lib.kafka import job_logs as kafka_job_logs
from metrics_pipeline.lib.landing import Cursor, LandingObject, LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.warehouse import landing_index, partitioning
from metrics_pipeline.lib.warehouse import quarantine as quarantine_table
from metrics_pipeline.lib.warehouse.db import Warehouse

PREFIX = "ingestion_logs/"
COLUMNS = (
    "sequence_no", "company", "zone", "source_system", "object_id", "object", "transformation", "status",
    "started_at", "ended_at", "duration_s", "description", "cpu_time_s", "memory_used_bytes",
    "source_file", "source_position",
)
NATURAL_KEY = ("company", "zone", "source_system", "object_id", "transformation", "sequence_no", "started_at")
_natural = operator.itemgetter(*NATURAL_KEY)
_columns = operator.itemgetter(*COLUMNS)


@dataclasses.dataclass
class IngestionLoadResult:
    files: int = 0
    read: int = 0  # records of the window's hours read from those files
    loaded: int = 0  # valid records (duplicates included)
    quarantined: int = 0
    duplicates: int = 0  # valid records that repeat a natural key already in the batch
    rows: int = 0  # distinct runs written
    failures: int = 0  # runs with status FAILED
    missing_files: int = 0  # indexed files no longer in the landing zone (their rows are kept)
    refused_files: int = 0  # files the zone would not read (each also one quarantined record)
    empty_files: int = 0  # files holding no record at all (marked processed with their arrival hour)
    redelivered: int = 0  # Kafka: records of a message already read from another landing file (one copy kept)
    reasons: Counter = dataclasses.field(default_factory=Counter)

    def as_metadata(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "reasons"}


def arrival(obj: LandingObject, options: ParseOptions) -> datetime:
    """When `obj` arrived: its modification time, unless that clock cannot be trusted (ahead of now,
    or before the first partition), then now. Records are judged against it, and a file without a
    usable record start belongs to its hour."""
    now = options.now or datetime.now(timezone.utc)
    mtime = datetime.fromtimestamp(obj.mtime, tz=timezone.utc)
    if mtime > now or (options.min_start and mtime < options.min_start):
        return now
    return mtime


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


@dataclasses.dataclass(frozen=True)
class IndexedFile:
    """One parsed landing file: its records and the hour each belongs to."""

    obj: LandingObject
    parsed: ParsedFile
    hours: dict[int, datetime]  # by record position
    file_hours: list[datetime]  # the hours it is indexed under (its arrival hour if it has no record)


def index_objects(
    conn: psycopg.Connection, schema: str, zone: LandingZone, objects: list[LandingObject], options: ParseOptions
) -> dict[str, IndexedFile]:
    """Parse `objects` and record their hours in `landing_files`. Returns what was parsed."""
    parsed = {}
    entries = []
    for obj, (_, data) in zip(objects, read_many(zone, objects)):
        arrived = arrival(obj, options)
        if isinstance(data, RefusedObject):  # quarantined as a whole file, with the reason
            result = ParsedFile(obj.key, rejected=[Rejected(-1, "", data.reason)], refused=True)
        elif kafka_files.is_kafka_key(obj.key):  # each message judged against its own timestamp
            result = kafka_job_logs.parse_file(data, obj.key, options)
        else:
            result = parse_file(data, obj.key, dataclasses.replace(options, now=arrived))
        hours = result.hours(arrived)
        file_hours = sorted(set(hours.values())) or [_hour(arrived)]
        parsed[obj.key] = IndexedFile(obj, result, hours, file_hours)
        entries.append((obj, file_hours, result.read))
    landing_index.index_files(conn, schema, SOURCE, entries)
    return parsed


def sync_index(conn, schema, zone, options) -> tuple[dict[str, LandingObject], dict[str, IndexedFile]]:
    """Index every new or changed file under the prefix. Returns (listed objects by key, parsed)."""
    listed = {o.key: o for o in zone.list(PREFIX)}
    known = landing_index.indexed(conn, schema, SOURCE)
    stale = [o for key, o in listed.items() if known.get(key) != o.etag]
    return listed, index_objects(conn, schema, zone, stale, options)


def load_window(
    warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime, options: ParseOptions
) -> IngestionLoadResult:
    """Make `ingestion_runs` and `quarantine` hold exactly what the landing files say for [start, end)."""
    schema = warehouse.schema
    result = IngestionLoadResult()
    with warehouse.connect() as conn:
        listed, parsed = sync_index(conn, schema, zone, options)
        keys = landing_index.files_touching(conn, schema, SOURCE, start, end)
        present = [k for k in keys if k in listed]
        result.missing_files = len(keys) - len(present)
        rows: dict[tuple, tuple] = {}
        quarantine = []
        touched = []
        seen: set[tuple[str, int]] = set()  # Kafka messages' records by (address, element): one copy each
        for key in present:
            if key not in parsed:
                parsed.update(index_objects(conn, schema, zone, [listed[key]], options))
            indexed = parsed[key]
            obj, parsed_file, hours = indexed.obj, indexed.parsed, indexed.hours
            result.files += 1
            if parsed_file.refused:
                result.refused_files += 1  # never marked processed: its content was never read
            else:
                touched.append((obj, indexed.file_hours))
                result.empty_files += int(parsed_file.read == 0)
            origins = parsed_file.origins
            for record in parsed_file.accepted:
                if not start <= hours[record["source_position"]] < end:
                    continue
                if origins is not None:
                    origin = origins[record["source_position"]]
                    if origin in seen:
                        result.redelivered += 1
                        continue
                    seen.add(origin)
                    record = {**record, "source_file": origin[0], "source_position": origin[1]}
                result.read += 1
                result.loaded += 1
                natural = _natural(record)
                if natural in rows:
                    result.duplicates += 1
                rows[natural] = _columns(record)
            for bad in parsed_file.rejected:
                hour = hours[bad.position]
                if not start <= hour < end:
                    continue
                file, position = key, bad.position
                if origins is not None and bad.position in origins:
                    file, position = origins[bad.position]
                    if (file, position) in seen:
                        result.redelivered += 1
                        continue
                    seen.add((file, position))
                result.read += 1
                result.quarantined += 1
                result.reasons[bad.reason.split(" (")[0].split(":")[0][:60]] += 1
                quarantine.append((SOURCE, file, position, bad.raw.replace("\x00", "\\u0000"), bad.reason, hour))
        result.rows = len(rows)
        result.failures = sum(1 for r in rows.values() if r[COLUMNS.index("status")] == "FAILED")
        partitioning.ensure_partitions(conn, schema, "ingestion_runs", start, end)
        with conn.transaction():
            for lock in partitioning.day_lock_keys(f"metrics_pipeline.ingestion:{schema}", start, end):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            # Rows and quarantine entries of every file still in the landing zone are recomputed
            # (a rewritten file may have left this window); those of vanished files are kept.
            # Rows of Kafka messages are named by their message, not a file: a message never changes, so
            # they are replaced by upsert (runs) or by their key (quarantine), never deleted.
            in_landing = list(listed)
            _replace_runs(conn, schema, start, end, in_landing, list(rows.values()))
            quarantine_table.replace_window(conn, schema, SOURCE, start, end, in_landing, quarantine)
            landing_index.mark_processed(conn, schema, SOURCE, touched, start, end)
    return result


def _replace_runs(conn, schema, start, end, files: list[str], rows: list[tuple]) -> None:
    window_has_rows = conn.execute(
        f"SELECT EXISTS (SELECT 1 FROM {schema}.ingestion_runs WHERE started_at >= %s AND started_at < %s)",
        (start, end),
    ).fetchone()[0]
    if not window_has_rows:
        # First load of the window (every backfill): rows are unique already, COPY them in place.
        _copy_runs(conn, f"{schema}.ingestion_runs", rows)
        return
    conn.execute(
        f"""CREATE TEMP TABLE _mp_runs (LIKE {schema}.ingestion_runs INCLUDING DEFAULTS) ON COMMIT DROP"""
    )
    _copy_runs(conn, "_mp_runs", rows)
    conn.execute(
        f"""DELETE FROM {schema}.ingestion_runs r
            WHERE r.started_at >= %s AND r.started_at < %s AND r.source_file = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM _mp_runs s WHERE {' AND '.join(f's.{c} = r.{c}' for c in NATURAL_KEY)})""",
        (start, end, files),
    )
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in NATURAL_KEY)
    conn.execute(
        f"""INSERT INTO {schema}.ingestion_runs ({', '.join(COLUMNS)})
            SELECT {', '.join(COLUMNS)} FROM _mp_runs
            ON CONFLICT ({', '.join(NATURAL_KEY)}) DO UPDATE SET {updates}, loaded_at = now()
            WHERE ({', '.join(f'ingestion_runs.{c}' for c in COLUMNS)}) IS DISTINCT FROM
                  ({', '.join(f'EXCLUDED.{c}' for c in COLUMNS)})"""
    )


def _copy_runs(conn: psycopg.Connection, table: str, rows: list[tuple]) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def plan_requests(
    conn: psycopg.Connection,
    schema: str,
    zone: LandingZone,
    cursor: Cursor,
    options: ParseOptions,
    *,
    max_files: int = 5000,
    budget_s: float = 40.0,
) -> tuple[list[datetime], Cursor, int]:
    """For the ingestion sensor: index files that arrived after `cursor` (oldest first, within a
    time budget so a tick stays inside Dagster's sensor limit) and return the hours they touch,
    the new cursor and the number of files indexed.

    Files behind the cursor that the index has not seen in their current version are new too: a
    file moved into the zone keeps its older mtime (`mv`, `rsync -a`; an S3 multipart upload is
    dated from its start), and a walk by mtime alone would skip it for ever."""
    import time

    deadline = time.monotonic() + budget_s
    known = landing_index.indexed(conn, schema, SOURCE)
    position = (cursor.mtime, cursor.key)
    new = sorted(o for o in zone.list(PREFIX) if (o.mtime, o.key) > position or known.get(o.key) != o.etag)[:max_files]
    done: list[LandingObject] = []
    hours: set[datetime] = set()
    batch: list[LandingObject] = []
    for obj in new:
        batch.append(obj)
        if len(batch) >= 200 or time.monotonic() > deadline:
            hours |= _index_batch(conn, schema, zone, batch, options)
            done += batch
            batch = []
            if time.monotonic() > deadline:
                break
    if batch:
        hours |= _index_batch(conn, schema, zone, batch, options)
        done += batch
    if done and (done[-1].mtime, done[-1].key) > position:  # never backwards
        cursor = Cursor(done[-1].mtime, done[-1].key)
    return sorted(hours), cursor, len(done)


@dataclasses.dataclass(frozen=True)
class SensorCursor:
    """The ingestion sensor's cursor: its walk over the landing zone, and the hour that was current
    at its last tick (hours after it had no partition then, so records stamped in them waited)."""

    walk: Cursor = dataclasses.field(default_factory=Cursor)
    through: datetime | None = None

    def encode(self) -> str:
        return json.dumps({"mtime": self.walk.mtime, "key": self.walk.key,
                           "through": self.through.isoformat() if self.through else None})

    @classmethod
    def decode(cls, text: str | None) -> SensorCursor:
        if not text:
            return cls()
        if not text.startswith("{"):  # the walk alone, as cursors were written before deferral
            return cls(Cursor.decode(text))
        raw = json.loads(text)
        through = datetime.fromisoformat(raw["through"]) if raw.get("through") else None
        return cls(Cursor(float(raw["mtime"]), str(raw["key"])), through)


@dataclasses.dataclass(frozen=True)
class SensorPlan:
    """One sensor tick: the hours to request now (each with a digest of the files feeding it), the
    hours new files touch that have no partition yet (deferred), and the next cursor."""

    hours: dict[datetime, str]
    cursor: SensorCursor
    files: int
    deferred: list[datetime] = dataclasses.field(default_factory=list)
    arrived: list[datetime] = dataclasses.field(default_factory=list)  # deferred hours now due


def plan_sensor_tick(warehouse: Warehouse, zone: LandingZone, cursor: SensorCursor, options: ParseOptions, *,
                     now: datetime | None = None, budget_s: float = 40.0) -> SensorPlan:
    """`plan_requests`, split into hours that exist (up to the current one: the hourly partitions
    include the hour in progress) and hours ahead of `now`, which are deferred (SPEC §12: items
    stamped ahead of now stay in the landing zone until their hour's partition exists).

    A deferred hour is not kept in the cursor: each tick asks the index which hours that were ahead
    at the previous tick (after `cursor.through`, up to the current hour) hold records not yet
    committed, and requests those. So a record stamped ahead is loaded when its hour begins, whoever
    indexed its file (this sensor or a run), and an hour that was loaded since is not requested
    again. Without a previous tick the last `options.max_future` is looked at: no record further
    ahead than that is accepted. Each hour comes with a digest of the files feeding it (the run
    key: a file arriving behind the cursor still makes a new run, and a retried tick makes none twice).
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    current = _hour(now)
    since = cursor.through if cursor.through is not None else current - options.max_future
    with warehouse.connect() as conn:
        hours, walk, files = plan_requests(conn, warehouse.schema, zone, cursor.walk, options, budget_s=budget_s)
        arrived = landing_index.uncommitted_hours(conn, warehouse.schema, SOURCE, since, current) if since < current else []
        due = sorted({h for h in hours if h <= current} | set(arrived))
        digests = landing_index.inputs_digest(conn, warehouse.schema, SOURCE, due)
    return SensorPlan(
        {h: digests.get(h, "none") for h in due},
        SensorCursor(walk, max(current, cursor.through or current)),
        files,
        deferred=sorted(h for h in hours if h > current),
        arrived=sorted(set(arrived) - set(hours)),
    )


def _index_batch(conn, schema, zone, objects, options) -> set[datetime]:
    """Hours the batch's files touch now, and the hours a rewritten file touched before: those
    windows must be recomputed too, or the file's old rows would stay there."""
    before = landing_index.hours_of(conn, schema, SOURCE, [o.key for o in objects])
    parsed = index_objects(conn, schema, zone, objects, options)
    now = {h for indexed in parsed.values() for h in indexed.file_hours}
    return now | {h for hours in before.values() for h in hours}
