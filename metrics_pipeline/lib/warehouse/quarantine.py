"""The `quarantine` table's side of a window replace, shared by the file loaders.

A loader that re-reads a window replaces the quarantine rows of the files it read (a rewritten
file may no longer hold a bad record, or hold it at another position); rows of files no longer in
the landing zone are kept, like their data. Runs inside the loader's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import psycopg


def replace_window(conn: psycopg.Connection, schema: str, source: str, start: datetime, end: datetime,
                   files: Sequence[str], rows: Sequence[tuple]) -> None:
    """Make `source`'s quarantine rows of `files` in [start, end) exactly `rows`.

    Args:
        rows: (source, source_file, position, raw, reason, record_hour) tuples.
    """
    conn.execute(
        f"""DELETE FROM {schema}.quarantine WHERE source = %s AND record_hour >= %s AND record_hour < %s
            AND source_file = ANY(%s)""",
        (source, start, end, list(files)),
    )
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {schema}.quarantine (source, source_file, position, raw, reason, record_hour)
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT (source, source_file, position) DO UPDATE
                SET raw = EXCLUDED.raw, reason = EXCLUDED.reason, record_hour = EXCLUDED.record_hour,
                    quarantined_at = now()""",
            rows,
        )
