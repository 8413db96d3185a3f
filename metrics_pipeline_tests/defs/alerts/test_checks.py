from datetime import timedelta

import dagster as dg
import numpy as np
import pandas as pd
import psycopg

from metrics_pipeline.defs.alerts.checks import completeness, quarantine_ratio
from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.alerts import KEY, H, check_results, host_checks, load_cpu, source_stub


def test_a_busy_host_fails_the_threshold_check_with_critical_severity_and_records_alerts(warehouse_dsn):
    load_cpu(warehouse_dsn, [50.0] * 600 + [85.0] * 360 + [97.0] * 120 + [40.0] * 600)
    result = dg.materialize([source_stub("host_points"), *host_checks()], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    checks = check_results(result)
    alerts = checks["threshold_alerts"]
    assert not alerts.passed and alerts.severity == dg.AssetCheckSeverity.ERROR
    assert alerts.metadata["firing"].value == 2
    table = alerts.metadata["alerts"].value
    assert "CpuHigh" in table and "web-1" in table and "critical" in table
    assert checks["values_in_range"].passed
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute("SELECT severity, run_id, partition_key FROM metrics.alerts ORDER BY severity").fetchall()
    assert [r[0] for r in rows] == ["critical", "warning"] and rows[0][1] == result.run_id and rows[0][2] == KEY


def test_impossible_values_fail_the_blocking_range_check_naming_the_series(warehouse_dsn):
    load_cpu(warehouse_dsn, [50.0, 150.0, -3.0, 60.0])
    result = dg.materialize([source_stub("host_points"), *host_checks()], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    check = check_results(result)["values_in_range"]
    assert not check.passed and check.metadata["bad_samples"].value == 2
    assert "host_cpu_percent" in check.metadata["offenders"].value and "150" in check.metadata["offenders"].value
    spec = next(s for c in host_checks() for s in c.check_specs if s.name == "values_in_range")
    assert spec.blocking


def test_quarantine_ratio_warns_above_one_percent_and_errors_above_five(warehouse_dsn, db):
    partitioning.ensure_partitions(db, "metrics", "ingestion_runs", H, H + timedelta(hours=1))
    for i in range(95):
        db.execute(
            """INSERT INTO metrics.ingestion_runs (sequence_no, company, zone, source_system, object_id, object,
               transformation, status, started_at, ended_at, duration_s, source_file, source_position)
               VALUES (%s, 'acme', '1-Raw', 'Zoho', 'o', 'Deals', 't', 'SUCCESS', %s, %s, 1, 'f.json', %s)""",
            (f"s{i}", H + timedelta(seconds=i), H + timedelta(seconds=i + 1), i),
        )
    for i in range(5):
        db.execute("INSERT INTO metrics.quarantine (source, source_file, position, raw, reason, record_hour) "
                   "VALUES ('ingestion_logs', 'f.json', %s, '{}', 'end before start', %s)", (100 + i, H))
    result = dg.materialize([source_stub("ingestion_log_records"), quarantine_ratio], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    check = check_results(result)["quarantine_ratio"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # 5 % exactly: warn, not error
    assert check.metadata["share"].value == 0.05 and "end before start" in check.metadata["reasons"].value


def test_completeness_reports_silent_and_gappy_series(warehouse_dsn):
    ts = pd.date_range(H - timedelta(hours=1), H + timedelta(minutes=30), freq="10s", inclusive="left")
    frame = points_frame([{"metric": "host_cpu_percent", "resource": "web-1", "labels": {}, "unit": "percent",
                                  "ts": ts, "value": np.ones(len(ts))}])
    loader.load_points(Warehouse(warehouse_dsn), frame, source="host", start=H - timedelta(hours=1), end=H + timedelta(hours=1))
    rollups.refresh_health(Warehouse(warehouse_dsn, "metrics"), H - timedelta(hours=1), H + timedelta(hours=1),
                           now=H + timedelta(hours=2))

    @dg.multi_asset(specs=[dg.AssetSpec("series_health_hourly")], partitions_def=hourly_partitions)
    def stub():
        yield dg.MaterializeResult(asset_key="series_health_hourly")

    result = dg.materialize([stub, completeness], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    check = check_results(result)["completeness"]
    assert not check.passed and check.metadata["incomplete_series"].value == 1
    assert "0.5" in check.metadata["series"].value


def test_sla_alerts_check_fails_when_a_jobs_failure_rate_is_over_target(warehouse_dsn, db):
    from metrics_pipeline.defs.alerts.checks import sla_alerts

    db.execute("""INSERT INTO metrics.sla_hourly (bucket, company, zone, source_system, object, runs, successes, failures,
                                                 failure_rate, sla_breaches, sla_met)
                  VALUES (%s, 'acme', '1-Raw', 'Zoho', 'Deals', 10, 5, 5, 0.5, 2, false)""", (H,))
    result = dg.materialize([source_stub("sla_hourly"), sla_alerts], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    check = check_results(result)["sla_alerts"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["firing"].value == 2 and check.metadata["rows_missing_sla"].value == 1
    assert "IngestionFailureRateHigh" in check.metadata["alerts"].value
    assert "IngestionDurationSlaBreached" in check.metadata["alerts"].value


def test_duplicates_the_source_sent_are_reported_from_the_loads_counts(warehouse_dsn):
    @dg.asset(name="host_points", partitions_def=hourly_partitions)
    def noisy_host_points():
        return dg.MaterializeResult(metadata={"duplicate_points": 3, "non_finite_values": 0})

    duplicates = [c for c in host_checks() if any(k.name == "duplicate_points" for k in c.check_keys)]
    result = dg.materialize([noisy_host_points, *duplicates], partition_key=KEY,
                            resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)}, raise_on_error=False)
    check = check_results(result)["duplicate_points"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["duplicate_points"].value == 3
