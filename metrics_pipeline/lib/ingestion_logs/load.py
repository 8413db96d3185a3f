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
"""

from __future__ import annotations

import dataclasses
import operator
from collections import Counter
from datetime import datetime, timezone

import psycopg

from metrics_pipeline.lib.ingestion_logs.parse import SOURCE, ParsedFile, ParseOptions, Rejected, parse_file
from metrics_pipeline.lib.landing import Cursor, LandingObject, LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.warehouse import landing_index, partitioning
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
    reasons: Counter = dataclasses.field(default_factory=Counter)

    def as_metadata(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "reasons"}


def _fallback_hour(obj: LandingObject, options: ParseOptions) -> datetime:
    """Home hour of a file with no good record: its arrival hour, kept inside the partition range."""
    hour = datetime.fromtimestamp(obj.mtime, tz=timezone.utc)
    if options.min_start and hour < options.min_start:
        hour = options.min_start
    return min(hour, datetime.now(timezone.utc))


def index_objects(
    conn: psycopg.Connection, schema: str, zone: LandingZone, objects: list[LandingObject], options: ParseOptions
) -> dict[str, tuple[LandingObject, ParsedFile, dict[int, datetime]]]:
    """Parse `objects` and record their hours in `landing_files`. Returns what was parsed."""
    parsed = {}
    entries = []
    for obj, (_, data) in zip(objects, read_many(zone, [o.key for o in objects])):
        if isinstance(data, RefusedObject):  # quarantined as a whole file, with the reason
            result = ParsedFile(obj.key, rejected=[Rejected(-1, "", str(data))])
        else:
            result = parse_file(data, obj.key, options)
        hours = result.hours(_fallback_hour(obj, options))
        parsed[obj.key] = (obj, result, hours)
        entries.append((obj, sorted(set(hours.values())), result.read))
    landing_index.index_files(conn, schema, SOURCE, entries)
    return parsed


def sync_index(conn, schema, zone, options) -> tuple[dict[str, LandingObject], dict]:
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
        for key in present:
            if key not in parsed:
                parsed.update(index_objects(conn, schema, zone, [listed[key]], options))
            obj, parsed_file, hours = parsed[key]
            touched.append((obj, sorted(set(hours.values()))))
            result.files += 1
            for record in parsed_file.accepted:
                if not start <= hours[record["source_position"]] < end:
                    continue
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
                result.read += 1
                result.quarantined += 1
                result.reasons[bad.reason.split(" (")[0].split(":")[0][:60]] += 1
                quarantine.append((SOURCE, key, bad.position, bad.raw.replace("\x00", "\\u0000"), bad.reason, hour))
        result.rows = len(rows)
        result.failures = sum(1 for r in rows.values() if r[COLUMNS.index("status")] == "FAILED")
        partitioning.ensure_partitions(conn, schema, "ingestion_runs", start, end)
        with conn.transaction():
            for lock in partitioning.day_lock_keys(f"metrics_pipeline.ingestion:{schema}", start, end):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            # Rows and quarantine entries of every file still in the landing zone are recomputed
            # (a rewritten file may have left this window); those of vanished files are kept.
            in_landing = list(listed)
            _replace_runs(conn, schema, start, end, in_landing, list(rows.values()))
            conn.execute(
                f"""DELETE FROM {schema}.quarantine WHERE source = %s AND record_hour >= %s AND record_hour < %s
                    AND source_file = ANY(%s)""",
                (SOURCE, start, end, in_landing),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    f"""INSERT INTO {schema}.quarantine (source, source_file, position, raw, reason, record_hour)
                        VALUES (%s, %s, %s, %s, %s, %s)
                        ON CONFLICT (source, source_file, position) DO UPDATE
                        SET raw = EXCLUDED.raw, reason = EXCLUDED.reason, record_hour = EXCLUDED.record_hour,
                            quarantined_at = now()""",
                    quarantine,
                )
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
class SensorPlan:
    """One sensor tick: the hours new files touch (each with a digest of the files feeding it)."""

    hours: dict[datetime, str]
    cursor: Cursor
    files: int


def plan_sensor_tick(warehouse: Warehouse, zone: LandingZone, cursor: Cursor, options: ParseOptions, *,
                     budget_s: float = 40.0) -> SensorPlan:
    """`plan_requests`, plus a digest per touched hour of the files feeding it (the run key: a file
    arriving behind the cursor still makes a new run, and a retried tick makes none twice)."""
    with warehouse.connect() as conn:
        hours, cursor, files = plan_requests(conn, warehouse.schema, zone, cursor, options, budget_s=budget_s)
        digests = landing_index.inputs_digest(conn, warehouse.schema, SOURCE, hours)
    return SensorPlan({h: digests.get(h, "none") for h in hours}, cursor, files)


def _index_batch(conn, schema, zone, objects, options) -> set[datetime]:
    """Hours the batch's files touch now, and the hours a rewritten file touched before: those
    windows must be recomputed too, or the file's old rows would stay there."""
    before = landing_index.hours_of(conn, schema, SOURCE, [o.key for o in objects])
    parsed = index_objects(conn, schema, zone, objects, options)
    now = {h for _, _, hours in parsed.values() for h in hours.values()}
    return now | {h for hours in before.values() for h in hours}

