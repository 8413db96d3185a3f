"""`anomaly_scores`, its `anomalies` check and `anomaly_rescore_sensor`, end to end on a real PostgreSQL.

Four days of minute data of three series are loaded through the real loader and rolled up; the last
32 hours are scored in one range run of the asset with its check (the first of them learning from the
days before). A level shift in the last 90 minutes and a
missing afternoon peak become `AnomalyDetected` alerts with their band, the first still firing (it
reaches the newest data) and delivered to a real Alertmanager; a constant series raises nothing; a
re-run changes no alert; a broken `config/anomalies.yaml` fails the asset naming the file and the key.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
import requests

from metrics_pipeline.defs.anomalies.assets import anomaly_scores
from metrics_pipeline.defs.anomalies.checks import anomalies_check
from metrics_pipeline.defs.anomalies.sensors import RESCORE, anomaly_rescore_sensor
from metrics_pipeline.defs.partitions import hour_key, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.alerts import delivery
from metrics_pipeline.lib.anomalies import config as anomaly_config
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

H = timedelta(hours=1)
END = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
START = END - timedelta(days=4)
SHIFT = END - timedelta(minutes=90)
SCORED = 32  # hours: the most recent afternoon (11:00-19:00 UTC) is always inside them, whatever the time
#: the most recent 11:00-19:00 UTC wholly before END
PEAK_DAY = (END - timedelta(hours=19)).replace(hour=0)
PEAK = (PEAK_DAY + timedelta(hours=11), PEAK_DAY + timedelta(hours=19))


def _load(dsn: str) -> None:
    ts = pd.date_range(START, END, freq="60s", inclusive="left")
    hours = (ts - ts.normalize()).total_seconds().to_numpy() / 3600
    daily = 0.5 + 0.5 * np.sin((hours - 9) / 24 * 2 * math.pi)
    rng = np.random.default_rng(20)
    cpu = 20 + 40 * daily + rng.normal(0, 2, len(ts))
    cpu[ts >= SHIFT] += 35
    connections = 20 + 80 * daily + rng.normal(0, 3, len(ts))
    missing = (ts >= PEAK[0]) & (ts < PEAK[1])
    connections[missing] = 24 + rng.normal(0, 3, missing.sum())
    base = {"namespace": "AWS/EC2", "statistic": "Average", "account": "prod", "region": "eu-west-1"}
    frame = points_frame([
        {"metric": "aws_ec2_cpuutilization", "resource": "i-shift", "unit": "percent",
         "labels": {**base, "InstanceId": "i-shift", "tenant": "acme"}, "ts": ts, "value": np.clip(cpu, 0, 100)},
        {"metric": "aws_rds_databaseconnections", "resource": "db-1", "unit": "count",
         "labels": {**base, "namespace": "AWS/RDS", "DBInstanceIdentifier": "db-1", "tenant": "boreal"},
         "ts": ts, "value": connections},
        {"metric": "aws_ec2_cpuutilization", "resource": "i-flat", "unit": "percent",
         "labels": {**base, "InstanceId": "i-flat", "tenant": "acme"}, "ts": ts, "value": np.full(len(ts), 55.0)},
    ])
    loader.load_points(Warehouse(dsn), frame, source="cloudwatch", start=START, end=END)
    rollups.refresh(Warehouse(dsn), ["rollup_5m", "rollup_1h"], START, END)


def _range(first: datetime, last: datetime) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": hour_key(first), "dagster/asset_partition_range_end": hour_key(last)}


def _alerts(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT alert_id, severity, state, starts_at, ends_at, labels ->> 'resource', "
                            "annotations ->> 'band', partition_key FROM metrics.alerts "
                            "WHERE alertname = 'AnomalyDetected' ORDER BY starts_at, severity").fetchall()


@pytest.fixture
def scored(warehouse_dsn):
    _load(warehouse_dsn)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize([anomaly_scores, anomalies_check], instance=instance, tags=_range(END - SCORED * H, END - H),
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    return result, instance


def test_a_level_shift_and_a_missing_peak_become_alerts_with_their_band(warehouse_dsn, scored, alertmanager):
    result, _ = scored
    assert result.success
    assert len(result.get_asset_materialization_events()) == SCORED
    checks = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert set(checks) == {hour_key(END - i * H) for i in range(1, SCORED + 1)}
    assert not checks[hour_key(END - H)].passed  # the shift is firing in the last hour
    with psycopg.connect(warehouse_dsn) as conn:
        rows, series, flagged_flat = conn.execute(
            "SELECT count(*), count(DISTINCT series_id), count(*) FILTER (WHERE flagged AND resource = 'i-flat') "
            "FROM metrics.v_anomalies").fetchone()
    assert rows == 3 * SCORED * 12 and series == 3 and flagged_flat == 0
    found = _alerts(warehouse_dsn)
    assert {r[5] for r in found} == {"i-shift", "db-1"}  # the constant series raised nothing
    shift = [r for r in found if r[5] == "i-shift"]
    assert shift[0][1] == "warning" and SHIFT <= shift[0][3] <= SHIFT + timedelta(minutes=15)
    assert all(r[2] == "firing" and r[4] is None for r in shift)  # reaches the newest scores: still firing
    assert shift[0][6].startswith("expected ") and shift[0][6].endswith(" %") and ", saw " in shift[0][6]
    peak = [r for r in found if r[5] == "db-1"]
    assert peak and all(PEAK[0] <= r[3] < PEAK[1] for r in peak), (peak, PEAK)

    # Delivered through the existing pipeline to a real Alertmanager.
    sent = delivery.deliver(Warehouse(warehouse_dsn), alertmanager_url=alertmanager)
    assert sent.failed == 0 and sent.sent >= len(found)
    active = requests.get(f"{alertmanager}/api/v2/alerts", params={"filter": 'alertname="AnomalyDetected"'},
                          timeout=10).json()
    assert "i-shift" in {a["labels"]["resource"] for a in active}  # db-1's too, when its afternoon just ended
    assert all(a["annotations"]["band"].startswith("expected ") for a in active)


def test_rerunning_hours_changes_no_alert_and_no_score(warehouse_dsn, scored):
    result, instance = scored
    with psycopg.connect(warehouse_dsn) as conn:
        before = conn.execute("SELECT series_id, bucket, score, surprise, flagged FROM metrics.anomaly_scores "
                              "ORDER BY 1, 2").fetchall()
    alerts_before = [r[:7] for r in _alerts(warehouse_dsn)]
    again = dg.materialize([anomaly_scores, anomalies_check], instance=instance, tags=_range(END - 5 * H, END - H),
                           resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)})
    assert again.success
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT series_id, bucket, score, surprise, flagged FROM metrics.anomaly_scores "
                            "ORDER BY 1, 2").fetchall() == before
    assert [r[:7] for r in _alerts(warehouse_dsn)] == alerts_before  # same ids, states and ends


def test_late_data_makes_later_hours_stale_and_the_sensor_asks_to_rescore_them_in_order(warehouse_dsn, scored):
    _, instance = scored
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    with psycopg.connect(warehouse_dsn) as conn:  # a late datapoint changes a bucket 10 hours back
        conn.execute("UPDATE metrics.rollup_5m SET avg = avg + 30 WHERE bucket = %s", (END - 10 * H,))
    late = dg.materialize([anomaly_scores], instance=instance, partition_key=hour_key(END - 10 * H), resources=resources)
    assert late.success
    context = dg.build_sensor_context(instance=instance, resources=resources)
    request = anomaly_rescore_sensor(context)
    assert isinstance(request, dg.RunRequest) and request.tags["metrics_pipeline/reason"] == RESCORE
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        hour_key(END - 9 * H), hour_key(END - H))
    # One re-scoring run at a time: while one is queued or running, ticks wait for it.
    from dagster._core.storage.dagster_run import DagsterRun

    busy = dg.DagsterInstance.ephemeral()
    busy.add_run(DagsterRun(job_name="__ASSET_JOB", run_id="in-flight", status=dg.DagsterRunStatus.STARTED,
                            tags={"metrics_pipeline/reason": RESCORE}))
    waiting = anomaly_rescore_sensor(dg.build_sensor_context(instance=busy, resources=resources))
    assert isinstance(waiting, dg.SkipReason) and "in-flight" in waiting.skip_message
    rerun = dg.materialize([anomaly_scores, anomalies_check], instance=instance, tags=dict(request.tags),
                           resources=resources)
    assert rerun.success
    assert isinstance(anomaly_rescore_sensor(dg.build_sensor_context(instance=instance, resources=resources)),
                      dg.SkipReason)


def test_a_broken_configuration_fails_the_asset_naming_the_file_and_key(warehouse_dsn, tmp_path, monkeypatch):
    path = tmp_path / "anomalies.yaml"
    path.write_text("threshold: 3\nmutes:\n  - reason: no matcher\n")
    monkeypatch.setenv(anomaly_config.CONFIG_ENV, str(path))
    result = dg.materialize([anomaly_scores], partition_key=hour_key(END - H), raise_on_error=False,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)})
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.cause.message
    assert str(path) in message and "threshold: Input should be less than or equal to 1" in message
    assert "mutes[0].match: Field required" in message


def test_the_asset_follows_rollup_5m_and_backfills_a_week_per_run():
    spec = anomaly_scores.specs_by_key[dg.AssetKey("anomaly_scores")]
    assert {d.asset_key for d in spec.deps} == {dg.AssetKey("rollup_5m")}
    assert anomaly_scores.partitions_def == hourly_partitions
    assert anomaly_scores.backfill_policy.max_partitions_per_run == 24 * 7
    assert spec.automation_condition is not None and spec.group_name == "anomalies"
