"""Metric rules over the warehouse: the SPEC scenario, partition boundaries, re-runs, sources."""

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from metrics_pipeline.lib.alerts import engine
from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

H = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)
NOW = H + timedelta(days=1)
CPU_RULES = [r for r in DEFAULT_RULES if r.name == "CpuHigh"]


def _cpu(dsn, start, segments, host="web-1", source="host", metric="host_cpu_percent"):
    """1-second CPU samples from `start`: (seconds, value) segments; loads [hour of start, +2 h)."""
    values = np.concatenate([np.full(n, v, dtype=float) for n, v in segments])
    ts = pd.date_range(start, periods=len(values), freq="1s")
    frame = points_frame([{"metric": metric, "resource": host, "labels": {"host": host}, "unit": "percent",
                                  "ts": ts, "value": values}])
    window = start.replace(minute=0, second=0)
    loader.load_points(Warehouse(dsn), frame, source=source, start=window, end=window + timedelta(hours=2))


def _alerts(db):
    return db.execute(
        "SELECT alertname, severity, state, starts_at, ends_at, labels ->> 'resource', annotations ->> 'summary' "
        "FROM metrics.alerts ORDER BY severity DESC, starts_at"
    ).fetchall()


# CPU: 10 min at 50 %, 6 min at 85 %, then 2 min at 97 %, 5 min at 85 %, back to 40 %.
SCENARIO = [(600, 50.0), (360, 85.0), (120, 97.0), (300, 85.0), (600, 40.0)]


def test_cpu_rising_past_80_then_95_fires_warning_and_critical_and_both_resolve(warehouse_dsn, db):
    _cpu(warehouse_dsn, H, SCENARIO)
    result = engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="host",
                        run_id="run-1", asset_key="host_points", partition_key="2026-06-01-10:00")
    above_80 = H + timedelta(seconds=600)
    above_95 = H + timedelta(seconds=960)
    below_80 = H + timedelta(seconds=1380)
    assert _alerts(db) == [
        ("CpuHigh", "warning", "resolved", above_80 + timedelta(minutes=5), below_80, "web-1", "CPU above 80 % on web-1"),
        ("CpuHigh", "critical", "resolved", above_95 + timedelta(minutes=1), above_95 + timedelta(seconds=120),
         "web-1", "CPU above 95 % on web-1"),
    ]
    assert result.written == 2 and not result.pending
    row = db.execute("SELECT labels, annotations, run_id, partition_key FROM metrics.alerts LIMIT 1").fetchone()
    assert row[0]["host"] == "web-1" and row[0]["alertname"] == "CpuHigh" and row[0]["source"] == "host"
    assert row[1]["pending_since"] and "reached 97.0 %" in db.execute(
        "SELECT annotations ->> 'description' FROM metrics.alerts WHERE severity = 'critical'").fetchone()[0]
    assert row[2:] == ("run-1", "2026-06-01-10:00")


def test_a_hold_across_the_hour_boundary_is_one_alert_whichever_hour_is_evaluated(warehouse_dsn, db):
    start = H + timedelta(minutes=57)  # 85 % from 10:57 to 11:08
    _cpu(warehouse_dsn, start, [(60, 50.0), (660, 85.0), (300, 40.0)])
    expected = [("warning", start + timedelta(seconds=60 + 300), start + timedelta(seconds=720))]
    # Hour 10 sees the hold begin at 10:58 and reads on into hour 11 to see it fire at 11:03.
    first = engine.evaluate_and_record(Warehouse(warehouse_dsn), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="host")
    assert first.written == 1 and [(a[1], a[3], a[4]) for a in _alerts(db)] == expected
    engine.evaluate_and_record(Warehouse(warehouse_dsn), CPU_RULES, H + timedelta(hours=1), H + timedelta(hours=2), now=NOW, source="host")
    engine.evaluate_and_record(Warehouse(warehouse_dsn), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="host")
    assert [(a[1], a[3], a[4]) for a in _alerts(db)] == expected


def test_a_firing_alert_that_continues_into_the_next_hour_keeps_one_row(warehouse_dsn, db):
    start = H + timedelta(minutes=40)  # 85 % from 10:40 for 50 minutes
    values = np.concatenate([np.full(3000, 85.0), np.full(600, 40.0)])
    ts = pd.date_range(start, periods=len(values), freq="1s")
    hour_10 = ts < H + timedelta(hours=1)
    for part, (lo, hi) in ((hour_10, (H, H + timedelta(hours=1))), (~hour_10, (H + timedelta(hours=1), H + timedelta(hours=2)))):
        frame = points_frame([{"metric": "host_cpu_percent", "resource": "web-1", "labels": {"host": "web-1"},
                               "unit": "percent", "ts": ts[part], "value": values[part]}])
        loader.load_points(Warehouse(warehouse_dsn), frame, source="host", start=lo, end=hi)
        if lo == H:  # hour 11 not landed yet: the data edge is 11:00, and the hold reaches it
            engine.evaluate_and_record(Warehouse(warehouse_dsn), CPU_RULES, lo, hi, now=hi + timedelta(seconds=30), source="host")
            assert [(a[2], a[3], a[4]) for a in _alerts(db)] == [("firing", start + timedelta(minutes=5), None)]
    engine.evaluate_and_record(Warehouse(warehouse_dsn), CPU_RULES, H + timedelta(hours=1), H + timedelta(hours=2), now=NOW, source="host")
    assert [(a[2], a[3], a[4]) for a in _alerts(db)] == [
        ("resolved", start + timedelta(minutes=5), start + timedelta(seconds=3000))]


def test_re_running_a_window_is_idempotent_and_follows_changed_data(warehouse_dsn, db):
    window = (H, H + timedelta(hours=1))
    _cpu(warehouse_dsn, H, SCENARIO)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, *window, now=NOW, source="host")
    db.execute("UPDATE metrics.alerts SET last_sent_at = now()")
    before = _alerts(db)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, *window, now=NOW, source="host")
    assert _alerts(db) == before
    assert db.execute("SELECT count(*) FROM metrics.alerts WHERE last_sent_at IS NULL").fetchone() == (0,)
    # The source re-delivers the hour without the spike: the alerts of that hour go away.
    _cpu(warehouse_dsn, H, [(1980, 50.0)])
    removed = engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, *window, now=NOW, source="host")
    assert _alerts(db) == [] and removed.removed == 2


def test_each_source_evaluates_only_its_own_series(warehouse_dsn, db):
    _cpu(warehouse_dsn, H, SCENARIO, host="i-0abc", source="cloudwatch", metric="aws_ec2_cpuutilization")
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="cloudwatch")
    assert len(_alerts(db)) == 2
    # Evaluating the host source for the same hour neither sees nor deletes CloudWatch's alerts.
    host = engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="host")
    assert host.series == 0 and len(_alerts(db)) == 2


def test_the_in_progress_hour_keeps_a_hold_firing_until_data_says_otherwise(warehouse_dsn, db):
    _cpu(warehouse_dsn, H, [(60, 50.0), (420, 90.0)])  # still at 90 % when the data ends
    now = H + timedelta(seconds=481)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=now, source="host")
    assert [(a[2], a[4]) for a in _alerts(db)] == [("firing", None)]
    # Ten minutes later with no new sample: the series went silent, the alert resolves by absence.
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=now + timedelta(minutes=10),
               source="host")
    (alert,) = _alerts(db)
    assert alert[2] == "resolved" and alert[4] == H + timedelta(seconds=479 + 2.5)


@pytest.mark.parametrize("value, fires", [(80.0, False), (80.0001, True)])
def test_exactly_at_the_threshold_does_not_fire_a_greater_than_rule(warehouse_dsn, db, value, fires):
    _cpu(warehouse_dsn, H, [(400, value)])
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, H, H + timedelta(hours=1), now=NOW, source="host")
    assert bool(_alerts(db)) is fires


def test_sla_rules_fire_on_failure_rate_per_job_and_resolve_when_an_hour_is_healthy(warehouse_dsn, db):
    from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES as ALL

    sla_rules = [r for r in ALL if r.kind == "sla"]
    for hour, rate, breaches in ((0, 0.0, 0), (1, 0.25, 0), (2, 0.0, 0)):
        db.execute(
            """INSERT INTO metrics.sla_hourly (bucket, company, zone, source_system, object, runs, successes, failures,
                                               failure_rate, sla_breaches, sla_met)
               VALUES (%s, 'acme', '1-Raw', 'Zoho', 'Deals', 4, %s, %s, %s, %s, %s)""",
            (H + timedelta(hours=hour), 4 - int(rate * 4), int(rate * 4), rate, breaches, rate <= 0.05),
        )
    for hour in range(3):
        engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), sla_rules, H + timedelta(hours=hour), H + timedelta(hours=hour + 1),
                   now=NOW, source=engine.SLA_SOURCE)
    rows = db.execute("SELECT alertname, state, starts_at, ends_at, labels ->> 'company', labels ->> 'resource', "
                      "annotations ->> 'summary' FROM metrics.alerts").fetchall()
    assert rows == [("IngestionFailureRateHigh", "resolved", H + timedelta(hours=1), H + timedelta(hours=2), "acme",
                     "acme/1-Raw/Zoho/Deals", "ingestion failure rate above 5 % for acme/1-Raw/Zoho/Deals")]
