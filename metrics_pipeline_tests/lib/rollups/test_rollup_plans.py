"""Rollup plans that cannot degrade with statistics (issue 16, defect 10).

An hour is rolled up right after it is loaded, before anything analyses it. The former statements
joined two aggregates of the window (bucket statistics and sketch percentiles); on an hour loaded
after its day partition was last analysed, the planner expected one row and ran a nested loop that
re-aggregated the window once per bucket (165 s instead of 0.27 s for 515 series x 1 hour). The
statements the refresh runs must be one pipeline whatever the statistics: no join other than the
per-row unnest of a sketch, and subqueries that are key probes. Timing is benchmarks/rollups.py's job
(the "fresh hour" case); here the plan is asserted, with autovacuum off on every partition involved
so that nothing analyses behind the test's back.
"""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.plans import (
    explain,
    joins_of_aggregated_inputs,
    subplans_that_scan_more_than_a_key,
)

DAY = datetime(2026, 5, 4, tzinfo=timezone.utc)
HOUR = (DAY + timedelta(hours=3), DAY + timedelta(hours=4))
SERIES = 60


def _hours(start: datetime, end: datetime, seed: int) -> pd.DataFrame:
    """SERIES CloudWatch-like series at 60 s over [start, end)."""
    rng = np.random.default_rng(seed)
    ts = pd.date_range(start, end, freq="60s", inclusive="left")
    return points_frame([
        {"metric": "aws_ec2_cpuutilization", "resource": f"i-{i:04d}", "labels": {}, "unit": "percent", "ts": ts,
         "value": rng.lognormal(2.5, 0.8, len(ts)).round(2)}
        for i in range(SERIES)
    ])


def _partitions_without_autovacuum(db) -> list[str]:
    names = []
    for table in ("points", "rollup_5m", "rollup_1h", "rollup_1d"):
        partitioning.ensure_partitions(db, "metrics", table, DAY, DAY + timedelta(days=1))
        names += [name for name, _, _ in partitioning.partition_bounds(table, DAY, DAY + timedelta(days=1))]
    for name in names:
        db.execute(f"ALTER TABLE metrics.{name} SET (autovacuum_enabled = off)")
    return names


def _estimated_rows(db, start: datetime, end: datetime) -> float:
    plan = explain(db, "SELECT * FROM metrics.points WHERE ts >= %(start)s AND ts < %(end)s", {"start": start, "end": end})
    return plan["Plan Rows"]


def _plans_of_the_refresh(dsn: str) -> dict[str, dict]:
    """EXPLAIN of each tier's statement as `rollups.refresh` runs it: in one transaction, each tier
    reading the rows the finer one has just written, never analysed (rolled back afterwards)."""
    hour = {"start": HOUR[0], "end": HOUR[1]}
    day = {"start": DAY, "end": DAY + timedelta(days=1)}
    plans = {}
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        for table, window in (("rollup_5m", hour), ("rollup_1h", hour), ("rollup_1d", day)):
            sql = rollups.tier_sql("metrics", table)
            plans[table] = explain(conn, sql, window)
            conn.execute(sql, window)
        conn.rollback()
    return plans


@pytest.mark.parametrize("statistics", ["never analysed", "analysed before the hour was loaded"])
def test_rolling_up_a_freshly_loaded_hour_never_joins_aggregates_whatever_the_statistics(warehouse_dsn, db, statistics):
    partitions = _partitions_without_autovacuum(db)
    warehouse = Warehouse(warehouse_dsn)
    if statistics != "never analysed":
        # Earlier hours of the day were loaded and analysed (by autovacuum, say); then this hour lands.
        loader.load_points(warehouse, _hours(DAY, HOUR[0], seed=1), source="cloudwatch", start=DAY, end=HOUR[0])
        db.execute("ANALYZE metrics.points_p20260504")
    loader.load_points(warehouse, _hours(*HOUR, seed=2), source="cloudwatch", start=HOUR[0], end=HOUR[1])

    analysed = db.execute(  # reltuples stays -1 until a VACUUM or ANALYZE
        "SELECT relname FROM pg_class WHERE relname = ANY(%s) AND reltuples >= 0", (partitions,)
    ).fetchall()
    if statistics == "never analysed":
        assert analysed == [], "these partitions were analysed or vacuumed: the case is not the one meant"
    else:
        assert _estimated_rows(db, *HOUR) < 0.01 * SERIES * 60, "the statistics are not stale for the new hour"

    for table, plan in _plans_of_the_refresh(warehouse_dsn).items():
        assert joins_of_aggregated_inputs(plan) == [], f"{table}: joins that re-aggregate when estimates are off"
        assert subplans_that_scan_more_than_a_key(plan) == [], f"{table}: subqueries that are not key probes"

    # And the refresh itself still writes every bucket.
    results = rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], *HOUR)
    assert [r.rows for r in results] == [SERIES * 12, SERIES]
