from datetime import datetime, timedelta, timezone

import boto3
import dagster as dg
import psycopg
import yaml

from metrics_pipeline.defs.cloudwatch.assets import CloudWatchResource, cloudwatch_points
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.cloudwatch import HOUR


def write_config(tmp_path, config):
    path = tmp_path / "cloudwatch.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(exclude_none=True)))
    return str(path)


def stored(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.metric, s.resource, s.labels->>'statistic', p.ts, p.value FROM metrics.points p "
            "JOIN metrics.series s USING (series_id) WHERE s.source = 'cloudwatch' ORDER BY 1, 2, 3, 4"
        ).fetchall()


def test_cloudwatch_points_loads_the_seeded_truth_and_a_late_rerun_corrects_in_place(warehouse_dsn, cw_config, seeded, tmp_path):
    resources = {
        "warehouse": WarehouseResource(dsn=warehouse_dsn),
        "cloudwatch": CloudWatchResource(config_path=write_config(tmp_path, cw_config())),
    }
    key = HOUR.strftime("%Y-%m-%d-%H:%M")
    result = dg.materialize([cloudwatch_points], partition_key=key, resources=resources)
    meta = result.asset_materializations_for_node("cloudwatch_points")[0].metadata
    assert meta["points"].value == 17 * 60 and meta["api_calls"].value >= 1
    assert meta["metrics_requested"].value == 17 and meta["estimated_cost_usd"].value == 0.00017
    assert meta["period_seconds"].value == "60" and meta["status"].value == "collected"
    rows = stored(warehouse_dsn)
    ec2 = [r for r in rows if r[0] == "aws_ec2_cpuutilization" and r[1].endswith("0") and r[2] == "Average"]
    assert [r[4] for r in ec2] == seeded["truth"][("AWS/EC2", "CPUUtilization", f"i-{seeded['suffix']}0")]

    again = dg.materialize([cloudwatch_points], partition_key=key, resources=resources)
    assert again.asset_materializations_for_node("cloudwatch_points")[0].metadata["points_changed"].value == 0
    assert stored(warehouse_dsn) == rows

    # A datapoint that arrives late (timestamp inside the hour) is picked up by the re-run.
    cw = boto3.client("cloudwatch", endpoint_url=seeded["endpoint"], region_name="eu-west-1")
    cw.put_metric_data(Namespace="AWS/RDS", MetricData=[{
        "MetricName": "FreeableMemory", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": f"db-{seeded['suffix']}"}],
        "Timestamp": HOUR + timedelta(minutes=30, seconds=10), "Value": 5.0}])
    late = dg.materialize([cloudwatch_points], partition_key=key, resources=resources)
    assert late.asset_materializations_for_node("cloudwatch_points")[0].metadata["points_changed"].value > 0
    assert len(stored(warehouse_dsn)) == len(rows)  # corrected, not duplicated


def test_an_unconfigured_source_materialises_empty_with_a_clear_status(warehouse_dsn, tmp_path):
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn),
                 "cloudwatch": CloudWatchResource(config_path=str(tmp_path / "absent.yaml"))}
    result = dg.materialize([cloudwatch_points], partition_key=HOUR.strftime("%Y-%m-%d-%H:%M"), resources=resources)
    assert result.success
    assert result.asset_materializations_for_node("cloudwatch_points")[0].metadata["status"].value == "not configured"


def test_cloudwatch_runs_share_a_concurrency_pool():
    assert cloudwatch_points.op.pool == "cloudwatch"


def test_the_current_hour_is_refreshed_every_few_minutes():
    from metrics_pipeline.defs.cloudwatch.schedules import cloudwatch_current_hour

    assert cloudwatch_current_hour.cron_schedule == "*/10 * * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 22, 10, 40, tzinfo=timezone.utc))
    request = cloudwatch_current_hour(context)
    assert (request.partition_key, request.run_key) == ("2026-11-22-10:00", "2026-11-22-10:00:refresh:40")


def test_an_old_window_refetched_at_a_coarser_period_keeps_the_finer_stored_data(warehouse_dsn, tmp_path, moto_endpoint):
    import pandas as pd

    from metrics_pipeline.lib.cloudwatch.config import parse_config
    from metrics_pipeline.lib.warehouse.load import load_points

    old = (datetime.now(timezone.utc) - timedelta(days=20)).replace(minute=0, second=0, microsecond=0)
    fine = pd.DataFrame({"metric": "aws_ec2_cpuutilization", "resource": "i-old", "labels": [{"statistic": "Average"}] * 60,
                         "unit": "percent", "ts": pd.date_range(old, periods=60, freq="min"), "value": 1.0})
    load_points(Warehouse(warehouse_dsn), fine, source="cloudwatch", start=old, end=old + timedelta(hours=1))
    config = parse_config({"accounts": [{"name": "prod", "regions": ["eu-west-1"], "endpoint_url": moto_endpoint,
                                         "metrics": [{"namespace": "AWS/EC2", "metric_names": ["CPUUtilization"],
                                                      "dimensions": {"InstanceId": "i-old"}}]}]})
    resources = {"warehouse": WarehouseResource(dsn=warehouse_dsn),
                 "cloudwatch": CloudWatchResource(config_path=write_config(tmp_path, config))}
    result = dg.materialize([cloudwatch_points], partition_key=old.strftime("%Y-%m-%d-%H:%M"), resources=resources)
    meta = result.asset_materializations_for_node("cloudwatch_points")[0].metadata
    assert meta["status"].value == "kept stored data" and "300 s" in meta["reason"].value
    assert len(stored(warehouse_dsn)) == 60
