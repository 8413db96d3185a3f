"""lib/anomalies/scores.py on a real PostgreSQL: an hour resumes from the state stored at its start, so
scoring hour by hour, re-running, running hours in any order (and then re-scoring what became stale)
all give the rows of one in-order pass, which are the detector's own scores of the whole series."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib import anomalies
from metrics_pipeline.lib.anomalies import scores
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.anomalies import ORIGIN, SCHEMA, add_series, daily, put_buckets

H = timedelta(hours=1)
PER_HOUR = 12
CONFIG = AnomaliesConfig()
COLUMNS = "series_id, bucket, value, expected, lower, upper, score, surprise, flagged, description"


def _rows(conn: psycopg.Connection, start: datetime | None = None, end: datetime | None = None) -> list[tuple]:
    where = "WHERE bucket >= %s AND bucket < %s" if start else ""
    return conn.execute(f"SELECT {COLUMNS} FROM {SCHEMA}.anomaly_scores {where} ORDER BY series_id, bucket",
                        (start, end) if start else None).fetchall()


def _score(dsn: str, start: datetime, end: datetime, config: AnomaliesConfig = CONFIG, now: datetime | None = None):
    return scores.score_window(Warehouse(dsn), start, end, config, now=now or end + timedelta(days=30))


def _rescore_stale(dsn: str) -> int:
    """What the anomaly_rescore_sensor does, until nothing is stale: returns the runs it took."""
    runs = 0
    while (stale := scores.stale(Warehouse(dsn))) is not None:
        _score(dsn, stale.first, stale.last + H)
        runs += 1
        assert runs < 50
    return runs


@pytest.fixture
def two_series(db):
    """Two CPU-like series with a daily cycle, from ORIGIN for a day and a half; one has a gap."""
    a = add_series(db, "aws_ec2_cpuutilization", "i-1", labels={"statistic": "Average", "tenant": "acme"})
    b = add_series(db, "host_cpu_percent", "web-1", source="host", labels={"host": "web-1"})
    n = 36 * PER_HOUR
    put_buckets(db, a, ORIGIN, daily(n, seed=1))
    values = daily(n, seed=2, level=30)
    values[200:230] = np.nan  # the host was down for 2.5 hours
    put_buckets(db, b, ORIGIN, values)
    return a, b, n


def test_scoring_hour_by_hour_gives_the_detectors_scores_of_the_whole_series(warehouse_dsn, db, two_series):
    a, b, n = two_series
    start = ORIGIN + 30 * H
    results = _score(warehouse_dsn, start, start + 6 * H)
    assert [r.series for r in results] == [2] * 6 and all(r.rows == 24 for r in results)
    # The first hour learnt from the 30 hours before it (no state yet); the others resumed.
    assert results[0].started == 2 and all(r.resumed == 2 for r in results[1:])
    for sid, seed, level in ((a, 1, 40.0), (b, 2, 30.0)):
        values = daily(n, seed=seed, level=level)
        times = ORIGIN.timestamp() + 300 * np.arange(n)
        if sid == b:
            keep = np.ones(n, dtype=bool)
            keep[200:230] = False
            values, times = values[keep], times[keep]
        whole = anomalies.score_series(times, values, scores.DETECTOR)
        rows = db.execute(f"SELECT extract(epoch FROM bucket), score, surprise, expected, lower, upper "
                          f"FROM {SCHEMA}.anomaly_scores WHERE series_id = %s ORDER BY bucket", (sid,)).fetchall()
        sel = (times >= start.timestamp()) & (times < (start + 6 * H).timestamp())
        assert [float(r[0]) for r in rows] == times[sel].tolist()
        for col, field in enumerate(("score", "surprise", "expected", "lower", "upper"), start=1):
            got = np.array([np.nan if r[col] is None else r[col] for r in rows])
            assert np.array_equal(got, getattr(whole, field)[sel], equal_nan=True), field


def test_a_rerun_gives_the_same_rows_and_states_and_marks_nothing_stale(warehouse_dsn, db, two_series):
    start = ORIGIN + 30 * H
    _score(warehouse_dsn, start, start + 4 * H)
    before = _rows(db)
    states = db.execute(f"SELECT series_id, hour, digest FROM {SCHEMA}.anomaly_state ORDER BY 1, 2").fetchall()
    again = _score(warehouse_dsn, start + H, start + 3 * H)
    assert all(r.states_changed == 0 and r.marked_stale is None for r in again)
    assert _rows(db) == before
    assert db.execute(f"SELECT series_id, hour, digest FROM {SCHEMA}.anomaly_state ORDER BY 1, 2").fetchall() == states
    assert scores.stale(Warehouse(warehouse_dsn)) is None


def test_late_data_in_an_hour_makes_the_later_hours_stale_and_rescoring_them_converges(warehouse_dsn, db, two_series):
    a, b, n = two_series
    start = ORIGIN + 30 * H
    _score(warehouse_dsn, start, start + 5 * H)
    # Late data: a bucket of the second hour changes. Re-scoring that hour changes the state it leaves.
    put_buckets(db, a, start + H + timedelta(minutes=20), [95.0])
    (late,) = _score(warehouse_dsn, start + H, start + 2 * H)
    assert late.states_changed == 1 and late.marked_stale == start + 2 * H
    stale = scores.stale(Warehouse(warehouse_dsn))
    assert (stale.first, stale.last) == (start + 2 * H, start + 4 * H)
    assert _rescore_stale(warehouse_dsn) == 1
    # The same rows as scoring everything in order with the late data there from the start.
    got = _rows(db)
    db.execute(f"TRUNCATE {SCHEMA}.anomaly_scores, {SCHEMA}.anomaly_state, {SCHEMA}.anomaly_hours")
    _score(warehouse_dsn, start, start + 5 * H)
    assert _rows(db) == got


def test_the_in_progress_hour_is_scored_up_to_its_last_complete_bucket(warehouse_dsn, db, two_series):
    hour = ORIGIN + 30 * H
    (partial,) = _score(warehouse_dsn, hour, hour + H, now=hour + timedelta(minutes=27))
    assert partial.rows == 2 * 5  # at :27, buckets :00 to :20 are complete, :25 is not
    (closed,) = _score(warehouse_dsn, hour, hour + H, now=hour + H)
    assert closed.rows == 2 * 12


def test_series_are_chosen_by_the_configuration(warehouse_dsn, db, two_series):
    a, b, _ = two_series
    hour = ORIGIN + 30 * H
    _score(warehouse_dsn, hour, hour + H, AnomaliesConfig(sources=["host"]))
    assert {r[0] for r in _rows(db)} == {b}
    _score(warehouse_dsn, hour, hour + H, AnomaliesConfig(exclude=[{"host": "web-.*"}]))
    assert {r[0] for r in _rows(db)} == {a}  # a window replace: b's rows of the hour are gone
    _score(warehouse_dsn, hour, hour + H, AnomaliesConfig(metrics=["aws_.*"], match={"statistic": "Average"}))
    assert {r[0] for r in _rows(db)} == {a}
    assert _score(warehouse_dsn, hour, hour + H, AnomaliesConfig(enabled=False))[0].skipped


def test_an_hour_whose_state_expired_keeps_its_rows(warehouse_dsn, db, two_series):
    start = ORIGIN + 30 * H
    _score(warehouse_dsn, start, start + 3 * H)
    before = _rows(db)
    db.execute(f"DELETE FROM {SCHEMA}.anomaly_state WHERE hour <= %s", (start + H,))  # as retention would
    (rerun,) = _score(warehouse_dsn, start + H, start + 2 * H)
    assert rerun.kept == 2 and rerun.rows == 0
    assert _rows(db) == before


def test_the_first_hours_of_history_are_recomputed_in_order_even_after_their_states_expired(warehouse_dsn, db,
                                                                                          two_series):
    _score(warehouse_dsn, ORIGIN, ORIGIN + 6 * H)
    before = _rows(db)
    db.execute(f"TRUNCATE {SCHEMA}.anomaly_state")  # everything expired
    first, *rest = _score(warehouse_dsn, ORIGIN, ORIGIN + 6 * H)  # a backfill from the first hour
    assert first.kept == 0 and first.started == 2 and all(r.resumed == 2 for r in rest)
    assert _rows(db) == before


FLAT = {
    "constant": lambda n, rng: np.full(n, 55.0),
    "filling slowly": lambda n, rng: 55 + 0.001 * np.arange(n),  # a disk, 0.29 % a day
    "filling, rounded": lambda n, rng: np.round(55 + 0.001 * np.arange(n), 1),
    "rare last-digit jitter": lambda n, rng: 62 + 0.01 * (rng.random(n) < 0.02),
    "tiny noise": lambda n, rng: 62 + rng.normal(0, 0.01, n),
}


@pytest.mark.parametrize("kind", FLAT)
def test_flat_and_constant_series_are_never_flagged(warehouse_dsn, db, kind):
    """The detector finds any move of a series that never moves surprising (a constant's first change
    is its rarest event): `min_change` keeps such moves, however rare, from being anomalies."""
    sid = add_series(db, "host_filesystem_used_percent", "db-1", source="host")
    n = 5 * 24 * PER_HOUR
    put_buckets(db, sid, ORIGIN, FLAT[kind](n, np.random.default_rng(3)))
    _score(warehouse_dsn, ORIGIN, ORIGIN + 5 * 24 * H)
    rows, flagged = db.execute(f"SELECT count(*), count(*) FILTER (WHERE flagged) FROM {SCHEMA}.anomaly_scores"
                               ).fetchone()
    assert rows == n and flagged == 0


def test_a_level_shift_is_flagged_with_a_readable_band(warehouse_dsn, db):
    sid = add_series(db, "aws_ec2_cpuutilization", "i-9", labels={"statistic": "Average"})
    n = 4 * 24 * PER_HOUR
    values = daily(n, seed=5, noise=1.5)
    shift = 3 * 24 * PER_HOUR + 10 * PER_HOUR  # day 4, 10:00
    values[shift:shift + 2 * PER_HOUR] += 35
    put_buckets(db, sid, ORIGIN, values)
    _score(warehouse_dsn, ORIGIN + 72 * H, ORIGIN + 96 * H)
    rows = db.execute(f"SELECT bucket, score, description FROM {SCHEMA}.anomaly_scores WHERE flagged ORDER BY bucket"
                      ).fetchall()
    assert rows, "the level shift was not flagged"
    first = rows[0]
    at = ORIGIN + timedelta(minutes=5 * shift)
    assert at <= first[0] <= at + timedelta(minutes=15)
    assert first[2].startswith("expected ") and first[2].endswith(" %") and ", saw " in first[2]


def test_outside_band_flags_only_values_outside_the_band_and_descriptions_say_which(warehouse_dsn, db):
    sid = add_series(db, "aws_ec2_cpuutilization", "i-8")
    n = 4 * 24 * PER_HOUR
    values = daily(n, seed=11, noise=1.5)
    values[3 * 24 * PER_HOUR + 10 * PER_HOUR:3 * 24 * PER_HOUR + 12 * PER_HOUR] += 35
    put_buckets(db, sid, ORIGIN, values)
    _score(warehouse_dsn, ORIGIN + 72 * H, ORIGIN + 96 * H)
    every = db.execute(f"SELECT bucket, value < lower OR value > upper, description FROM {SCHEMA}.anomaly_scores "
                       "WHERE flagged ORDER BY 1").fetchall()
    assert every and all(d.endswith("not this one)") != outside for _, outside, d in every)
    _score(warehouse_dsn, ORIGIN + 72 * H, ORIGIN + 96 * H, AnomaliesConfig(outside_band=True))
    plain = db.execute(f"SELECT bucket, value < lower OR value > upper FROM {SCHEMA}.anomaly_scores WHERE flagged "
                       "ORDER BY 1").fetchall()
    assert plain and all(outside for _, outside in plain) and {b for b, _ in plain} <= {b for b, _, _ in every}


# ------------------------------------------------------------------------------ any order, re-runs

HOURS = 6


@pytest.fixture(scope="module")
def order_db(pg_server, migrated_template):
    """A warehouse with three series for the property test (one starts in the middle of the range and
    one has a gap), reset between examples."""
    name = pg_server.create_database(template=migrated_template)
    dsn = pg_server.dsn(name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        a = add_series(conn, "aws_ec2_cpuutilization", "i-1")
        b = add_series(conn, "host_cpu_percent", "web-1", source="host")
        c = add_series(conn, "orders_processed", "shop", source="custom", unit="count")
        n = (24 + HOURS) * PER_HOUR
        put_buckets(conn, a, ORIGIN, daily(n, seed=7))
        values = daily(n, seed=8)
        values[24 * PER_HOUR + 20: 24 * PER_HOUR + 40] = np.nan
        put_buckets(conn, b, ORIGIN, values)
        put_buckets(conn, c, ORIGIN + 26 * H + timedelta(minutes=35), daily(3 * PER_HOUR, seed=9, level=200))
        _score(dsn, ORIGIN + 24 * H, ORIGIN + (24 + HOURS) * H)
        in_order = _rows(conn)
    yield dsn, in_order
    pg_server.drop_database(name)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(0, HOURS - 1), min_size=1, max_size=10).map(lambda xs: xs + list(range(HOURS))).flatmap(
    st.permutations))
def test_any_run_order_with_reruns_then_rescoring_the_stale_hours_gives_the_in_order_rows(order_db, runs):
    dsn, in_order = order_db
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.anomaly_scores, {SCHEMA}.anomaly_state, {SCHEMA}.anomaly_hours")
        for i in runs:
            hour = ORIGIN + (24 + i) * H
            _score(dsn, hour, hour + H)
        _rescore_stale(dsn)
        assert _rows(conn) == in_order


def test_states_are_kept_three_days_and_scores_as_long_as_the_rollups(warehouse_dsn, db, two_series):
    from metrics_pipeline.lib.warehouse import retention

    start = ORIGIN + 30 * H
    _score(warehouse_dsn, start, start + 2 * H)
    # stored as they are (already compressed): PostgreSQL does not try to compress them again
    storage = db.execute("SELECT DISTINCT a.attstorage FROM pg_attribute a JOIN pg_inherits i ON i.inhrelid = a.attrelid "
                         "WHERE i.inhparent = 'metrics.anomaly_state'::regclass AND a.attname = 'state'").fetchall()
    assert storage == [("e",)]
    dropped = retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=ORIGIN + timedelta(days=6))
    assert {d.table for d in dropped} >= {"anomaly_state"} and "anomaly_scores" not in {d.table for d in dropped}
    assert db.execute(f"SELECT count(*) FROM {SCHEMA}.anomaly_state").fetchone() == (0,)
    assert db.execute(f"SELECT count(*) FROM {SCHEMA}.anomaly_scores").fetchone() == (48,)
    dropped = retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=ORIGIN + timedelta(days=95))
    assert "anomaly_scores" in {d.table for d in dropped}
    assert db.execute(f"SELECT count(*) FROM {SCHEMA}.anomaly_scores").fetchone() == (0,)
