import os
import subprocess
import sys
from datetime import timedelta

import pytest

from metrics_pipeline.lib.cloudwatch.collect import BudgetExceeded, fetch
from metrics_pipeline_tests.support.cloudwatch import HOUR


def test_fetch_returns_every_seeded_value_with_labels_and_units(cw_config, seeded, tmp_path):
    frame, stats, calls = fetch(cw_config(), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    averages = frame[frame["labels"].astype(str).str.contains('"statistic":"Average"')]
    got = {}
    for (metric, resource), group in averages.groupby(["metric", "resource"], observed=True):
        got[(metric, resource)] = list(group.sort_values("ts")["value"])
    assert got == {
        ("aws_ec2_cpuutilization", f"i-{seeded['suffix']}{i}"): seeded["truth"][("AWS/EC2", "CPUUtilization", f"i-{seeded['suffix']}{i}")]
        for i in range(3)
    } | {("aws_rds_freeablememory", f"db-{seeded['suffix']}"): seeded["truth"][("AWS/RDS", "FreeableMemory", f"db-{seeded['suffix']}")]}
    assert set(frame["unit"]) == {"percent", "bytes", "count"}  # SampleCount is a count
    assert stats.series == 3 * 5 + 2 and stats.empty_series == 0
    assert stats.datapoints == 17 * 60 and stats.metrics_requested == 17
    # Explicitly named series need no discovery; one GetMetricData call carries all 17 queries.
    assert stats.api_calls == {"GetMetricData": 1} and len(calls) == 1
    assert stats.periods == {60}


def test_discovery_is_cached(cw_config, seeded, tmp_path):
    config = cw_config(discovery_cache_seconds=3600)
    config.accounts[0].metrics[0].dimensions["InstanceId"] = "*"  # discover, then filter
    _, first, _ = fetch(config, HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    _, second, _ = fetch(config, HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    assert first.api_calls["ListMetrics"] >= 1 and second.api_calls["ListMetrics"] == 0


def test_a_run_over_budget_is_refused_before_any_getmetricdata(cw_config, tmp_path):
    with pytest.raises(BudgetExceeded, match=r"17 metrics, an estimated \$0.0002, over the budget of \$0.0001"):
        fetch(cw_config(budget_usd_per_run=0.0001), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)


def test_missing_credentials_fail_fast_with_a_message_naming_what_is_missing(tmp_path, seeded):
    code = (
        "from datetime import datetime, timedelta, timezone\n"
        "from metrics_pipeline.lib.cloudwatch.config import parse_config\n"
        "from metrics_pipeline.lib.cloudwatch.collect import fetch\n"
        f"c = parse_config({{'accounts': [{{'name': 'prod', 'regions': ['eu-west-1'], 'endpoint_url': '{seeded['endpoint']}',"
        " 'metrics': [{'namespace': 'AWS/EC2'}]}]})\n"
        "h = datetime.now(timezone.utc) - timedelta(hours=2)\n"
        f"fetch(c, h, h + timedelta(hours=1), cache_dir=__import__('pathlib').Path('{tmp_path}'))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "no AWS credentials found for account 'prod' in eu-west-1: set AWS_ACCESS_KEY_ID" in result.stderr


def test_tag_filters_keep_only_tagged_resources(moto_endpoint, tmp_path):
    import boto3

    from metrics_pipeline.lib.cloudwatch.config import parse_config
    from metrics_pipeline_tests.support.cloudwatch import HOUR

    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="eu-west-1")
    cw = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="eu-west-1")
    ids = []
    for env in ("production", "staging"):
        reservation = ec2.run_instances(
            ImageId="ami-12c6146b", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Environment", "Value": env}]}],
        )
        ids.append(reservation["Instances"][0]["InstanceId"])
    for instance in ids:
        cw.put_metric_data(Namespace="Tagged/EC2", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance}],
             "Timestamp": HOUR + timedelta(minutes=m), "Value": 1.0} for m in range(5)])
    config = parse_config({"discovery_cache_seconds": 0, "statistics": ["Average"], "accounts": [{
        "name": "prod", "regions": ["eu-west-1"], "endpoint_url": moto_endpoint, "metrics": [{
            "namespace": "Tagged/EC2", "dimensions": {"InstanceId": "*"},
            "tag_filters": {"Environment": "production"}, "resource_type": "ec2:instance"}]}]})
    frame, stats, _ = fetch(config, HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    assert set(frame["resource"]) == {ids[0]}
    assert stats.api_calls["GetResources"] >= 1 and stats.series == 1
