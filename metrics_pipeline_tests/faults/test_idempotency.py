"""Idempotency as a property of every asset (SPEC §9): materialising a partition twice leaves a
byte-identical canonical dump of every table it writes, over its window (see `dump.py` for the
clock columns left out and why)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
import pytest
import yaml

from metrics_pipeline.defs.anomalies.assets import anomaly_scores
from metrics_pipeline.defs.cloudwatch.assets import CloudWatchResource, cloudwatch_points
from metrics_pipeline.defs.custom.assets import custom_events, custom_points
from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records, parse_options
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.defs.rollups.assets import hourly_rollups, rollup_1d
from metrics_pipeline.defs.sla.assets import sla_daily, sla_hourly
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline.dev.simulate_logs import simulate
from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.cloudwatch import HOUR as CW_HOUR
from metrics_pipeline_tests.support.faults.dump import dump_tables
from metrics_pipeline_tests.support.faults.landing_data import write_host_hour

H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)  # a closed hour: nothing depends on "now"
DAY = H.replace(hour=0)


#: Every asset of the code location, and the test below that proves it idempotent.
COVERED = {
    "host_points": "test_host_points_twice_is_byte_identical",
    "ingestion_log_records": "test_ingestion_log_records_twice_is_byte_identical_quarantine_included",
    "cloudwatch_points": "test_cloudwatch_points_twice_is_byte_identical",
    "whatap_points": "test_whatap_points_twice_is_byte_identical",
    "rollup_5m": "test_rollups_series_health_and_rollup_1d_twice_are_byte_identical",
    "rollup_1h": "test_rollups_series_health_and_rollup_1d_twice_are_byte_identical",
    "series_health_hourly": "test_rollups_series_health_and_rollup_1d_twice_are_byte_identical",
    "rollup_1d": "test_rollups_series_health_and_rollup_1d_twice_are_byte_identical",
    "sla_hourly": "test_sla_hourly_and_sla_daily_twice_are_byte_identical",
    "sla_daily": "test_sla_hourly_and_sla_daily_twice_are_byte_identical",
    "custom_points": "test_custom_points_and_custom_events_twice_are_byte_identical_quarantine_included",
    "custom_events": "test_custom_points_and_custom_events_twice_are_byte_identical_quarantine_included",
    "anomaly_scores": "test_anomaly_scores_twice_is_byte_identical_states_included",
}


def test_every_asset_of_the_code_location_has_an_idempotency_test():
    from metrics_pipeline.definitions import defs

    assert {spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()} == set(COVERED)
    assert all(name in globals() for name in COVERED.values())


def hour_key(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


def assert_materialises_identically(assets, partition_key, resources, dsn, tables, start, end) -> dict[str, bytes]:
    """Materialise twice; the dumps of `tables` over [start, end) after each run must be equal bytes."""
    dumps = []
    for _ in range(2):
        result = dg.materialize(assets, partition_key=partition_key, resources=resources)
        assert result.success
        with psycopg.connect(dsn, autocommit=True) as conn:
            dumps.append(dump_tables(conn, tables, start, end))
    for table in tables:
        assert dumps[0][table], f"{table}: the window is empty, the comparison would prove nothing"
        assert dumps[1][table] == dumps[0][table], f"{table} changed on the second run"
    return dumps[0]


def test_host_points_twice_is_byte_identical(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    write_host_hour(zone, H)
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=str(tmp_path))}
    assert_materialises_identically([host_points], hour_key(H), resources, warehouse_dsn,
                                    ["points", "series", "landing_files"], H, H + timedelta(hours=1))


def test_ingestion_log_records_twice_is_byte_identical_quarantine_included(warehouse_dsn, tmp_path):
    simulate(LocalLanding(tmp_path), H, H + timedelta(hours=1), jobs_per_hour=60, seed=5, bad_rate=0.15)
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=str(tmp_path))}
    assert_materialises_identically([ingestion_log_records], hour_key(H), resources, warehouse_dsn,
                                    ["ingestion_runs", "quarantine", "landing_files"], H, H + timedelta(hours=1))


def test_custom_points_and_custom_events_twice_are_byte_identical_quarantine_included(warehouse_dsn, tmp_path):
    landing = tmp_path / "landing"
    received = [(H + timedelta(minutes=20)).timestamp()]
    with PushWriter(ApiConfig(landing=str(landing), spool_dir=str(tmp_path / "spool")),
                    clock=lambda: received[0]) as writer:
        for n in range(3):  # the third batch repeats the first (a client retry)
            received[0] += 60
            measures = [Measure("orders", float(i + n % 2), H + timedelta(minutes=i), {"shop": s}, "count")
                        for i in range(20) for s in ("eu", "us")]
            for tenant in ("acme", "boreal"):
                writer.write(tenant, "measures", measures)
                writer.write(tenant, "events", [Event("deploy", H + timedelta(minutes=n % 2), {"app": "shop"}, "v1")])
        key = writer.write("acme", "events", [Event("note", H + timedelta(minutes=30))])
    with open(landing / key, "ab") as f:
        f.write(b"not json\n{\"committed\":1}\n")  # a corrupt line: quarantined
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=str(landing))}
    assert_materialises_identically([custom_points, custom_events], hour_key(H), resources, warehouse_dsn,
                                    ["points", "series", "events", "quarantine", "landing_files"], H, H + timedelta(hours=1))


def test_cloudwatch_points_twice_is_byte_identical(warehouse_dsn, cw_config, seeded, tmp_path):
    path = tmp_path / "cloudwatch.yaml"
    path.write_text(yaml.safe_dump(cw_config().model_dump(exclude_none=True)))
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "cloudwatch": CloudWatchResource(config_path=str(path))}
    assert_materialises_identically([cloudwatch_points], hour_key(CW_HOUR), resources, warehouse_dsn,
                                    ["points", "series"], CW_HOUR, CW_HOUR + timedelta(hours=1))


def test_whatap_points_twice_is_byte_identical(warehouse_dsn, whatap_double, tmp_path, monkeypatch):
    monkeypatch.setenv("FAULTS_WHATAP_TOKEN", whatap_double.account_token)
    path = tmp_path / "whatap.yaml"
    path.write_text(yaml.safe_dump({"base_url": whatap_double.url, "account_token_env": "FAULTS_WHATAP_TOKEN",
                                    "collect": ["sm_stat", "mxql", "apm"], "mxql_categories": ["server_base"]}))
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "whatap": WhatapResource(config_path=str(path))}
    assert_materialises_identically([whatap_points], hour_key(H), resources, warehouse_dsn,
                                    ["points", "series"], H, H + timedelta(hours=1))


@pytest.fixture
def two_hours_of_points(warehouse_dsn):
    """Three series for the hour before H and H, plus one that stops before H (a `no_data` row)."""
    ts = pd.date_range(H - timedelta(hours=1), H + timedelta(hours=1), freq="10s", inclusive="left")
    series = [{"metric": "host_cpu_percent", "resource": host, "labels": {"host": host}, "unit": "percent",
               "ts": ts, "value": np.abs(np.sin(np.arange(len(ts)) / 50 + i)) * 100}
              for i, host in enumerate(("web-1", "web-2", "db-1"))]
    early = ts[ts < H - timedelta(minutes=30)]
    series.append({"metric": "host_memory_percent", "resource": "gone", "labels": {"host": "gone"}, "unit": "percent",
                   "ts": early, "value": np.full(len(early), 97.0)})
    loader.load_points(Warehouse(warehouse_dsn), points_frame(series), source="host",
                       start=H - timedelta(hours=1), end=H + timedelta(hours=1))


def test_rollups_series_health_and_rollup_1d_twice_are_byte_identical(warehouse_dsn, two_hours_of_points):
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    # The hour before first: its health rows are the history that makes the silent series `no_data` in H.
    assert dg.materialize([hourly_rollups], partition_key=hour_key(H - timedelta(hours=1)), resources=resources).success
    dumps = assert_materialises_identically([hourly_rollups], hour_key(H), resources, warehouse_dsn,
                                            ["rollup_5m", "rollup_1h", "rollup_5m_sketch", "rollup_1h_sketch",
                                             "series_health_hourly"], H, H + timedelta(hours=1))
    assert b"\tt\t" in dumps["series_health_hourly"]  # the silent series' no_data row is part of it
    assert_materialises_identically([rollup_1d], DAY.strftime("%Y-%m-%d"), resources, warehouse_dsn,
                                    ["rollup_1d", "rollup_1d_sketch"], DAY, DAY + timedelta(days=1))


@pytest.fixture
def a_day_of_runs(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    simulate(zone, DAY, DAY + timedelta(days=1), jobs_per_hour=12, seed=9, bad_rate=0.05)
    ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, DAY, DAY + timedelta(days=1), parse_options())


def test_sla_hourly_and_sla_daily_twice_are_byte_identical(warehouse_dsn, a_day_of_runs):
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    assert_materialises_identically([sla_hourly], hour_key(H), resources, warehouse_dsn,
                                    ["sla_hourly"], H, H + timedelta(hours=1))
    assert_materialises_identically([sla_daily], DAY.strftime("%Y-%m-%d"), resources, warehouse_dsn,
                                    ["sla_daily"], DAY, DAY + timedelta(days=1))


def test_anomaly_scores_twice_is_byte_identical_states_included(warehouse_dsn):
    # A recent hour: the detector's states are kept 3 days, and the first hour scored learns from the
    # 3 days before it. Two days of minute data with a daily swing, rolled up to 5 minutes.
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    start = hour - timedelta(days=2)
    ts = pd.date_range(start, hour + timedelta(hours=1), freq="60s", inclusive="left")
    daily = np.sin(ts.hour.to_numpy() / 24 * 2 * np.pi)
    rng = np.random.default_rng(4)
    frame = points_frame([{"metric": "aws_ec2_cpuutilization", "resource": f"i-{n}", "unit": "percent",
                           "labels": {"InstanceId": f"i-{n}", "statistic": "Average", "tenant": "acme"}, "ts": ts,
                           "value": 40 + 20 * daily + rng.normal(0, 2, len(ts))} for n in range(3)])
    loader.load_points(Warehouse(warehouse_dsn), frame, source="cloudwatch", start=start, end=hour + timedelta(hours=1))
    rollups.refresh(Warehouse(warehouse_dsn), ["rollup_5m"], start, hour + timedelta(hours=1))
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    assert_materialises_identically([anomaly_scores], hour_key(hour), resources, warehouse_dsn,
                                    ["anomaly_scores", "anomaly_state", "anomaly_hours"], hour, hour + timedelta(hours=2))
