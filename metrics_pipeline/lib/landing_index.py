"""The warehouse's record of landing files (table `landing_files`, migration 0004).

`index_files` stores which hours a file holds records for, so a partition run finds its files with
one indexed query; `mark_processed` runs inside the load's transaction, so a file counts as
processed exactly when its data is committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

import psycopg

from metrics_pipeline.lib.landing import LandingObject


def index_files(
    conn: psycopg.Connection,
    schema: str,
    kind: str,
    entries: Iterable[tuple[LandingObject, list[datetime], int]],
) -> None:
    """Upsert (object, hours it covers, records read) rows; a changed etag clears `processed_at`."""
    rows = [(kind, o.key, o.etag, o.size, sorted(set(hours)), records) for o, hours, records in entries]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.landing_files AS f (kind, key, etag, size, hours, records)
                VALUES (%s, %s, %s, %s, %s::timestamptz[], %s)
                ON CONFLICT (kind, key) DO UPDATE
                SET etag = EXCLUDED.etag, size = EXCLUDED.size, hours = EXCLUDED.hours,
                    records = EXCLUDED.records, indexed_at = now()
                WHERE f.etag IS DISTINCT FROM EXCLUDED.etag OR f.hours IS DISTINCT FROM EXCLUDED.hours""",
            rows,
        )


def indexed(conn: psycopg.Connection, schema: str, kind: str) -> dict[str, str]:
    """key -> etag of every indexed file of `kind`."""
    return dict(conn.execute(f"SELECT key, etag FROM {schema}.landing_files WHERE kind = %s", (kind,)).fetchall())


def files_touching(conn: psycopg.Connection, schema: str, kind: str, start: datetime, end: datetime) -> list[str]:
    """Keys of indexed files holding at least one record whose hour is in [start, end)."""
    rows = conn.execute(
        f"""SELECT key FROM {schema}.landing_files
            WHERE kind = %s AND EXISTS (SELECT 1 FROM unnest(hours) h WHERE h >= %s AND h < %s)
            ORDER BY key""",
        (kind, start, end),
    ).fetchall()
    return [key for (key,) in rows]


def mark_processed(
    conn: psycopg.Connection,
    schema: str,
    kind: str,
    objects: Iterable[LandingObject],
    hours: Mapping[str, list[datetime]] | None = None,
) -> None:
    """Record that `objects` (as listed, with their etags) are committed. Call inside the load's transaction."""
    rows = [(kind, o.key, o.etag, o.size, sorted(set((hours or {}).get(o.key, [])))) for o in objects]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.landing_files AS f (kind, key, etag, size, hours, processed_at, processed_etag)
                VALUES (%s, %s, %s, %s, %s::timestamptz[], now(), %s)
                ON CONFLICT (kind, key) DO UPDATE
                SET processed_at = now(), processed_etag = EXCLUDED.processed_etag,
                    etag = EXCLUDED.etag, size = EXCLUDED.size,
                    hours = CASE WHEN cardinality(EXCLUDED.hours) > 0 THEN EXCLUDED.hours ELSE f.hours END""",
            [(*row, row[2]) for row in rows],
        )
