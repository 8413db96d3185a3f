"""A canonical, byte-comparable dump of one time window of a warehouse table.

`dump_window(conn, "rollup_5m", start, end)` is `COPY (SELECT <columns> FROM metrics.rollup_5m
WHERE bucket >= start AND bucket < end ORDER BY <every column>) TO STDOUT`: the same rows give the
same bytes whatever their physical order, so "re-running changed nothing" and "a killed run left
the previous state" are one `==` on bytes.

Columns left out, and why each one legitimately differs between two runs that wrote the same data
(everything else, including ids and `series.first_seen`, must be identical):

| table | column | why it may change |
|---|---|---|
| ingestion_runs | loaded_at | wall-clock time a row was (re)written by the upsert |
| quarantine | quarantine_id | identity: a re-run deletes the window's quarantine rows and inserts them again |
| quarantine | quarantined_at | wall-clock time of that re-insert |
| sla_hourly, sla_daily | computed_at | wall-clock time of the recomputation (the window is deleted and re-inserted) |
| series_health_hourly | computed_at | same |
| landing_files | indexed_at, processed_at | wall-clock bookkeeping: when a file was indexed and last committed |
| series | first_seen | wall-clock time of registration (a re-run registers nothing, two warehouses differ) |
| series | series_id | a surrogate from an identity sequence: a rolled-back load burns ids (not transactional) |
| anomaly_state | written_at | wall-clock time the state was (re)written |
| anomaly_hours | scored_at | wall-clock time the hour was (re)scored |

`series_id` is replaced by `series_key` (the md5 of source, metric, resource and labels) wherever it
appears, so "the same warehouse" means the same series, whatever ids a killed load burnt. Every other
column is kept; points and rollup_5m/1h/1d hold no clock column at all.
"""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

#: table -> columns that hold the wall-clock time or an identity of a (re)write; see the module docstring.
VOLATILE: dict[str, frozenset[str]] = {
    "ingestion_runs": frozenset({"loaded_at"}),
    "quarantine": frozenset({"quarantine_id", "quarantined_at"}),
    "sla_hourly": frozenset({"computed_at"}),
    "sla_daily": frozenset({"computed_at"}),
    "series_health_hourly": frozenset({"computed_at"}),
    "landing_files": frozenset({"indexed_at", "processed_at"}),
    "series": frozenset({"first_seen", "series_id"}),
    "anomaly_state": frozenset({"written_at"}),
    "anomaly_hours": frozenset({"scored_at"}),
}

#: table -> the column its window is cut on (None: the whole table is the "window").
TIME_COLUMN: dict[str, str | None] = {
    "points": "ts",
    "rollup_5m": "bucket",
    "rollup_1h": "bucket",
    "rollup_1d": "bucket",
    "rollup_5m_sketch": "bucket",
    "rollup_1h_sketch": "bucket",
    "rollup_1d_sketch": "bucket",
    "series_health_hourly": "bucket",
    "sla_hourly": "bucket",
    "sla_daily": "bucket",
    "ingestion_runs": "started_at",
    "quarantine": "record_hour",
    "events": "ts",
    "series": None,
    "landing_files": None,
    "anomaly_scores": "bucket",
    "anomaly_state": "hour",
    "anomaly_hours": "hour",
}


def columns(conn: psycopg.Connection, table: str, schema: str = "metrics") -> list[str]:
    """The table's columns in definition order, minus the volatile ones."""
    rows = conn.execute(
        """SELECT column_name FROM information_schema.columns
           WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position""",
        (schema, table),
    ).fetchall()
    if not rows:
        raise ValueError(f"no table {schema}.{table}")
    skip = VOLATILE.get(table, frozenset())
    return [name for (name,) in rows if name not in skip]


def dump_window(conn: psycopg.Connection, table: str, start: datetime | None = None,
                end: datetime | None = None, schema: str = "metrics") -> bytes:
    """Rows of `schema.table` in [start, end) as canonical COPY text (sorted by every column).

    Args:
        conn: an open connection to the warehouse.
        table: a key of TIME_COLUMN.
        start, end: the window on the table's time column; ignored for tables without one.
        schema: the warehouse schema.

    Returns:
        The bytes `COPY ... TO STDOUT` produced (text format, UTC timestamps).
    """
    cols = columns(conn, table, schema)
    # Surrogate series ids become the series' natural key (see the module docstring).
    selected = [sql.SQL("s.series_key") if c == "series_id" else sql.SQL("t.{}").format(sql.Identifier(c)) for c in cols]
    join = sql.SQL("")
    if "series_id" in cols:
        join = sql.SQL(" LEFT JOIN {} s ON s.series_id = t.series_id").format(sql.Identifier(schema, "series"))
    where = sql.SQL("")
    time_column = TIME_COLUMN[table]
    if time_column is not None and start is not None and end is not None:
        where = sql.SQL(" WHERE t.{c} >= {s} AND t.{c} < {e}").format(
            c=sql.Identifier(time_column), s=sql.Literal(start), e=sql.Literal(end))
    query = sql.SQL("COPY (SELECT {cols} FROM {table} t{join}{where} ORDER BY {order}) TO STDOUT").format(
        cols=sql.SQL(", ").join(selected),
        table=sql.Identifier(schema, table),
        join=join,
        where=where,
        order=sql.SQL(", ").join(sql.SQL("{} NULLS FIRST").format(sql.Literal(i + 1)) for i in range(len(cols))),
    )
    out = bytearray()
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        with conn.cursor() as cur, cur.copy(query) as copy:
            for chunk in copy:
                out += chunk
    return bytes(out)


def dump_tables(conn: psycopg.Connection, tables: list[str], start: datetime | None = None,
                end: datetime | None = None) -> dict[str, bytes]:
    """`dump_window` of several tables, keyed by table name."""
    return {table: dump_window(conn, table, start, end) for table in tables}
