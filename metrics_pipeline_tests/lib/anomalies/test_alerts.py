"""lib/anomalies/alerts.py: episodes from stored scores become `AnomalyDetected` rows of the `alerts` table
(the engine's upsert and delete), with the band a person reads, severity from score and persistence,
resolution when the scores calm down, and no duplicates whatever the order or repetition of runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from metrics_pipeline.lib.anomalies import alerts
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig, Mute
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.anomalies import SCHEMA, add_series, put_scores

H = timedelta(hours=1)
DAY = datetime(2026, 11, 20, tzinfo=timezone.utc)
NOW = DAY + timedelta(days=2)
CALM = 0.05


def _evaluate(dsn, hour: datetime, config=AnomaliesConfig(), now=NOW):
    return alerts.evaluate_and_record(Warehouse(dsn), config, hour, hour + H, now=now, run_id="r1",
                                      asset_key="anomaly_scores", partition_key=hour.strftime("%Y-%m-%d-%H:%M"))


def _alerts(db) -> list[tuple]:
    return db.execute(f"SELECT alert_id, alertname, severity, state, starts_at, ends_at, labels ->> 'resource', "
                      f"annotations ->> 'band' FROM {SCHEMA}.alerts ORDER BY starts_at, severity").fetchall()


@pytest.fixture
def shifted(db):
    """A series calm for 3 hours, then unusual for 50 minutes (very: surprise 1.0), then calm again."""
    sid = add_series(db, "aws_ec2_cpuutilization", "i-7", labels={"statistic": "Average", "tenant": "acme"})
    surprise = np.full(8 * 12, CALM)
    surprise[36:46] = 1.0  # 03:00 .. 03:50
    put_scores(db, sid, DAY, surprise)
    return sid


def test_an_episode_fires_as_warning_at_its_start_then_critical_once_it_lasted_and_resolves(warehouse_dsn, db, shifted):
    result, seen = _evaluate(warehouse_dsn, DAY + 3 * H)
    assert {o.rule.severity for o in result.firing} == {"warning", "critical"} and len(seen) == 1
    rows = _alerts(db)
    start, end = DAY + 3 * H, DAY + 3 * H + timedelta(minutes=50)
    assert [r[1:] for r in rows] == [
        ("AnomalyDetected", "warning", "resolved", start, end, "i-7", "expected 20–35 %, saw 92 %"),
        ("AnomalyDetected", "critical", "resolved", start + timedelta(minutes=30), end, "i-7",
         "expected 20–35 %, saw 92 %")]
    annotations, labels = db.execute(f"SELECT annotations, labels FROM {SCHEMA}.alerts LIMIT 1").fetchone()
    assert annotations["summary"] == "aws_ec2_cpuutilization on i-7 (Average): expected 20–35 %, saw 92 %"
    assert labels["series_id"] == str(shifted) and labels["tenant"] == "acme" and labels["statistic"] == "Average"


def test_every_hour_evaluated_in_any_order_and_again_leaves_the_same_rows(warehouse_dsn, db, shifted):
    order = [5, 3, 2, 4, 3, 7, 0, 4, 1, 6, 3]
    for i in order:
        _evaluate(warehouse_dsn, DAY + i * H)
    rows = _alerts(db)
    assert len(rows) == 2
    for i in reversed(order):
        _evaluate(warehouse_dsn, DAY + i * H)
    assert _alerts(db) == rows  # same ids: updated in place, never duplicated


def test_an_episode_reaching_the_newest_scores_is_firing_and_resolves_when_they_calm_down(warehouse_dsn, db):
    sid = add_series(db, "host_cpu_percent", "web-1", source="host", labels={"host": "web-1"})
    put_scores(db, sid, DAY, np.r_[np.full(24, CALM), np.full(6, 0.8)])  # unusual from 02:00 to the last bucket
    now = DAY + 2 * H + timedelta(minutes=40)
    _evaluate(warehouse_dsn, DAY + 2 * H, now=now)
    assert [(r[2], r[3], r[5]) for r in _alerts(db)] == [("warning", "firing", None)]
    put_scores(db, sid, DAY + 2 * H + timedelta(minutes=30), np.full(6, CALM))  # the next buckets are calm
    _evaluate(warehouse_dsn, DAY + 2 * H, now=now + H)
    assert [(r[2], r[3], r[5]) for r in _alerts(db)] == [("warning", "resolved", DAY + 2 * H + timedelta(minutes=30))]


def test_an_unusual_run_without_a_flagged_bucket_raises_nothing(warehouse_dsn, db):
    """A second surge within the day that is no more surprising than the first: the detector does not
    fire again (its score stays halved), and neither does the alert."""
    sid = add_series(db, "host_cpu_percent", "web-2", source="host")
    surprise = np.full(48, CALM)
    surprise[10:14] = 0.9
    put_scores(db, sid, DAY, surprise, score=np.where(surprise > 0.5, 0.45, CALM / 2))
    result, _ = _evaluate(warehouse_dsn, DAY)
    assert not result.firing and _alerts(db) == []


def test_minimum_duration_keeps_a_short_episode_pending_and_fires_a_long_one_late(warehouse_dsn, db):
    spike = add_series(db, "host_cpu_percent", "a", source="host")
    long = add_series(db, "host_cpu_percent", "b", source="host")
    short_run, long_run = np.full(36, CALM), np.full(36, CALM)
    short_run[12:14] = 0.7  # 10 minutes
    long_run[12:30] = 0.7  # 90 minutes
    put_scores(db, spike, DAY, short_run)
    put_scores(db, long, DAY, long_run)
    config = AnomaliesConfig(min_duration="30m")
    _evaluate(warehouse_dsn, DAY + H, config)
    assert [(r[6], r[2], r[4]) for r in _alerts(db)] == [("b", "warning", DAY + H + timedelta(minutes=30))]


def test_a_muted_series_raises_nothing_and_its_alerts_go(warehouse_dsn, db, shifted):
    _evaluate(warehouse_dsn, DAY + 3 * H)
    assert len(_alerts(db)) == 2
    muted = AnomaliesConfig(mutes=[Mute(match={"resource": "i-7"}, reason="load test")])
    _evaluate(warehouse_dsn, DAY + 3 * H, muted)
    assert _alerts(db) == []
    expired = AnomaliesConfig(mutes=[Mute(match={"tenant": "acme"}, until=DAY + 2 * H)])
    _evaluate(warehouse_dsn, DAY + 3 * H, expired)
    assert len(_alerts(db)) == 2


def test_alerts_of_a_series_no_longer_scored_go_with_it(warehouse_dsn, db, shifted):
    _evaluate(warehouse_dsn, DAY + 3 * H)
    assert len(_alerts(db)) == 2
    _evaluate(warehouse_dsn, DAY + 3 * H, AnomaliesConfig(sources=["host"]))
    assert _alerts(db) == []
