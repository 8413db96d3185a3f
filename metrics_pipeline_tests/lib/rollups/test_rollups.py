"""Rollups equal a pandas recomputation from the raw points; percentiles within the sketch bound."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

T0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
ALPHA = rollups.RELATIVE_ACCURACY


def _frame(series: dict[tuple[str, str], tuple[pd.DatetimeIndex, np.ndarray]], unit="percent") -> pd.DataFrame:
    return points_frame([
        {"metric": metric, "resource": resource, "labels": {"host": resource}, "unit": unit, "ts": ts, "value": values}
        for (metric, resource), (ts, values) in series.items()
    ])


def _skewed(rng: np.random.Generator, n: int) -> np.ndarray:
    # Log-normal body with a heavy tail, some zeros and a few negatives: what sketches get wrong.
    values = rng.lognormal(mean=2.0, sigma=1.2, size=n)
    values[rng.random(n) < 0.05] = 0.0
    values[rng.random(n) < 0.02] *= -1
    values[rng.random(n) < 0.01] *= 1000
    return values


@pytest.fixture
def day_of_points(warehouse_dsn):
    """Two series over a day: one 1-second skewed series for 2 hours, one 10-second series all day."""
    rng = np.random.default_rng(7)
    fast_ts = pd.date_range(T0, T0 + timedelta(hours=2), freq="1s", inclusive="left")
    slow_ts = pd.date_range(T0, T0 + timedelta(days=1), freq="10s", inclusive="left")
    frame = _frame({
        ("latency_ms", "api-1"): (fast_ts, _skewed(rng, len(fast_ts))),
        ("host_cpu_percent", "db-1"): (slow_ts, np.clip(rng.normal(60, 25, len(slow_ts)), 0, 100)),
    })
    loader.load_points(Warehouse(warehouse_dsn), frame, source="test", start=T0, end=T0 + timedelta(days=1))
    return frame


def _raw(db) -> pd.DataFrame:
    rows = db.execute("SELECT series_id, ts, value FROM metrics.points ORDER BY series_id, ts").fetchall()
    return pd.DataFrame(rows, columns=["series_id", "ts", "value"])


def _rollup(db, table: str) -> pd.DataFrame:
    rows = db.execute(
        f"SELECT series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99 FROM metrics.{table} ORDER BY 1, 2"
    ).fetchall()
    return pd.DataFrame(rows, columns=["series_id", "bucket", "count", "sum", "min", "max", "avg", "last", "p50", "p95", "p99"])


def _expected(raw: pd.DataFrame, freq: str) -> pd.DataFrame:
    raw = raw.assign(bucket=raw["ts"].dt.floor(freq))
    grouped = raw.groupby(["series_id", "bucket"])["value"]
    return grouped.agg(["count", "sum", "min", "max", "mean", "last"]).reset_index()


def _within_bound(estimate: float, values: np.ndarray, q: float) -> bool:
    """The documented bound: within ALPHA (relative) of the sample of rank floor(q * (n - 1))."""
    exact = float(np.quantile(values, q, method="lower"))
    return abs(estimate - exact) <= ALPHA * abs(exact) + 1e-9


@pytest.mark.parametrize("table, freq", [("rollup_5m", "5min"), ("rollup_1h", "1h"), ("rollup_1d", "1D")])
def test_rollup_values_equal_pandas_recomputation_from_raw_points(warehouse_dsn, db, day_of_points, table, freq):
    results = rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h", "rollup_1d"], T0, T0 + timedelta(days=1))
    assert [r.table for r in results] == ["rollup_5m", "rollup_1h", "rollup_1d"]
    raw = _raw(db)
    got = _rollup(db, table)
    want = _expected(raw, freq)
    assert len(got) == len(want)
    merged = got.merge(want, on=["series_id", "bucket"], suffixes=("", "_pd"))
    assert len(merged) == len(want)
    assert (merged["count"] == merged["count_pd"]).all()
    for ours, theirs in (("sum", "sum_pd"), ("min", "min_pd"), ("max", "max_pd"), ("avg", "mean"), ("last", "last_pd")):
        np.testing.assert_allclose(merged[ours], merged[theirs], rtol=1e-9, atol=1e-9, err_msg=ours)
    # Percentiles, bucket by bucket, against numpy on the raw values.
    for row in merged.itertuples():
        values = raw.loc[(raw.series_id == row.series_id) & (raw.ts.dt.floor(freq) == row.bucket), "value"].to_numpy()
        for q, estimate in ((0.5, row.p50), (0.95, row.p95), (0.99, row.p99)):
            assert _within_bound(estimate, values, q), (table, row.bucket, q, estimate, np.quantile(values, q, method="lower"))


def test_daily_percentiles_merge_sketches_not_average_percentiles(warehouse_dsn, db):
    # Hour 0 holds 3600 small values, hour 1 holds 100 huge ones: the day's p95 is small,
    # an average of hourly p95s would be ~half of the huge value.
    small = pd.date_range(T0, T0 + timedelta(hours=1), freq="1s", inclusive="left")
    big = pd.date_range(T0 + timedelta(hours=1), T0 + timedelta(hours=2), freq="36s", inclusive="left")
    ts = small.append(big)
    values = np.concatenate([np.full(len(small), 10.0), np.full(len(big), 10_000.0)])
    loader.load_points(Warehouse(warehouse_dsn), _frame({("m", "r"): (ts, values)}), source="test", start=T0, end=T0 + timedelta(days=1))
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h", "rollup_1d"], T0, T0 + timedelta(days=1))
    p95, p99 = db.execute("SELECT p95, p99 FROM metrics.rollup_1d").fetchone()
    assert _within_bound(p95, values, 0.95) and p95 == pytest.approx(10.0, rel=ALPHA)
    assert _within_bound(p99, values, 0.99) and p99 == pytest.approx(10_000.0, rel=ALPHA)


def test_refresh_is_idempotent_and_replaces_its_window_only(warehouse_dsn, db, day_of_points, pg_dump):
    day = (T0, T0 + timedelta(days=1))
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *day)
    before = db.execute("SELECT count(*), sum(sum) FROM metrics.rollup_5m").fetchone()
    again = rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *day)
    assert db.execute("SELECT count(*), sum(sum) FROM metrics.rollup_5m").fetchone() == before
    assert again[0].deleted == again[0].rows == before[0]
    # One hour refreshed alone touches only that hour's buckets.
    hour = rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], T0 + timedelta(hours=3), T0 + timedelta(hours=4))
    assert hour[0].rows == 12 * 1 and hour[1].rows == 1  # only the 10-second series has data at 03:00
    assert db.execute("SELECT count(*), sum(sum) FROM metrics.rollup_5m").fetchone() == before


def test_late_points_change_the_rollups_of_the_buckets_they_cover(warehouse_dsn, db):
    ts = pd.date_range(T0, T0 + timedelta(hours=1), freq="1min", inclusive="left")
    hour = (T0, T0 + timedelta(hours=1))
    loader.load_points(Warehouse(warehouse_dsn), _frame({("m", "r"): (ts[:30], np.ones(30))}), source="test", start=hour[0], end=hour[1])
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *hour)
    assert db.execute("SELECT count FROM metrics.rollup_1h").fetchone() == (30,)
    loader.load_points(Warehouse(warehouse_dsn), _frame({("m", "r"): (ts, np.full(60, 2.0))}), source="test", start=hour[0], end=hour[1])
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *hour)
    assert db.execute("SELECT count, avg, last FROM metrics.rollup_1h").fetchone() == (60, 2.0, 2.0)
    assert db.execute("SELECT count(*) FROM metrics.rollup_5m").fetchone() == (12,)


def test_refresh_keeps_rollups_whose_raw_points_retention_has_dropped(warehouse_dsn, db, day_of_points):
    day = (T0, T0 + timedelta(days=1))
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *day)
    kept = db.execute("SELECT count(*) FROM metrics.rollup_1h").fetchone()
    db.execute("DROP TABLE metrics.points_p20260302")
    results = rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *day)
    assert all(r.skipped and r.rows == 0 for r in results[:1])
    assert db.execute("SELECT count(*) FROM metrics.rollup_1h").fetchone() == kept


def test_misaligned_window_is_refused_with_a_clear_error(warehouse_dsn):
    with pytest.raises(ValueError, match="not aligned to 1 day"):
        rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_1d"], T0 + timedelta(hours=1), T0 + timedelta(days=1))
    with pytest.raises(ValueError, match="unknown rollup tables"):
        rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_2h"], T0, T0 + timedelta(hours=1))


def test_monthly_sketches_add_up_the_months_daily_sketches_and_follow_a_rerun_day(warehouse_dsn, db):
    """rollup_1mo_sketch (migration 0028): per series and UTC month, exactly the bins of its daily
    sketches added up, rewritten whenever a day of the month is refreshed."""
    rng = np.random.default_rng(3)
    start, end = T0 - timedelta(days=3), T0 + timedelta(days=33)  # Feb 27 .. Apr 4: three months
    ts = pd.date_range(start, end, freq="15min", inclusive="left")
    warehouse = Warehouse(warehouse_dsn)
    loader.load_points(warehouse, _frame({("latency_ms", "api-1"): (ts, _skewed(rng, len(ts)))}), source="test",
                       start=start, end=end)
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h", "rollup_1d"], start, end)
    merged = """SELECT d.series_id, date_trunc('month', d.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC', u.k, sum(u.n)
                FROM metrics.rollup_1d_sketch d, unnest(d.sketch_keys, d.sketch_counts) u(k, n)
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""
    monthly = """SELECT m.series_id, m.bucket, u.k, u.n FROM metrics.rollup_1mo_sketch m,
                 unnest(m.sketch_keys, m.sketch_counts) u(k, n) ORDER BY 1, 2, 3"""
    assert db.execute(monthly).fetchall() == db.execute(merged).fetchall()
    assert db.execute("SELECT bucket, days FROM metrics.rollup_1mo_sketch ORDER BY 1").fetchall() == [
        (datetime(2026, 2, 1, tzinfo=timezone.utc), 2), (datetime(2026, 3, 1, tzinfo=timezone.utc), 31),
        (datetime(2026, 4, 1, tzinfo=timezone.utc), 3)]
    # A day of March loaded again with other values, and re-rolled: March's sketch follows, the others stay.
    day = (T0 + timedelta(days=9), T0 + timedelta(days=10))
    again = pd.date_range(*day, freq="1min", inclusive="left")
    loader.load_points(warehouse, _frame({("latency_ms", "api-1"): (again, np.full(len(again), 12345.0))}),
                       source="test", start=day[0], end=day[1])
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], *day)
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_1d"], *day)
    assert db.execute(monthly).fetchall() == db.execute(merged).fetchall()
    march = db.execute("SELECT sketch_counts FROM metrics.rollup_1mo_sketch WHERE bucket = %s",
                       (datetime(2026, 3, 1, tzinfo=timezone.utc),)).fetchone()[0]
    assert sum(march) == db.execute("SELECT sum(count) FROM metrics.rollup_1d WHERE bucket >= '2026-03-01' "
                                    "AND bucket < '2026-04-01'").fetchone()[0]
