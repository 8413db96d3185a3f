"""The live path's record of what it loaded from each host file (`live_offsets`, migrations 0011, 0023).

Shared by the live path (`lib/host/live.py`), which writes it, and the closed-hour run
(`lib/host/files.py`), which reads it to load only what the live path has not.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import NamedTuple

from metrics_pipeline.lib.host.batch import hour_of_key

KIND = "host"
#: Offsets are kept this long after their hour: the closed-hour run (and late-file re-runs) read
#: only what they did not cover (`files.load_window`).
KEEP_OFFSETS = timedelta(hours=24)


class Offset(NamedTuple):
    """A `live_offsets` row: bytes loaded, their CRC-32 (None: not trusted), and the tenant the host
    configuration gave the file's directory ('' none; None: not for a closed-hour run to trust)."""

    loaded_bytes: int
    prefix_crc: int | None
    config_tenant: str | None
    hour: datetime | None


def file_hour(key: str) -> tuple[int, int] | None:
    """[start, end) of the hour a host file belongs to, in epoch microseconds (None: a foreign key)."""
    hour = hour_of_key(key)
    return None if hour is None else (int(hour.timestamp()) * 1_000_000, (int(hour.timestamp()) + 3600) * 1_000_000)


def read_offsets(conn, schema: str, keys: list[str] | None = None, since: datetime | None = None) -> dict[str, Offset]:
    """The live path's record of each file (by key): what it loaded, and whether that can be trusted."""
    rows = conn.execute(
        f"""SELECT key, loaded_bytes, prefix_crc, config_tenant, hour FROM {schema}.live_offsets
            WHERE kind = %s AND (%s::text[] IS NULL OR key = ANY(%s::text[])) AND (%s::timestamptz IS NULL OR hour >= %s)""",
        (KIND, keys, keys, since, since),
    ).fetchall()
    return {key: Offset(*rest) for key, *rest in rows}


def record_offsets(conn, schema: str, advanced: list[tuple]) -> None:
    """Upsert (object, loaded bytes, prefix CRC or None, configured tenant) rows, in the caller's
    transaction (the one that commits the points read from those bytes)."""
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.live_offsets (kind, key, etag, loaded_bytes, hour, prefix_crc, config_tenant)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (kind, key) DO UPDATE SET etag = EXCLUDED.etag, loaded_bytes = EXCLUDED.loaded_bytes,
                    prefix_crc = EXCLUDED.prefix_crc, config_tenant = EXCLUDED.config_tenant, updated_at = now()""",
            [(KIND, obj.key, obj.etag, loaded, hour_of_key(obj.key), crc, tenant or "")
             for obj, loaded, crc, tenant in advanced],
        )


def prefix_unchanged(data: bytes, offset: Offset) -> bool:
    """Whether `data` still starts with exactly what the live path loaded from it."""
    return (offset.prefix_crc is not None and len(data) >= offset.loaded_bytes
            and zlib.crc32(memoryview(data)[:offset.loaded_bytes]) == offset.prefix_crc)


def used_by_closed_run(conn, schema: str, start: datetime, end: datetime) -> None:
    """Mark the window's offsets as used by a closed-hour run: a later run of the window replaces it
    (what the window holds may then have been changed by others than the live path)."""
    conn.execute(f"UPDATE {schema}.live_offsets SET config_tenant = NULL WHERE kind = %s AND hour >= %s AND hour < %s",
                 (KIND, start, end))
