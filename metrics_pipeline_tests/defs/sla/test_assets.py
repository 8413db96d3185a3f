from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.ingestion_logs.assets import parse_options
from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.sla.assets import sla_daily, sla_hourly
from metrics_pipeline.dev.simulate_logs import simulate
from metrics_pipeline.lib import sla
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse

DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)
HOUR_KEY = "%Y-%m-%d-%H:%M"


@pytest.fixture
def sla_config(tmp_path, monkeypatch):
    """The assets read their targets from the file METRICS_PIPELINE_SLA_CONFIG names."""
    path = tmp_path / "sla.yaml"
    path.write_text("defaults:\n  max_failure_rate: 10%\n")
    monkeypatch.setenv(sla.CONFIG_ENV, str(path))
    return path


@pytest.fixture
def two_days_of_runs(warehouse_dsn, tmp_path):
    """Simulated job logs for the day before DAY and DAY, loaded as `ingestion_log_records` would."""
    zone = LocalLanding(tmp_path / "landing")
    simulate(zone, DAY - timedelta(days=1), DAY + timedelta(days=1), jobs_per_hour=30, seed=11, bad_rate=0)
    ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, DAY - timedelta(days=1), DAY + timedelta(days=1),
                               parse_options())


def _scalar(dsn, query):
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchone()[0]


def test_a_backfill_of_a_day_of_hours_is_one_run_then_the_day_comes_from_the_raw_runs(
        warehouse_dsn, two_days_of_runs, sla_config):
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    instance = dg.DagsterInstance.ephemeral()
    hours = hourly_partitions.get_partition_keys_in_range(
        dg.PartitionKeyRange(DAY.strftime(HOUR_KEY), (DAY + timedelta(hours=23)).strftime(HOUR_KEY)))
    hourly = dg.materialize(
        [sla_hourly], resources=resources, instance=instance,
        tags={"dagster/asset_partition_range_start": hours[0], "dagster/asset_partition_range_end": hours[-1]},
    )
    assert hourly.success
    events = hourly.asset_materializations_for_node("sla_hourly")
    assert sorted(e.partition for e in events) == hours  # one run, one event per hour of the range
    meta = events[0].metadata
    assert meta["dagster/row_count"].value == _scalar(warehouse_dsn, "SELECT count(*) FROM metrics.sla_hourly") > 24
    assert meta["rows_replaced"].value == 0 and meta["window"].value.startswith("2026-01-05T00:00:00+00:00 .. 2026-01-06")
    assert meta["groups_breaching"].value == _scalar(
        warehouse_dsn, "SELECT count(DISTINCT (company, zone, source_system, object)) FROM metrics.sla_hourly WHERE NOT sla_met")
    assert meta["rows_breaching"].value > 0 and "| bucket | company |" in meta["worst"].value
    runs_that_day = _scalar(warehouse_dsn, "SELECT count(*) FROM metrics.ingestion_runs "
                                           "WHERE started_at >= '2026-01-05' AND started_at < '2026-01-06'")
    assert _scalar(warehouse_dsn, "SELECT sum(runs) FROM metrics.sla_hourly") == runs_that_day

    daily = dg.materialize([sla_daily], resources=resources, instance=instance, partition_key="2026-01-05")
    assert daily.success
    meta = daily.asset_materializations_for_node("sla_daily")[0].metadata
    assert meta["dagster/row_count"].value == meta["groups"].value == _scalar(
        warehouse_dsn, "SELECT count(DISTINCT (company, zone, source_system, object)) FROM metrics.sla_hourly")
    assert _scalar(warehouse_dsn, "SELECT sum(runs) FROM metrics.sla_daily") == runs_that_day
    # Exact daily percentiles: equal to percentile_cont over the day's runs, not to any mix of hours.
    assert _scalar(warehouse_dsn, """
        SELECT count(*) FROM metrics.sla_daily d
        JOIN (SELECT company, zone, source_system, object,
                     percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_s) AS p95
              FROM metrics.ingestion_runs WHERE started_at >= '2026-01-05' AND started_at < '2026-01-06'
              GROUP BY 1, 2, 3, 4) r USING (company, zone, source_system, object)
        WHERE d.duration_p95_s IS DISTINCT FROM r.p95""") == 0

    again = dg.materialize([sla_daily], resources=resources, instance=instance, partition_key="2026-01-05")
    meta_again = again.asset_materializations_for_node("sla_daily")[0].metadata
    assert meta_again["rows_replaced"].value == meta_again["dagster/row_count"].value == meta["dagster/row_count"].value


def test_targets_come_from_the_configured_file_and_a_bad_file_fails_the_run_naming_the_key(
        warehouse_dsn, two_days_of_runs, sla_config):
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn)}
    key = "2026-01-05"

    def breaching():
        result = dg.materialize([sla_daily], resources=resources, partition_key=key)
        return result.asset_materializations_for_node("sla_daily")[0].metadata["rows_breaching"].value

    lenient = breaching()
    sla_config.write_text("defaults:\n  max_failure_rate: 0\n  max_duration_s: 1\n")
    assert breaching() > lenient
    sla_config.write_text("defaults:\n  max_failure_rte: 0.1\n")
    result = dg.materialize([sla_daily], resources=resources, partition_key=key, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "defaults.max_failure_rte: unknown key" in failure.step_failure_data.error.cause.message


def test_an_hour_without_any_log_file_still_gets_its_sla_rows(warehouse_dsn, two_days_of_runs, sla_config):
    # The simulated jobs stop at the end of DAY: the next hour has no file, but the jobs are expected.
    after = (DAY + timedelta(days=1)).strftime(HOUR_KEY)
    result = dg.materialize([sla_hourly], resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)},
                            partition_key=after)
    assert result.success
    jobs = _scalar(warehouse_dsn, "SELECT count(DISTINCT (company, zone, source_system, object)) FROM metrics.ingestion_runs")
    with psycopg.connect(warehouse_dsn) as conn:
        rows, runs, rates, successes = conn.execute(
            "SELECT count(*), sum(runs), count(failure_rate), count(last_success_at) FROM metrics.sla_hourly").fetchone()
    assert rows == jobs and runs == 0 and rates == 0 and successes == rows


def _requested(result, key: str) -> set[str]:
    return {
        pk for r in result.results if r.key == dg.AssetKey(key)
        for pk in r.true_subset.expensively_compute_partition_keys()
    }


def test_sla_hourly_runs_for_each_new_hour_without_waiting_for_log_files_and_follows_late_files():
    @dg.asset(partitions_def=hourly_partitions)
    def ingestion_log_records(): ...

    defs = dg.Definitions(assets=[ingestion_log_records, sla_hourly, sla_daily],
                          resources={"warehouse": WarehouseResource(dsn="unused")})
    instance = dg.DagsterInstance.ephemeral()
    now = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=now)
    new_hour = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor,
                                                 evaluation_time=now + timedelta(hours=1))
    assert (now + timedelta(hours=1)).replace(minute=0).strftime(HOUR_KEY) in _requested(new_hour, "sla_hourly")

    earlier = (now - timedelta(hours=5)).replace(minute=0).strftime(HOUR_KEY)
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key="ingestion_log_records", partition=earlier))
    late = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=new_hour.cursor,
                                             evaluation_time=now + timedelta(hours=1, minutes=1))
    assert _requested(late, "sla_hourly") == {earlier}
