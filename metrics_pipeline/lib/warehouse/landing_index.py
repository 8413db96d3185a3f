"""The warehouse's record of landing files (table `landing_files`, migration 0004).

`index_files` stores which hours a file holds records for, so a partition run finds its files with
one indexed query; `mark_processed` runs inside the load's transaction and adds the hours just
committed, so a file counts as processed exactly when the data of all its hours is committed.
A file whose content changed (new etag) starts over. `uncommitted_hours` finds hours that hold
records not committed yet, for a sensor coming back to hours that had no partition when their
files arrived (records stamped ahead of now).

Keys are stored as the landing zone lists them: always valid UTF-8 without NUL and at most
`landing.MAX_KEY_BYTES` long (odd names are listed under an escaped stand-in), so one producer's
file name can never make an insert here fail for every file of a batch.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.landing import LandingObject


def index_files(
    conn: psycopg.Connection,
    schema: str,
    kind: str,
    entries: Iterable[tuple[LandingObject, list[datetime], int]],
) -> None:
    """Upsert (object, hours it covers, records read) rows; a changed etag resets processing."""
    rows = [(kind, o.key, o.etag, o.size, sorted(set(hours)), records) for o, hours, records in entries]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.landing_files AS f (kind, key, etag, size, hours, records)
                VALUES (%s, %s, %s, %s, %s::timestamptz[], %s)
                ON CONFLICT (kind, key) DO UPDATE
                SET etag = EXCLUDED.etag, size = EXCLUDED.size, hours = EXCLUDED.hours,
                    records = EXCLUDED.records, indexed_at = now(),
                    processed_hours = CASE WHEN f.etag = EXCLUDED.etag THEN f.processed_hours ELSE '{{}}' END,
                    processed_at = CASE WHEN f.etag = EXCLUDED.etag THEN f.processed_at END
                WHERE f.etag IS DISTINCT FROM EXCLUDED.etag OR f.hours IS DISTINCT FROM EXCLUDED.hours""",
            rows,
        )


def indexed(conn: psycopg.Connection, schema: str, kind: str) -> dict[str, str]:
    """key -> etag of every indexed file of `kind`."""
    return dict(conn.execute(f"SELECT key, etag FROM {schema}.landing_files WHERE kind = %s", (kind,)).fetchall())


def hours_of(conn: psycopg.Connection, schema: str, kind: str, keys: list[str]) -> dict[str, list[datetime]]:
    """The hours currently indexed for `keys` (files not indexed yet are absent)."""
    rows = conn.execute(
        f"SELECT key, hours FROM {schema}.landing_files WHERE kind = %s AND key = ANY(%s)", (kind, keys)
    ).fetchall()
    return dict(rows)


def inputs_digest(conn: psycopg.Connection, schema: str, kind: str, hours: list[datetime]) -> dict[datetime, str]:
    """Per hour, a digest of the (key, etag) of every indexed file holding records of it: it changes
    exactly when a file feeding the hour appears, disappears from it or changes. Hours no indexed
    file touches are absent."""
    rows = conn.execute(
        f"""SELECT h, md5(string_agg(f.key || chr(31) || f.etag, chr(30) ORDER BY f.key))
            FROM {schema}.landing_files f CROSS JOIN LATERAL unnest(f.hours) h
            WHERE f.kind = %s AND f.hours && %s::timestamptz[] AND h = ANY(%s::timestamptz[])
            GROUP BY h""",
        (kind, hours, hours),
    ).fetchall()
    return dict(rows)


def uncommitted_hours(conn: psycopg.Connection, schema: str, kind: str, after: datetime, through: datetime) -> list[datetime]:
    """Hours in (after, through] that some indexed file holds records of which are not committed
    yet (the hour is not among the file's `processed_hours`)."""
    hours = []
    hour = after.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    while hour <= through:
        hours.append(hour)
        hour += timedelta(hours=1)
    if not hours:
        return []
    rows = conn.execute(
        f"""SELECT DISTINCT h FROM {schema}.landing_files f CROSS JOIN LATERAL unnest(f.hours) h
            WHERE f.kind = %s AND f.hours && %s::timestamptz[] AND h = ANY(%s::timestamptz[])
              AND NOT h = ANY(f.processed_hours)
            ORDER BY h""",
        (kind, hours, hours),
    ).fetchall()
    return [h for (h,) in rows]


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
    objects: Iterable[tuple[LandingObject, list[datetime]]],
    start: datetime,
    end: datetime,
) -> None:
    """Record that the hours in [start, end) of each (object, its hours) are committed.

    Call inside the load's transaction. `processed_at` is set once every hour of the file is done.
    """
    rows = [(kind, o.key, o.etag, o.size, sorted(set(hours))) for o, hours in objects]
    if not rows:
        return
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.landing_files AS f (kind, key, etag, size, hours)
                VALUES (%s, %s, %s, %s, %s::timestamptz[])
                ON CONFLICT (kind, key) DO UPDATE
                SET etag = EXCLUDED.etag, size = EXCLUDED.size, hours = EXCLUDED.hours,
                    processed_hours = CASE WHEN f.etag = EXCLUDED.etag THEN f.processed_hours ELSE '{{}}' END""",
            rows,
        )
        cur.execute(
            f"""UPDATE {schema}.landing_files f
                SET processed_hours = ARRAY(
                        SELECT DISTINCT h FROM unnest(f.processed_hours || ARRAY(
                            SELECT x FROM unnest(f.hours) x WHERE x >= %(start)s AND x < %(end)s)) h ORDER BY h),
                    processed_etag = f.etag
                WHERE f.kind = %(kind)s AND f.key = ANY(%(keys)s)""",
            {"kind": kind, "keys": [r[1] for r in rows], "start": start, "end": end},
        )
        cur.execute(
            f"""UPDATE {schema}.landing_files SET processed_at = now()
                WHERE kind = %(kind)s AND key = ANY(%(keys)s) AND hours <@ processed_hours""",
            {"kind": kind, "keys": [r[1] for r in rows]},
        )
