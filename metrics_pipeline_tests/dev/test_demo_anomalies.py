"""`make dev`'s local CloudWatch gets an anomaly now and then, and the detector flags it (SPEC §11, §12)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import numpy as np

from metrics_pipeline.dev import demo_cloudwatch as demo
from metrics_pipeline.lib import anomalies
from metrics_pipeline.lib.anomalies import scores
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig
from metrics_pipeline.lib.cloudwatch.config import parse_config

START = datetime(2026, 12, 1, tzinfo=timezone.utc)
DAYS = 16


def _five_minute_series(start: datetime, days: int) -> dict[tuple[str, str], np.ndarray]:
    """The demo's datapoints of [start, start + days), as rollup_5m's averages would be."""
    rng = random.Random(5)
    minutes: dict[tuple[str, str], list[float]] = {}
    ts = start
    while ts < start + timedelta(days=days):
        for datums in demo._datums(ts, rng).values():
            for d in datums:
                minutes.setdefault((d["MetricName"], d["Dimensions"][0]["Value"]), []).append(d["Value"])
        ts += timedelta(minutes=1)
    return {key: np.asarray(v).reshape(-1, 5).mean(axis=1) for key, v in minutes.items()}


def _flagged(values: np.ndarray, times: np.ndarray, config: AnomaliesConfig) -> np.ndarray:
    """The buckets the pipeline would flag (lib/anomalies/scores.py's rule) on one whole series."""
    s = anomalies.score_series(times, values, scores.DETECTOR)
    moved = np.abs(values - s.expected) >= config.min_change * np.maximum(np.abs(values), np.abs(s.expected))
    past_warm_up = times >= times[0] + config.warm_up.total_seconds()
    return np.flatnonzero((s.score >= config.threshold) & moved & past_warm_up)


def test_each_day_has_an_event_at_a_changing_time_and_each_week_a_missing_peak():
    plans = [demo.anomaly_plan(date(2026, 12, 1) + timedelta(days=d)) for d in range(28)]
    events = [e for p in plans for e in p.events]
    assert len(events) == 28 and len({e.start.time() for e in events}) == 28
    assert all(e.start.date() == e.end.date() and not e.instance.startswith("i-0busy") for e in events)
    # a given instance gets a given kind of event every 15 days; a database misses its peak every 14
    assert len({(e.kind, e.instance) for e in events[:15]}) == 15
    assert [p.missing_peak for p in plans if p.missing_peak] == ["analytics-db", "orders-db", "analytics-db",
                                                                 "orders-db"]
    assert demo.anomaly_plan(date(2026, 12, 3)) == demo.anomaly_plan(date(2026, 12, 3))  # seeded and fed alike


def test_the_demo_seeds_three_days_and_its_catch_up_loads_them_all():
    assert demo.HISTORY == timedelta(days=3)
    config = parse_config(demo.demo_config("http://127.0.0.1:1"))
    assert config.catchup_hours == 72


def test_the_detector_flags_most_demo_events_and_little_else():
    config = AnomaliesConfig()
    series = _five_minute_series(START, DAYS)
    times = START.timestamp() + 300 * np.arange(DAYS * 288)
    flagged = {key: times[_flagged(values, times, config)] for key, values in series.items()}
    # values stay valid for every check of the source
    assert all(v.min() >= 0 for v in series.values())
    assert all(v.max() <= 100 for (metric, _), v in series.items() if metric == "CPUUtilization")
    # events after the first three days (the history make dev seeds) are flagged within 20 minutes
    events, found = [], []
    for d in range(3, DAYS):
        plan = demo.anomaly_plan((START + timedelta(days=d)).date())
        for e in plan.events:
            metrics = ("NetworkIn", "NetworkOut") if e.kind == "traffic_collapse" else ("CPUUtilization",)
            at = e.start.timestamp() // 300 * 300  # the bucket the event starts in
            hit = any(((flagged[(m, e.instance)] >= at) & (flagged[(m, e.instance)] <= at + 1200)).any()
                      for m in metrics)
            events.append(e)
            found.append(hit)
        if plan.missing_peak:
            at = (START + timedelta(days=d, hours=demo.PEAK_HOURS[0])).timestamp()
            hits = flagged[("DatabaseConnections", plan.missing_peak)]
            events.append(plan.missing_peak)
            found.append(bool(((hits >= at) & (hits <= at + 1200)).any()))
    assert sum(found) >= 0.6 * len(events), list(zip(events, found))
    # and what is flagged is mostly those events: few flags per series and day otherwise
    all_flags = sum(len(v) for v in flagged.values())
    assert all_flags <= 3 * len(events) + DAYS


def test_make_dev_scores_one_statistic_per_demo_cloudwatch_metric_unless_you_configured_anomalies(tmp_path, monkeypatch):
    from metrics_pipeline.dev.devserver import _demo_anomalies_config
    from metrics_pipeline.lib.anomalies import config as anomaly_config

    monkeypatch.setenv("METRICS_PIPELINE_HOME", str(tmp_path))
    monkeypatch.delenv(anomaly_config.CONFIG_ENV, raising=False)
    monkeypatch.setattr(anomaly_config, "default_path", lambda: tmp_path / "absent.yaml")
    env: dict[str, str] = {}
    _demo_anomalies_config(env)
    config = anomaly_config.load_config(env[anomaly_config.CONFIG_ENV])
    fields = {"source": "cloudwatch", "metric": "aws_ec2_cpuutilization", "resource": "i-1"}
    assert config.selects({**fields, "statistic": "Average"}) and not config.selects({**fields, "statistic": "Maximum"})
    monkeypatch.setenv(anomaly_config.CONFIG_ENV, "/etc/yours.yaml")
    untouched: dict[str, str] = {}
    _demo_anomalies_config(untouched)
    assert untouched == {}
