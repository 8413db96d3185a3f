"""Retention: drop whole time partitions that are entirely past their tier's retention (SPEC §3).

Defaults: raw points 7 days, rollup_5m 90 days (anomaly scores with it), rollup_1h 2 years, rollup_1d 5 years,
ingestion_runs 1 year, pushed events 1 year, the anomaly detector's states 3 days, landing-zone files 14 days
(or `points` if longer); configurable in `config/retention.yaml`
(`METRICS_PIPELINE_RETENTION_CONFIG`). Every key, its default and the error a bad value gives:
`config/retention.example.yaml` and `docs/configuration.md`.

A partition is dropped only when its upper bound is at or before `now - retention`, so no row
inside the retention window is ever touched; expiry is `DROP TABLE` of a partition, not a DELETE.
Each drop is its own short transaction (DETACH is not needed: a dropped partition is gone at once).
A rollup tier's sketch table (`rollup_1h_sketch`, migration 0013) is partitioned like the tier and
follows its retention, so a tier's partition and its sketches expire together.
The nominal sampling intervals of series (`series_intervals`, one row per series and day) go
with the raw points they describe.

Landing files (`landing`) are deleted only once committed (`landing_files.processed_at`: every hour
of the file is in the warehouse) and when every hour they hold is older than the retention; files
never committed stay, whatever their age. `landing` may not be shorter than `points`: a host hour
re-run after its files were deleted would replace its points with nothing. Deleting ingestion logs
is safe at any age: a re-run only touches rows of files still in the zone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.landing import LandingError, RefusedObject
from metrics_pipeline.lib.warehouse import packed_view, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

CONFIG_ENV = "METRICS_PIPELINE_RETENTION_CONFIG"
_log = logging.getLogger(__name__)
_MAX_DELETE_FAILURES = 20
DEFAULT_LANDING = timedelta(days=14)
def parse_duration(text) -> timedelta:
    """Retention durations: `14d`, `48h`, or a bare number of days."""
    return yaml_config.parse_duration(text, bare_number_unit="d")


class RetentionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    points: timedelta = timedelta(days=7)
    rollup_5m: timedelta = timedelta(days=90)
    rollup_1h: timedelta = timedelta(days=730)
    rollup_1d: timedelta = timedelta(days=1825)
    ingestion_runs: timedelta = timedelta(days=365)
    series_health_hourly: timedelta = timedelta(days=730)
    #: pushed events (deploys, notes): few rows, read for a year of annotations
    events: timedelta = timedelta(days=365)
    #: the anomaly detector's state before each hour (~25 KB a series and hour): re-running an hour
    #: needs the state at its start; older hours keep their scores (which follow rollup_5m)
    anomaly_state: timedelta = timedelta(days=3)
    #: None: 14 days, or `points` if that is longer
    landing: timedelta | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _duration(cls, value):
        if value is None:
            return None
        duration = parse_duration(value) if not isinstance(value, timedelta) else value
        if duration < timedelta(hours=1):
            raise ValueError("retention must be at least 1h")
        return duration

    @model_validator(mode="after")
    def _landing_outlives_points(self) -> RetentionConfig:
        if self.landing is not None and self.landing < self.points:
            raise ValueError(f"landing ({self.landing}) must be at least points ({self.points}): a host hour re-run "
                             "after its files were deleted would replace its points with nothing")
        return self

    @property
    def landing_files(self) -> timedelta:
        """How long committed landing files are kept."""
        return self.landing if self.landing is not None else max(DEFAULT_LANDING, self.points)


def load_config(path: Path | str | None = None) -> RetentionConfig:
    path = Path(path or os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "retention.yaml")
    return yaml_config.load(RetentionConfig, path)


@dataclasses.dataclass(frozen=True)
class Dropped:
    table: str
    partition: str
    upper: datetime


_BOUNDS = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


def expired_partitions(conn: psycopg.Connection, schema: str, config: RetentionConfig, now: datetime) -> list[Dropped]:
    """Partitions whose every row is older than their table's retention."""
    found = []
    for table in partitioning.PARTITIONED_TABLES:
        cutoff = now - getattr(config, partitioning.RETENTION_OF.get(table, table))
        rows = conn.execute(
            """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
               JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
               JOIN pg_namespace n ON n.oid = p.relnamespace
               WHERE n.nspname = %s AND p.relname = %s""",
            (schema, table),
        ).fetchall()
        for name, bound in rows:
            match = _BOUNDS.search(bound or "")
            if not match:
                continue  # a DEFAULT partition or a foreign bound: never dropped automatically
            upper = datetime.fromisoformat(match.group(2))
            upper = upper if upper.tzinfo else upper.replace(tzinfo=timezone.utc)
            if upper <= cutoff:
                found.append(Dropped(table, name, upper))
    return sorted(found, key=lambda d: (d.table, d.upper))


def apply(warehouse: Warehouse, *, config: RetentionConfig | None = None,
          now: datetime | None = None, dry_run: bool = False) -> list[Dropped]:
    """Drop every expired partition (or only list them with `dry_run`). Returns what was (to be) dropped."""
    schema = warehouse.schema
    config = config or load_config()
    now = now or datetime.now(timezone.utc)
    with warehouse.connect() as conn:
        # Bounds are printed in the session time zone; read them in UTC.
        conn.execute("SET TIME ZONE 'UTC'")
        expired = expired_partitions(conn, schema, config, now)
        if not dry_run:
            for item in expired:
                with conn.transaction():
                    conn.execute(f'DROP TABLE IF EXISTS {schema}."{item.partition}"')
            if any(item.table == "points_packed" for item in expired):
                packed_view.rebuild(conn, schema)  # drop the arms of the days dropped
            # A series' sampling interval matters only while its raw points exist (alert gap tolerance);
            # a small table, one row per series and day: a DELETE, not a partition drop.
            conn.execute(f"DELETE FROM {schema}.series_intervals WHERE day < %s",
                         ((now - config.points).astimezone(timezone.utc).date(),))
    return expired


@dataclasses.dataclass(frozen=True)
class LandingFile:
    kind: str
    key: str
    size: int
    newest_hour: datetime


def expired_landing_files(conn: psycopg.Connection, schema: str, config: RetentionConfig, now: datetime,
                          limit: int = 100_000) -> list[LandingFile]:
    """Committed landing files whose every hour is older than the landing retention."""
    rows = conn.execute(
        f"""SELECT kind, key, size, (SELECT max(h) FROM unnest(hours) h) AS newest
            FROM {schema}.landing_files
            WHERE processed_at IS NOT NULL AND cardinality(hours) > 0
              AND (SELECT max(h) FROM unnest(hours) h) < %s
            ORDER BY 4, 1, 2 LIMIT %s""",
        (now - config.landing_files, limit),
    ).fetchall()
    return [LandingFile(kind, key, size, newest) for kind, key, size, newest in rows]


def apply_landing(warehouse: Warehouse, zone, *, config: RetentionConfig | None = None,
                  now: datetime | None = None, dry_run: bool = False) -> list[LandingFile]:
    """Delete expired committed files from the landing zone `zone`, then their index rows. Returns
    the files deleted (or, with `dry_run`, those that would be).

    A file goes first, its row second: a crash in between leaves a row whose file is gone, which
    the next run deletes again (deleting a missing file is not an error). One file never stops the
    others: a key the zone refuses to touch (a name it lists escaped, such as one that is not
    UTF-8) is left in place and its row dropped, so it is not retried every day (a warning names
    it; someone removes it by hand); any other failure is collected, the rest is deleted, and the
    run then fails naming the files it could not delete (it stops early once
    `_MAX_DELETE_FAILURES` deletes failed: then the zone itself is failing).
    """
    config = config or load_config()
    now = now or datetime.now(timezone.utc)
    schema = warehouse.schema
    deleted: list[LandingFile] = []
    failed: list[tuple[LandingFile, Exception]] = []
    with warehouse.connect() as conn:
        expired = expired_landing_files(conn, schema, config, now)
        if dry_run:
            return expired
        for lo in range(0, len(expired), 1000):
            if len(failed) >= _MAX_DELETE_FAILURES:
                break  # the zone itself is failing (S3 down, a read-only disk): stop, and say so
            batch = expired[lo:lo + 1000]
            gone = []
            for item in batch:
                if len(failed) >= _MAX_DELETE_FAILURES:
                    break
                try:
                    zone.delete(item.key)
                except RefusedObject as exc:
                    _log.warning("landing retention leaves %r in place: %s", item.key, exc)
                    gone.append(item)  # its row goes; the file is not ours to delete
                    continue
                except Exception as exc:  # noqa: BLE001 - reported below, after the other files
                    failed.append((item, exc))
                    continue
                gone.append(item)
                deleted.append(item)
            conn.execute(
                f"DELETE FROM {schema}.landing_files WHERE (kind, key) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
                ([i.kind for i in gone], [i.key for i in gone]),
            )
    if failed:
        names = ", ".join(f"{item.key!r} ({exc})" for item, exc in failed[:5])
        raise LandingError(f"landing retention could not delete {len(failed)} file(s) (deleted {len(deleted)}"
                           f" of {len(expired)} expired): {names}")
    return deleted
