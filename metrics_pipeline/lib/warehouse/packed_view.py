"""`bi_all_points` (behind `v_points`) over both raw tiers, with one arm of packed rows per UTC day.

A condition on `ts` cannot reach `points_packed.hour` through a plain view: PostgreSQL pushes it into
the packed arm as a filter on the unnested timestamps, evaluated after every packed row of the series
(a week: 168 rows, 600,000 points) was decompressed and unnested. So the packed rows are read by one
arm per day, each bounded by constants on `hour` (its partition and index range) and on the unnested
`ts`. With `constraint_exclusion = on` (set for the warehouse's database by migration 0026 when the
migrating role may, and on every BI login by `bi.ensure_role`), the planner proves an arm's bounds
contradict the reader's (`ts >= '2026-01-05' AND ts < '2026-01-06'`) and drops it: a series-day
reads that day's 24 packed rows. Bounds that are not constants at planning time (`now() - interval
'6 hours'`, generic plans of prepared statements) cannot prove anything: every arm runs, and the
result is the same, read from every packed hour of the series.

The arms cover every day from the oldest packed partition to the newest, gaps included, and a last
arm holds whatever lies outside them, so what the view returns never depends on when it was
rebuilt: `pack.pack_hour` rebuilds it when it creates a day's partition, retention when it drops one.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.warehouse import partitioning

_COLUMNS = """s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic"""


def _literal(ts: datetime) -> str:
    return f"'{ts.isoformat()}'::timestamptz"


def view_sql(schema: str, days: list[datetime]) -> str:
    """CREATE OR REPLACE VIEW bi_all_points with an arm per day of [min(days), max(days)].

    Each arm joins `series` itself: a reader's conditions on series columns (metric, host, tenant)
    then select the series inside the arm, whose packed rows are found by their key (series_id,
    hour). Were the join above the UNION ALL, PostgreSQL could not pass the series ids down into
    an arm that is itself a join (it parameterises plain tables only) and would unnest every packed
    row of the day to hash-join them with one series."""
    series = f"LEFT JOIN {schema}.series s ON s.series_id = pk.series_id"
    packed = (f"SELECT u.ts, u.value, pk.series_id, {_COLUMNS}\n    FROM {schema}.points_packed pk "
              f"CROSS JOIN LATERAL unnest(pk.ts, pk.value) AS u(ts, value) {series}")
    arms = [f"SELECT h.ts, h.value, h.series_id, {_COLUMNS}\n    FROM {schema}.points h "
            f"LEFT JOIN {schema}.series s ON s.series_id = h.series_id"]
    if days:
        first, last = min(days), max(days) + timedelta(days=1)
        day = first
        while day < last:
            lo, hi = _literal(day), _literal(day + timedelta(days=1))
            arms.append(f"{packed}\n    WHERE pk.hour >= {lo} AND pk.hour < {hi} AND u.ts >= {lo} AND u.ts < {hi}")
            day += timedelta(days=1)
        lo, hi = _literal(first), _literal(last)
        arms.append(f"{packed}\n    WHERE (pk.hour < {lo} OR pk.hour >= {hi}) AND (u.ts < {lo} OR u.ts >= {hi})")
    else:
        arms.append(packed)
    return f"CREATE OR REPLACE VIEW {schema}.bi_all_points AS\n" + "\nUNION ALL\n".join(arms)


def packed_days(conn: psycopg.Connection, schema: str) -> list[datetime]:
    """The UTC days `points_packed` has a partition for."""
    prefix = "points_packed_p"
    days = []
    for name in partitioning.existing_partitions(conn, schema, "points_packed"):
        if name.startswith(prefix):
            try:
                days.append(datetime.strptime(name[len(prefix):], "%Y%m%d").replace(tzinfo=timezone.utc))
            except ValueError:
                continue  # attached by hand: the last arm reads it
    return sorted(days)


def rebuild(conn: psycopg.Connection, schema: str) -> None:
    """Rebuild bi_all_points for the packed partitions that exist now (`conn` in autocommit mode)."""
    with conn.transaction():
        # one rebuild at a time: two concurrent CREATE OR REPLACE of one view fail ("tuple concurrently updated")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"metrics_pipeline.packed_view:{schema}",))
        conn.execute(view_sql(schema, packed_days(conn, schema)))
