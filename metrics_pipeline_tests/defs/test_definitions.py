import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from metrics_pipeline.defs.partitions import daily_partitions, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource

ROOT = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate(tmp_path):
    # An empty DAGSTER_HOME: the repository's dagster.yaml wants PostgreSQL from the environment.
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    env.pop("METRICS_PIPELINE_DSN", None)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-m", "metrics_pipeline.definitions"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dg_check_defs_passes(tmp_path):
    dg_cli = Path(sys.executable).parent / "dg"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [str(dg_cli), "check", "defs"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_warehouse_resource_reads_its_dsn_from_the_environment():
    from metrics_pipeline.definitions import defs

    resource = defs.resources["warehouse"]
    assert isinstance(resource, WarehouseResource)
    assert resource.dsn == "METRICS_PIPELINE_DSN"  # an EnvVar, resolved at run time, never a literal


def test_partitions_are_hourly_and_daily_in_utc_including_the_current_period():
    assert isinstance(hourly_partitions, dg.HourlyPartitionsDefinition)
    assert isinstance(daily_partitions, dg.DailyPartitionsDefinition)
    assert hourly_partitions.timezone == "UTC" and hourly_partitions.end_offset == 1
    assert daily_partitions.get_first_partition_key() == hourly_partitions.get_first_partition_key()[:10]


def test_the_start_date_comes_from_configuration(monkeypatch):
    from metrics_pipeline.defs import partitions

    monkeypatch.setenv(partitions.START_DATE_ENV, "2024-06-01")
    assert partitions.start_date() == "2024-06-01"
    monkeypatch.setenv(partitions.START_DATE_ENV, "June")
    import pytest

    with pytest.raises(ValueError, match="METRICS_PIPELINE_START_DATE must be an ISO date"):
        partitions.start_date()


def test_the_warehouse_resource_migrates_at_set_up_and_hands_out_the_warehouse(empty_dsn):
    """Migrations run when a run sets the resource up, not from the write paths."""
    from metrics_pipeline.lib.warehouse import migrate

    seen = {}

    @dg.asset
    def probe(warehouse: WarehouseResource) -> None:
        with warehouse.get().connect() as conn:
            seen["versions"] = conn.execute("SELECT count(*) FROM metrics.schema_migrations").fetchone()[0]

    assert dg.materialize([probe], resources={"warehouse": WarehouseResource(dsn=empty_dsn)}).success
    assert seen["versions"] == len(migrate.available())
    # Set up again: nothing left to apply, and nothing fails.
    assert dg.materialize([probe], resources={"warehouse": WarehouseResource(dsn=empty_dsn)}).success


def test_sensors_are_off_by_default_and_on_in_the_demo():
    code = (
        "from metrics_pipeline.definitions import defs; "
        "print(sorted({s.default_status.value for s in defs.sensors}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "METRICS_PIPELINE_DEMO"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    on = subprocess.run([sys.executable, "-c", code], env={**env, "METRICS_PIPELINE_DEMO": "1"},
                        capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "['STOPPED']" and on.stdout.strip() == "['RUNNING']"
