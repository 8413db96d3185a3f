"""`points.intervals` and the `series_intervals` the loads keep from it (alert gap tolerance)."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.points import INTERVAL_SAMPLE, intervals, points_frame, prepare
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import load_points

DAY = datetime(2026, 4, 1, tzinfo=timezone.utc)


def _prepared(series: dict[str, pd.DatetimeIndex], start=DAY, end=DAY + timedelta(days=2)):
    frame = points_frame([{"metric": "m", "resource": r, "labels": {}, "unit": "count", "ts": ts,
                           "value": np.ones(len(ts))} for r, ts in series.items()])
    return prepare(frame, source="t", start=start, end=end)


def test_the_interval_is_the_median_spacing_per_series_and_day():
    one_second = pd.date_range(DAY, periods=100, freq="1s")
    # A day at 60 s with one long gap and one short glitch: the median ignores both.
    minute = pd.DatetimeIndex([*pd.date_range(DAY + timedelta(days=1), periods=30, freq="60s"),
                               DAY + timedelta(days=1, hours=5), DAY + timedelta(days=1, hours=5, seconds=1)])
    prepared = _prepared({"a": one_second, "b": minute})
    index, day, seconds = intervals(prepared)
    found = {(prepared.series_resource[i], int(d)): s for i, d, s in zip(index, day, seconds)}
    first_day = (DAY - datetime(2000, 1, 1, tzinfo=timezone.utc)).days
    assert found == {("a", first_day): 1.0, ("b", first_day + 1): 60.0}


def test_only_the_first_spacings_of_a_day_are_looked_at_and_a_single_sample_gives_nothing():
    ts = pd.DatetimeIndex([*pd.date_range(DAY, periods=INTERVAL_SAMPLE + 1, freq="5s"),
                           *pd.date_range(DAY + timedelta(hours=1), periods=500, freq="1s")])
    prepared = _prepared({"a": ts, "single": pd.DatetimeIndex([DAY + timedelta(hours=3)])})
    index, _, seconds = intervals(prepared)
    assert [prepared.series_resource[i] for i in index] == ["a"] and seconds.tolist() == [5.0]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations([0, 1, 2, 3]))
def test_the_recorded_interval_does_not_depend_on_the_order_of_the_loads(warehouse_dsn, order):
    """Four hours of one day at 10 s, one of them re-delivered at 5 s: any order keeps 5 s."""
    import psycopg

    wh = Warehouse(warehouse_dsn)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.points, metrics.series_intervals, metrics.series CASCADE")
        for hour in order:
            lo = DAY + timedelta(hours=hour)
            step = "5s" if hour == 2 else "10s"
            ts = pd.date_range(lo, lo + timedelta(hours=1), freq=step, inclusive="left")
            frame = points_frame([{"metric": "m", "resource": "r", "labels": {}, "unit": "count", "ts": ts,
                                   "value": np.ones(len(ts))}])
            load_points(wh, frame, source="t", start=lo, end=lo + timedelta(hours=1))
        assert conn.execute("SELECT day, interval_s FROM metrics.series_intervals").fetchall() == [
            (DAY.date(), 5.0)]
