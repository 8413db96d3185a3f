"""Retention: drop whole time partitions that are entirely past their tier's retention (SPEC §3).

Defaults: raw points 7 days, rollup_5m 90 days, rollup_1h 2 years, rollup_1d 5 years,
ingestion_runs 1 year; configurable in `config/retention.yaml` (`METRICS_PIPELINE_RETENTION_CONFIG`):

```yaml
points: 7d
rollup_5m: 90d
rollup_1h: 730d
rollup_1d: 1825d
ingestion_runs: 365d
series_health_hourly: 730d
```
A partition is dropped only when its upper bound is at or before `now - retention`, so no row
inside the retention window is ever touched; expiry is `DROP TABLE` of a partition, not a DELETE.
Each drop is its own short transaction (DETACH is not needed: a dropped partition is gone at once).
"""

from __future__ import annotations

import dataclasses
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from pydantic import BaseModel, ConfigDict, field_validator

from metrics_pipeline.lib import migrate, partitioning, settings, yaml_config

CONFIG_ENV = "METRICS_PIPELINE_RETENTION_CONFIG"
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

    @field_validator("*", mode="before")
    @classmethod
    def _duration(cls, value):
        duration = parse_duration(value) if not isinstance(value, timedelta) else value
        if duration < timedelta(hours=1):
            raise ValueError("retention must be at least 1h")
        return duration


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
        cutoff = now - getattr(config, table)
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


def apply(dsn: str, schema: str = "metrics", *, config: RetentionConfig | None = None,
          now: datetime | None = None, dry_run: bool = False) -> list[Dropped]:
    """Drop every expired partition (or only list them with `dry_run`). Returns what was (to be) dropped."""
    config = config or load_config()
    now = now or datetime.now(timezone.utc)
    migrate.ensure_migrated(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Bounds are printed in the session time zone; read them in UTC.
        conn.execute("SET TIME ZONE 'UTC'")
        expired = expired_partitions(conn, schema, config, now)
        if not dry_run:
            for item in expired:
                with conn.transaction():
                    conn.execute(f'DROP TABLE IF EXISTS {schema}."{item.partition}"')
    return expired
