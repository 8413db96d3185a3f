import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import psycopg

from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.rollups.assets import hourly_rollups, rollup_1d
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

ROOT = Path(__file__).resolve().parents[3]
DAY = datetime(2026, 2, 3, tzinfo=timezone.utc)


def _load_day(dsn):
    ts = pd.date_range(DAY, DAY + timedelta(days=1), freq="10s", inclusive="left")
    frame = points_frame([
        {"metric": "host_cpu_percent", "resource": host, "labels": {"host": host}, "unit": "percent",
         "ts": ts, "value": np.linspace(0, 100, len(ts))}
        for host in ("web-1", "web-2")
    ])
    loader.load_points(Warehouse(dsn), frame, source="host", start=DAY, end=DAY + timedelta(days=1))


def _count(dsn, table):
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM metrics.{table}").fetchone()[0]


def test_a_day_of_hourly_partitions_materialises_in_one_run_then_the_daily_rollup(warehouse_dsn):
    _load_day(warehouse_dsn)
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    hours = hourly_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(DAY.strftime("%Y-%m-%d-%H:%M"), (DAY + timedelta(hours=23)).strftime("%Y-%m-%d-%H:%M"))
    )
    instance = dg.DagsterInstance.ephemeral()
    # A backfill-style run over the whole range: one run, one statement per tier.
    result = dg.materialize(
        [hourly_rollups], resources=resources, instance=instance,
        tags={"dagster/asset_partition_range_start": hours[0], "dagster/asset_partition_range_end": hours[-1]},
    )
    assert result.success
    assert _count(warehouse_dsn, "rollup_5m") == 2 * 288
    assert _count(warehouse_dsn, "rollup_1h") == 2 * 24
    assert _count(warehouse_dsn, "series_health_hourly") == 2 * 24
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"rollup_5m", "rollup_1h", "series_health_hourly"}
    daily = dg.materialize([rollup_1d], resources=resources, partition_key=DAY.strftime("%Y-%m-%d"), instance=instance)
    assert daily.success
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*), sum(count) FROM metrics.rollup_1d").fetchone() == (2, 2 * 8640)
        health = conn.execute(
            "SELECT min(completeness), bool_or(no_data), max(above_warning_s) FROM metrics.series_health_hourly"
        ).fetchone()
    assert health[0] == 1.0 and health[1] is False and health[2] > 0


def test_unconfigured_api_sources_are_optional_for_the_real_rollups(tmp_path):
    configured = tmp_path / "cloudwatch.yaml"
    configured.write_text("accounts:\n  - name: prod\n    regions: [eu-west-1]\n    metrics:\n"
                          "      - namespace: AWS/EC2\n        metric_names: [CPUUtilization]\n")
    code = "from metrics_pipeline.defs.rollups.assets import OPTIONAL_SOURCES; print(','.join(OPTIONAL_SOURCES))"
    env_base = {"PATH": "/usr/bin:/bin", "METRICS_PIPELINE_WHATAP_CONFIG": str(tmp_path / "none.yaml")}
    unconfigured = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**env_base, "METRICS_PIPELINE_CLOUDWATCH_CONFIG": str(tmp_path / "missing.yaml")},
    )
    # custom_points is optional always: an hour without pushes is normal
    assert unconfigured.stdout.strip() == "host_points,cloudwatch_points,whatap_points,custom_points"
    with_aws = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
        env={**env_base, "METRICS_PIPELINE_CLOUDWATCH_CONFIG": str(configured)},
    )
    assert with_aws.stdout.strip() == "host_points,whatap_points,custom_points"


def test_series_health_uses_the_thresholds_configured_in_sla_yaml(warehouse_dsn, tmp_path, monkeypatch):
    _load_day(warehouse_dsn)  # CPU ramps 0 -> 100 % over the day: 12:00-13:00 is 50-54 %
    config = tmp_path / "sla.yaml"
    config.write_text("metrics:\n  thresholds:\n    - metrics: [host_cpu_percent]\n      warning: 10\n      critical: 99.9\n")
    monkeypatch.setenv("METRICS_PIPELINE_SLA_CONFIG", str(config))
    result = dg.materialize([hourly_rollups], resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)},
                            partition_key=(DAY + timedelta(hours=12)).strftime("%Y-%m-%d-%H:%M"))
    assert result.success
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute("SELECT warning_threshold, critical_threshold, above_warning_s, above_critical_s "
                            "FROM metrics.series_health_hourly").fetchall()
    assert rows == [(10.0, 99.9, 3600.0, 0.0)] * 2


def test_the_daily_rollup_follows_any_hour_of_its_day_without_waiting_for_all_24():
    defs = dg.Definitions(assets=[hourly_rollups, rollup_1d], resources={"warehouse": WarehouseResource(dsn="postgresql://unused")})
    instance = dg.DagsterInstance.ephemeral()
    now = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
    hour = (now - timedelta(hours=1)).replace(minute=0)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    instance.report_runless_asset_event(dg.AssetMaterialization("rollup_1h", partition=hour.strftime("%Y-%m-%d-%H:%M")))
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor,
                                              evaluation_time=now + timedelta(minutes=1))
    daily = {pk for r in after.results if r.key == dg.AssetKey("rollup_1d")
             for pk in r.true_subset.expensively_compute_partition_keys()}
    assert daily == {hour.strftime("%Y-%m-%d")}  # the other hours of the day are still missing
