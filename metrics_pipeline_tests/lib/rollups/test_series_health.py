"""Completeness per series ("no data" distinct from zero) and time above thresholds (SPEC §5)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

T0 = datetime(2026, 4, 6, tzinfo=timezone.utc)
THRESHOLDS = [{"metric": "host_cpu_percent", "warning": 80.0, "critical": 95.0}]


def _load(dsn, start, end, series):
    frame = points_frame([
        {"metric": metric, "resource": resource, "labels": {}, "unit": "percent", "ts": ts, "value": values}
        for (metric, resource), (ts, values) in series.items()
    ])
    loader.load_points(Warehouse(dsn), frame, source="test", start=start, end=end)


def _health(db):
    rows = db.execute(
        """SELECT s.resource, h.bucket, h.interval_s, h.expected, h.received, h.completeness, h.no_data,
                  h.max_gap_s, h.above_warning_s, h.above_critical_s
           FROM metrics.series_health_hourly h JOIN metrics.series s USING (series_id) ORDER BY 1, 2"""
    ).fetchall()
    return pd.DataFrame(rows, columns=["resource", "bucket", "interval_s", "expected", "received", "completeness",
                                       "no_data", "max_gap_s", "above_warning_s", "above_critical_s"])


def test_a_gap_lowers_completeness_and_a_silent_hour_is_no_data_not_zero(warehouse_dsn, db):
    hour0 = pd.date_range(T0, T0 + timedelta(hours=1), freq="10s", inclusive="left")
    with_gap = hour0[(hour0 < T0 + timedelta(minutes=20)) | (hour0 >= T0 + timedelta(minutes=50))]
    zeros = pd.date_range(T0 + timedelta(hours=1), T0 + timedelta(hours=2), freq="10s", inclusive="left")
    _load(warehouse_dsn, T0, T0 + timedelta(hours=3), {
        ("host_cpu_percent", "gappy"): (with_gap, np.full(len(with_gap), 50.0)),
        # reports zeros in hour 1 only (and one sample in hour 0 so it is a known series)
        ("host_cpu_percent", "zeros"): (hour0[:2].append(zeros), np.zeros(2 + len(zeros))),
    })
    rollups.refresh_health(Warehouse(warehouse_dsn, "metrics"), T0, T0 + timedelta(hours=3), now=T0 + timedelta(hours=3),
                           thresholds=THRESHOLDS)
    health = _health(db).set_index(["resource", "bucket"])
    gappy = health.loc[("gappy", T0)]
    assert gappy.interval_s == 10 and gappy.expected == 360 and gappy.received == len(with_gap)
    assert gappy.completeness == pytest.approx(len(with_gap) / 360)
    assert gappy.max_gap_s == pytest.approx(30 * 60 + 10)
    # hours 1 and 2 of the gappy series: no sample at all -> no_data rows, completeness 0
    assert health.loc[("gappy", T0 + timedelta(hours=1))].no_data
    assert health.loc[("gappy", T0 + timedelta(hours=2))].received == 0
    # zeros are data: complete, not "no data"
    zeros_row = health.loc[("zeros", T0 + timedelta(hours=1))]
    assert not zeros_row.no_data and zeros_row.completeness == 1.0 and zeros_row.above_warning_s == 0
    assert health.loc[("zeros", T0 + timedelta(hours=2))].no_data


def test_time_above_thresholds_counts_each_sample_until_the_next(warehouse_dsn, db):
    ts = pd.date_range(T0, T0 + timedelta(hours=1), freq="1s", inclusive="left")
    values = np.full(len(ts), 50.0)
    values[600:900] = 90.0    # 5 minutes above warning
    values[1200:1260] = 99.0  # 1 minute above critical (and warning)
    _load(warehouse_dsn, T0, T0 + timedelta(hours=1), {("host_cpu_percent", "busy"): (ts, values)})
    rollups.refresh_health(Warehouse(warehouse_dsn, "metrics"), T0, T0 + timedelta(hours=1), now=T0 + timedelta(days=1),
                           thresholds=THRESHOLDS)
    row = _health(db).iloc[0]
    assert row.above_warning_s == pytest.approx(360)
    assert row.above_critical_s == pytest.approx(60)
    assert row.completeness == 1.0 and row.expected == 3600


def test_the_in_progress_hour_expects_samples_only_up_to_now(warehouse_dsn, db):
    ts = pd.date_range(T0, T0 + timedelta(minutes=15), freq="5s", inclusive="left")
    _load(warehouse_dsn, T0, T0 + timedelta(hours=1), {("host_cpu_percent", "live"): (ts, np.ones(len(ts)))})
    rollups.refresh_health(Warehouse(warehouse_dsn, "metrics"), T0, T0 + timedelta(hours=1), now=T0 + timedelta(minutes=15),
                           thresholds=THRESHOLDS)
    row = _health(db).iloc[0]
    assert row.expected == 180 and row.received == 180 and row.completeness == 1.0


def test_the_daily_rollup_writes_the_sums_of_the_days_hourly_health(warehouse_dsn, db):
    """series_health_daily (migration 0027): per series and day, exactly what its hourly rows add up to,
    replaced with the day's rollup (a re-run after the hours changed follows them)."""
    day = (T0, T0 + timedelta(days=1))
    ts = pd.date_range(T0, T0 + timedelta(hours=5), freq="30s", inclusive="left")
    ts = ts[(ts < T0 + timedelta(hours=2)) | (ts >= T0 + timedelta(hours=3))]  # hour 2 silent
    _load(warehouse_dsn, *day, {("host_cpu_percent", "a"): (ts, np.linspace(70, 99, len(ts))),
                                ("host_memory_percent", "b"): (ts[:200], np.full(200, 40.0))})
    sums = """SELECT series_id, count(*), sum(expected), sum(received) FILTER (WHERE expected IS NOT NULL),
                     sum(received), max(warning_threshold), max(critical_threshold), sum(above_warning_s),
                     sum(above_critical_s)
              FROM metrics.series_health_hourly GROUP BY 1 ORDER BY 1"""
    daily = """SELECT series_id, hours, expected, received_expected, received, warning_threshold, critical_threshold,
                      above_warning_s, above_critical_s FROM metrics.series_health_daily ORDER BY 1"""
    for hours in (3, 6):  # the day so far, then again once more hours are in
        rollups.refresh_health(Warehouse(warehouse_dsn, "metrics"), T0, T0 + timedelta(hours=hours),
                               now=T0 + timedelta(hours=hours), thresholds=THRESHOLDS)
        rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h", "rollup_1d"], *day)
        want = db.execute(sums).fetchall()
        assert len(want) == 2 and {r[1] for r in want} == {hours} and max(r[7] or 0 for r in want) > 0
        assert db.execute(daily).fetchall() == want
        assert db.execute("SELECT DISTINCT bucket FROM metrics.series_health_daily").fetchall() == [(T0,)]
