"""`alerts` equals one evaluation over the whole series, whatever the run schedule (issue 15).

The property test loads random series in random pieces (partial hours, re-deliveries, late hours),
evaluates after each load and re-runs random windows in random order, then compares the table with
a single evaluation over everything. The regression tests are the classes of defect found before:
A the data edge, B re-runs reopening, C a verdict depending on which hour ran last, D sparse series,
E missing values meeting a condition.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.alerts import engine
from metrics_pipeline.lib.alerts.rules import Rule
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import load_points

H0 = datetime(2026, 3, 2, 8, tzinfo=timezone.utc)
HOURS = 3
RULE = Rule(name="Hot", metrics=["m"], threshold=80, severity="warning", **{"for": timedelta(seconds=60)},
            annotations={"summary": "hot {resource}"})


def _frame(ts, values, host="h1"):
    return points_frame([{"metric": "m", "resource": host, "labels": {"host": host}, "unit": "percent",
                          "ts": pd.DatetimeIndex(ts), "value": np.asarray(values, dtype=float)}])


def _load(wh, ts, values, lo, hi, host="h1"):
    ts = pd.DatetimeIndex(ts)
    keep = (ts >= lo) & (ts < hi)
    load_points(wh, _frame(ts[keep], np.asarray(values)[keep], host), source="host", start=lo, end=hi, scope="series")


def _rows(conn) -> list[tuple]:
    return conn.execute(
        "SELECT fingerprint, state, starts_at, ends_at FROM metrics.alerts ORDER BY fingerprint, starts_at"
    ).fetchall()


def _evaluate(wh, lo, hi, now):
    return engine.evaluate_and_record(wh, [RULE], lo, hi, now=now, source="host")


def _reset(conn):
    conn.execute("TRUNCATE metrics.alerts, metrics.points, metrics.series_intervals, metrics.series CASCADE")


@st.composite
def series(draw):
    """A 10-second series over HOURS hours: segments above/below the threshold, and missing stretches."""
    n = HOURS * 360
    level = st.sampled_from([50.0, 85.0, 95.0, 79.9, 80.0])
    segments = draw(st.lists(st.tuples(st.integers(1, 400), level), min_size=1, max_size=12))
    values = np.concatenate([np.full(length, v) for length, v in segments] + [np.full(n, segments[-1][1])])[:n]
    present = np.ones(n, dtype=bool)
    for a, length in draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 40)), max_size=4)):
        present[a:a + length] = False
    ts = pd.date_range(H0, periods=n, freq="10s")
    return ts[present], values[present]


@st.composite
def schedules(draw):
    """Loads (hour, fraction of it landed) and re-evaluations (first hour, hours), in any order."""
    ops = draw(st.lists(st.one_of(
        st.tuples(st.just("load"), st.integers(0, HOURS - 1), st.sampled_from([0.25, 0.5, 0.9, 1.0])),
        st.tuples(st.just("eval"), st.integers(0, HOURS - 1), st.integers(1, HOURS)),
    ), min_size=1, max_size=10))
    # Every hour ends up fully landed (the closed-hour runs), in a random order.
    final = draw(st.permutations(list(range(HOURS))))
    return ops + [("load", h, 1.0) for h in final]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.tuples(series(), series()), schedule=schedules())
def test_any_run_schedule_gives_the_table_of_one_evaluation_over_the_whole_series(warehouse_dsn, data, schedule):
    wh = Warehouse(warehouse_dsn)
    now = H0 + timedelta(hours=HOURS, minutes=30)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        _reset(conn)
        for op, hour, arg in schedule:
            lo = H0 + timedelta(hours=hour)
            if op == "load":
                cut = lo + timedelta(hours=arg)
                for host, (ts, values) in zip(("h1", "h2"), data):
                    _load(wh, ts, values, lo, cut, host)
                _evaluate(wh, lo, cut, now)  # every load is followed by its checks
            else:
                _evaluate(wh, lo, min(lo + timedelta(hours=arg), H0 + timedelta(hours=HOURS)), now)
        scheduled = _rows(conn)
        conn.execute("TRUNCATE metrics.alerts")
        _evaluate(wh, H0, H0 + timedelta(hours=HOURS), now)
        assert scheduled == _rows(conn)


def _series(segments, start=H0, step=1):
    """(seconds, value) segments at `step`-second spacing from `start`."""
    values = np.concatenate([np.full(n // step, v, dtype=float) for n, v in segments])
    return pd.date_range(start, periods=len(values), freq=f"{step}s"), values


def test_a_hold_at_the_edge_of_the_loaded_data_stays_firing_while_data_lags_the_clock(warehouse_dsn, db):
    """A: minute files land a minute late; every refresh of the hour in progress keeps it firing,
    with no end, until the data shows the condition ended."""
    wh = Warehouse(warehouse_dsn)
    warning = Rule(name="CpuHigh", metrics=["m"], threshold=80, severity="warning", **{"for": timedelta(minutes=5)})
    ts, values = _series([(600, 50.0), (780, 90.0), (600, 40.0)])  # 90 % from :10 to :23
    seen = {}
    for minute in range(11, 34):
        landed = H0 + timedelta(minutes=minute)
        _load(wh, ts, values, H0, landed)
        engine.evaluate_and_record(wh, [warning], H0, H0 + timedelta(hours=1), now=landed + timedelta(seconds=75),
                                   source="host")
        seen[minute] = [r[1:] for r in _rows(db)]
    fired, ended = H0 + timedelta(minutes=15), H0 + timedelta(minutes=23)
    assert all(seen[m] == [] for m in range(11, 16))  # pending until the data reaches :15
    assert all(seen[m] == [("firing", fired, None)] for m in range(16, 24)), seen
    assert all(seen[m] == [("resolved", fired, ended)] for m in range(24, 34)), seen


def test_re_running_a_closed_hour_never_reopens_an_alert_a_later_hour_resolved(warehouse_dsn, db):
    """B: a late re-run of hour 8 after hour 9 resolved the alert keeps it resolved and undelivered."""
    wh = Warehouse(warehouse_dsn)
    ts, values = _series([(3000, 50.0), (1200, 90.0), (1000, 40.0)])  # 90 % from 08:50 to 09:10
    for hour in range(2):
        lo = H0 + timedelta(hours=hour)
        _load(wh, ts, values, lo, lo + timedelta(hours=1))
        _evaluate(wh, lo, lo + timedelta(hours=1), now=lo + timedelta(hours=1, minutes=2))
    db.execute("UPDATE metrics.alerts SET last_sent_at = now(), webhook_sent_at = now()")
    before = _rows(db)
    assert [r[1:] for r in before] == [("resolved", H0 + timedelta(minutes=51), H0 + timedelta(minutes=70))]
    _load(wh, ts, values, H0, H0 + timedelta(hours=1))  # the late-data re-run of hour 8
    _evaluate(wh, H0, H0 + timedelta(hours=1), now=H0 + timedelta(hours=3))
    assert _rows(db) == before
    assert db.execute("SELECT count(*) FROM metrics.alerts WHERE last_sent_at IS NULL OR webhook_sent_at IS NULL"
                      ).fetchone() == (0,)


def test_the_verdict_does_not_depend_on_which_hour_ran_last(warehouse_dsn, db):
    """C: hour 8 at 1 s, hour 9 at 30 s: the gap tolerance is each day's, not one run's sample."""
    wh = Warehouse(warehouse_dsn)
    fine_ts, fine = _series([(3300, 50.0), (300, 90.0)])
    coarse_ts, coarse = _series([(600, 90.0), (3000, 40.0)], start=H0 + timedelta(hours=1), step=30)
    ts, values = fine_ts.append(coarse_ts), np.concatenate([fine, coarse])
    verdicts = []
    for order in ((0, 1), (1, 0), (0, 1, 0), (1, 0, 1)):
        db.execute("TRUNCATE metrics.alerts, metrics.points, metrics.series_intervals, metrics.series CASCADE")
        for hour in order:
            lo = H0 + timedelta(hours=hour)
            _load(wh, ts, values, lo, lo + timedelta(hours=1))
            _evaluate(wh, lo, lo + timedelta(hours=1), now=H0 + timedelta(hours=3))
        verdicts.append([r[1:] for r in _rows(db)])
    assert all(v == verdicts[0] for v in verdicts), verdicts
    assert len(verdicts[0]) == 1


@pytest.mark.parametrize("missing", [55, 110])
@pytest.mark.parametrize("order", [(0, 1, 2), (0, 1, 2, 1), (2, 1, 0)])
def test_five_minute_data_with_a_missing_datapoint_is_one_alert_that_resolves(warehouse_dsn, db, missing, order):
    """D: basic EC2 monitoring: 5-minute points, a two-hour hold, one point missing inside it."""
    wh = Warehouse(warehouse_dsn)
    ts, values = _series([(1800, 50.0), (7200, 90.0), (1800, 40.0)], step=300)  # 90 from 08:30 to 10:30
    keep = ts != H0 + timedelta(minutes=missing)
    ts, values = ts[keep], values[keep]
    for hour in order:
        lo = H0 + timedelta(hours=hour)
        _load(wh, ts, values, lo, lo + timedelta(hours=1))
        _evaluate(wh, lo, lo + timedelta(hours=1), now=H0 + timedelta(hours=4))
    assert [r[1:] for r in _rows(db)] == [("resolved", H0 + timedelta(minutes=35), H0 + timedelta(minutes=150))]


def test_an_hour_without_runs_never_meets_a_not_equal_condition(warehouse_dsn, db):
    """E: an SLA hour with no runs has no failure rate (NULL): it is not "!= 0"."""
    rule = Rule(name="AnyFailure", kind="sla", column="failure_rate", op="!=", threshold=0, severity="warning")
    for hour, runs, rate in ((0, 4, 0.0), (1, 0, None), (2, 0, None), (3, 4, 0.0)):
        db.execute(
            """INSERT INTO metrics.sla_hourly (bucket, company, zone, source_system, object, runs, successes,
                                               failures, failure_rate, sla_breaches, sla_met)
               VALUES (%s, 'acme', '1-Raw', 'Zoho', 'Deals', %s, %s, 0, %s, 0, true)""",
            (H0 + timedelta(hours=hour), runs, runs, rate),
        )
    result = engine.evaluate_and_record(Warehouse(warehouse_dsn), [rule], H0, H0 + timedelta(hours=4),
                                        now=H0 + timedelta(hours=6), source=engine.SLA_SOURCE)
    assert not result.firing and not result.pending and _rows(db) == []


@pytest.mark.parametrize("op, value", [("!=", float("nan")), (">", float("nan")), ("<", float("nan"))])
def test_nan_samples_never_hold(op, value):
    from metrics_pipeline.lib.alerts.evaluate import holds

    ts = np.arange(10, dtype=np.int64) * 1_000_000_000
    found = holds(ts, np.full(10, value), op=op, threshold=0.0, hold=timedelta(0), max_gap=timedelta(seconds=2))
    assert found == []
