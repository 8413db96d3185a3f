"""Sketches in tables of their own (issue 17, item 3; migration 0013).

The rollup rows BI scans no longer carry the percentile sketches: each tier writes them to
`rollup_*_sketch` in the same statement, and the coarser tier merges them from there. Percentiles
must come out exactly as when the sketches sat in the rows: the golden figures below were written by
the code before migration 0013 on the same day of points.
"""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

DAY = datetime(2026, 7, 6, tzinfo=timezone.utc)
TIERS = ["rollup_5m", "rollup_1h", "rollup_1d"]

#: metric -> (p50, p95, p99) of the day, as the code before migration 0013 merged them (5 m -> 1 h -> 1 d)
GOLDEN_1D = {
    "latency": (20.288421154821744, 146.95351919321797, 368.76036263512225),
    "signed": (-0.001891738531014254, 57.402336358119875, 90.93094205021602),
    "status": (0.0, 0.0, 1.0),
}
#: tier -> metric -> (rows, sum of p50, sum of p95, sum of p99), same origin
GOLDEN_SUMS = {
    "rollup_5m": {"latency": (288, 5652.058953735651, 22166.687520679512, 22166.687520679512),
                  "signed": (288, -311.89246094391063, 6608.475896810841, 6608.475896810841),
                  "status": (288, 0.0, 10.0, 10.0)},
    "rollup_1h": {"latency": (24, 484.34406205019286, 3335.447489834193, 5902.472432604154),
                  "signed": (24, -0.1122001080859703, 1321.576036696857, 1874.4686798326295),
                  "status": (24, 0.0, 1.0, 14.0)},
}


def day_of_points() -> pd.DataFrame:
    """A day at 30 s: a heavy-tailed latency, a 0/1 status, values of both signs over five magnitudes."""
    rng = np.random.default_rng(17)
    ts = pd.date_range(DAY, DAY + timedelta(days=1), freq="30s", inclusive="left")
    n = len(ts)
    values = {
        "latency": rng.lognormal(3, 1.2, n).round(3),
        "status": (rng.random(n) < 0.03).astype(float),
        "signed": (rng.normal(0, 50, n) * np.where(rng.random(n) < 0.5, 1, 1e-3)).round(6),
    }
    return points_frame([{"metric": m, "resource": "r", "labels": {}, "unit": "1", "ts": ts, "value": v}
                         for m, v in values.items()])


@pytest.fixture
def warehouse(warehouse_dsn) -> Warehouse:
    warehouse = Warehouse(warehouse_dsn)
    loader.load_points(warehouse, day_of_points(), source="test", start=DAY, end=DAY + timedelta(days=1))
    rollups.refresh(warehouse, TIERS, DAY, DAY + timedelta(days=1))
    return warehouse


def _sketches(db, tier: str) -> list[tuple]:
    return db.execute(f"SELECT series_id, bucket, sketch_keys, sketch_counts FROM metrics.{tier}_sketch "
                      "ORDER BY series_id, bucket").fetchall()


def test_percentiles_merged_5m_1h_1d_are_those_written_while_sketches_sat_in_the_rows(warehouse, db):
    day = {m: (p50, p95, p99) for m, p50, p95, p99 in db.execute(
        "SELECT s.metric, r.p50, r.p95, r.p99 FROM metrics.rollup_1d r JOIN metrics.series s USING (series_id)")}
    assert day.keys() == GOLDEN_1D.keys()
    for metric, expected in GOLDEN_1D.items():
        assert day[metric] == pytest.approx(expected, rel=1e-12), metric
    for tier, by_metric in GOLDEN_SUMS.items():
        sums = {m: rest for m, *rest in db.execute(
            f"""SELECT s.metric, count(*), sum(r.p50 ORDER BY r.bucket), sum(r.p95 ORDER BY r.bucket),
                       sum(r.p99 ORDER BY r.bucket)
                FROM metrics.{tier} r JOIN metrics.series s USING (series_id) GROUP BY 1""")}
        for metric, expected in by_metric.items():
            assert tuple(sums[metric]) == pytest.approx(expected, rel=1e-12), f"{tier} {metric}"


def test_rollup_rows_hold_no_sketch_and_every_row_has_its_sketch_row(warehouse, db):
    columns = {(t, c) for t, c in db.execute(
        """SELECT table_name, column_name FROM information_schema.columns
           WHERE table_schema = 'metrics' AND column_name LIKE 'sketch%%'""")}
    # only the sketch tables (and their partitions) have them, not the tiers (nor theirs); the API's
    # sketch views (migration 0017) show the sketch tables' columns to the API's reader; the monthly
    # sketches (migration 0028) are the daily ones added up
    assert {(f"{t}_sketch", c) for t in TIERS for c in ("sketch_keys", "sketch_counts")} <= columns
    assert all(table.startswith((*(f"{t}_sketch" for t in TIERS), "rollup_1mo_sketch", "api_sketch_"))
               for table, _ in columns), sorted(columns)
    for tier in TIERS:
        unmatched = db.execute(
            f"""SELECT count(*) FILTER (WHERE k.bucket IS NULL), count(*) FILTER (WHERE r.bucket IS NULL), count(*)
                FROM metrics.{tier} r FULL JOIN metrics.{tier}_sketch k USING (series_id, bucket)""").fetchone()
        assert unmatched[:2] == (0, 0) and unmatched[2] > 0, f"{tier}: rows without sketch, sketches without row"
        # the counts of a row's bins add up to its count
        assert db.execute(
            f"""SELECT count(*) FROM metrics.{tier} r JOIN metrics.{tier}_sketch k USING (series_id, bucket)
                WHERE r.count <> (SELECT sum(n) FROM unnest(k.sketch_counts) n)""").fetchone() == (0,)


def test_a_rerun_window_replaces_its_sketches_and_leaves_the_others(warehouse, db):
    hour = (DAY + timedelta(hours=5), DAY + timedelta(hours=6))
    before = {tier: _sketches(db, tier) for tier in TIERS}
    rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], *hour)
    rollups.refresh(warehouse, ["rollup_1d"], DAY, DAY + timedelta(days=1))
    assert {tier: _sketches(db, tier) for tier in TIERS} == before

    # The hour's points go: its rows and their sketches go with them, nothing else moves.
    db.execute("DELETE FROM metrics.points WHERE ts >= %s AND ts < %s", hour)
    results = rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], *hour)
    assert [r.rows for r in results] == [0, 0] and [r.deleted for r in results] == [3 * 12, 3]
    for tier in ("rollup_5m", "rollup_1h"):
        kept = [row for row in before[tier] if not hour[0] <= row[1] < hour[1]]
        assert _sketches(db, tier) == kept and len(kept) < len(before[tier])
