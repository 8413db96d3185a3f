"""Percentiles that fall on the minimum or maximum read it exactly (issue 16, defect 12).

A percentile is the representative of a 2 % wide sketch bin: for a 0/1 metric (StatusCheckFailed) the
bin of 1 is (0.980, 1], whose representative is 0.99, so a p95 read 0.99. Within the 1 % bound, but
confusing. When the requested rank falls among the values equal to the bucket's minimum or maximum,
the percentile is now that value, at every tier (5 m from the points, 1 h and 1 d merged).
"""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

T0 = datetime(2026, 7, 6, tzinfo=timezone.utc)
HOURS = 3
ALPHA = rollups.RELATIVE_ACCURACY
TIERS = [("rollup_5m", "5min"), ("rollup_1h", "1h"), ("rollup_1d", "1D")]


def _metrics(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Small whole-number metrics, and the cases around them."""
    minute = np.arange(n) // 6
    failing = (minute % 20 < 2) | (rng.random(n) < 0.03)  # bursts: some buckets mostly 1, most 0
    return {
        "status_check_failed": failing.astype(float),
        "connections": rng.integers(3, 13, n).astype(float),
        "disk_read_ops": rng.lognormal(4, 1.5, n).round(),  # large integers share bins
        "offset_flag": -failing.astype(float),  # the mirrored bins: a minimum of -1
        # The top bin (0.980, 1] also holds 0.985: 1 is exact only when the rank falls on a 1.
        "near_one": np.where(failing, np.where(rng.random(n) < 0.2, 0.985, 1.0), 0.0),
    }


@pytest.fixture
def raw(warehouse_dsn) -> pd.DataFrame:
    rng = np.random.default_rng(12)
    ts = pd.date_range(T0, T0 + timedelta(hours=HOURS), freq="10s", inclusive="left")
    metrics = _metrics(len(ts), rng)
    frame = points_frame([
        {"metric": metric, "resource": "r", "labels": {}, "unit": "1", "ts": ts, "value": values}
        for metric, values in metrics.items()
    ])
    warehouse = Warehouse(warehouse_dsn)
    loader.load_points(warehouse, frame, source="test", start=T0, end=T0 + timedelta(days=1))
    rollups.refresh(warehouse, ["rollup_5m", "rollup_1h", "rollup_1d"], T0, T0 + timedelta(days=1))
    return pd.DataFrame({"metric": np.repeat(list(metrics), len(ts)), "ts": np.tile(ts, len(metrics)),
                         "value": np.concatenate(list(metrics.values()))})


def _rows(db, table: str) -> list[tuple]:
    return db.execute(
        f"""SELECT s.metric, r.bucket, r.p50, r.p95, r.p99 FROM metrics.{table} r
            JOIN metrics.series s USING (series_id) ORDER BY 1, 2"""
    ).fetchall()


@pytest.mark.parametrize("table, freq", TIERS)
def test_a_percentile_on_the_minimum_or_maximum_is_that_exact_value(db, raw, table, freq):
    on_extremes = 0
    for metric, bucket, *estimates in _rows(db, table):
        values = raw.loc[(raw.metric == metric) & (raw.ts.dt.floor(freq) == bucket), "value"].to_numpy()
        for q, estimate in zip((0.5, 0.95, 0.99), estimates):
            exact = float(np.quantile(values, q, method="lower"))
            if exact in (values.min(), values.max()):
                on_extremes += 1
                assert estimate == exact, (table, metric, bucket, q)
            else:
                assert abs(estimate - exact) <= ALPHA * abs(exact) + 1e-9, (table, metric, bucket, q, estimate, exact)
    assert on_extremes > 0


@pytest.mark.parametrize("table, freq", TIERS)
def test_min_and_max_counts_are_the_values_equal_to_min_and_max(db, raw, table, freq):
    # Both ways of counting at 5 m (the extreme's bin holds nothing else / it is shared, as for
    # "near_one"), then sums over the finer rows that hold the extreme at 1 h and 1 d.
    rows = db.execute(
        f"""SELECT s.metric, r.bucket, r.min_count, r.max_count FROM metrics.{table} r
            JOIN metrics.series s USING (series_id) ORDER BY 1, 2"""
    ).fetchall()
    assert rows
    for metric, bucket, min_count, max_count in rows:
        values = raw.loc[(raw.metric == metric) & (raw.ts.dt.floor(freq) == bucket), "value"].to_numpy()
        assert (min_count, max_count) == ((values == values.min()).sum(), (values == values.max()).sum()), (
            table, metric, bucket)


@pytest.mark.parametrize("table", [t for t, _ in TIERS])
def test_p95_of_a_zero_one_metric_reads_one(db, raw, table):
    p95 = {p for metric, _, _, p, _ in _rows(db, table) if metric == "status_check_failed"}
    assert 1.0 in p95 and p95 <= {0.0, 1.0}


def test_rows_from_before_the_counts_existed_still_merge_into_bound_percentiles(warehouse_dsn, db, raw):
    # 5-minute rows written before migration 0010 have no min_count/max_count: the hour merged from
    # them falls back to the bins' representatives, within the bound, and says it does not know.
    db.execute("UPDATE metrics.rollup_5m SET min_count = NULL, max_count = NULL")
    rollups.refresh(Warehouse(warehouse_dsn), ["rollup_1h"], T0, T0 + timedelta(hours=HOURS))
    rows = db.execute(
        """SELECT r.p95, r.min_count, r.max_count FROM metrics.rollup_1h r JOIN metrics.series s USING (series_id)
           WHERE s.metric = 'status_check_failed'"""
    ).fetchall()
    assert rows and all(min_count is None and max_count is None for _, min_count, max_count in rows)
    assert {round(p95, 9) for p95, _, _ in rows} <= {0.0, 0.99, 1.0}
