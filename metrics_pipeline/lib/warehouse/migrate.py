"""Versioned schema migrations: numbered SQL files and a `schema_migrations` table.

Why not alembic: the warehouse is PostgreSQL-only and leans on what an ORM model does not describe
(declarative partitioning, generated columns, row-level security, roles, views). Alembic would add
a second configuration, an env.py and an autogenerate step that cannot see any of that, to run what
are plain SQL files anyway. So each migration is `NNNN_name.sql` next to this module, reviewed as
SQL, applied once, in order, in its own transaction, and recorded with a checksum:

* re-running `migrate` is a no-op; concurrent runs serialise on an advisory lock;
* a migration edited after it was applied is refused (checksum mismatch), since that would make a
  fresh database and an upgraded one differ;
* `{{schema}}` in a file is replaced by the validated schema name, so the warehouse can live in any
  schema (default `metrics`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from functools import cache
from pathlib import Path

import psycopg

from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse.db import Warehouse

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    @property
    def sql_template(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql_template.encode()).hexdigest()

    def sql(self, schema: str) -> str:
        return self.sql_template.replace("{{schema}}", schema)


@cache
def available(directory: Path = MIGRATIONS_DIR) -> tuple[Migration, ...]:
    """All migrations shipped with the package, in version order."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name} does not match NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), path))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration versions in {directory}: {versions}")
    return tuple(found)


def _lock_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(f"metrics_pipeline.migrate:{schema}".encode()).digest()[:8], "big", signed=True)


def applied_versions(conn: psycopg.Connection, schema: str) -> dict[int, str]:
    """Version -> checksum of what this database has applied ({} for a fresh database)."""
    exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",)).fetchone()[0]
    if exists is None:
        return {}
    rows = conn.execute(f"SELECT version, checksum FROM {schema}.schema_migrations").fetchall()
    return dict(rows)


def migrate(warehouse: Warehouse, *, target: int | None = None) -> list[int]:
    """Apply every pending migration up to `target` (default: all). Returns the versions applied.

    Args:
        warehouse: the warehouse to migrate.
        target: stop after this version (used by the upgrade test).
    """
    schema = warehouse.schema
    with warehouse.connect() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(schema),))
        try:
            return _migrate_locked(conn, schema, target)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_lock_key(schema),))


def _migrate_locked(conn: psycopg.Connection, schema: str, target: int | None) -> list[int]:
    with conn.transaction():
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
    done = applied_versions(conn, schema)
    shipped = {m.version: m for m in available()}
    for version, checksum in sorted(done.items()):
        if version not in shipped:
            raise RuntimeError(
                f"database schema {schema!r} has migration {version}, which this code does not ship: "
                "it was migrated by a newer version of metrics_pipeline"
            )
        if shipped[version].checksum != checksum:
            raise RuntimeError(
                f"migration {version}_{shipped[version].name}.sql was changed after it was applied to "
                f"schema {schema!r}; add a new migration instead of editing an applied one"
            )
    applied = []
    for migration in available():
        if migration.version in done or (target is not None and migration.version > target):
            continue
        with conn.transaction():
            conn.execute(migration.sql(schema))
            conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
        applied.append(migration.version)
    if applied:
        # Views may have been added or replaced: the BI reader group reads all of them.
        bi.grant_views(conn, schema)
    return applied
