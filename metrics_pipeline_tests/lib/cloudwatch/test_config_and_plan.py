import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from metrics_pipeline.lib.cloudwatch.config import ConfigError, load_config, parse_config
from metrics_pipeline.lib.cloudwatch.plan import (
    Query,
    WindowTooOld,
    align,
    estimate,
    metric_name,
    period_for,
    plan_calls,
    resource_for,
    unit_for,
)

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[3]


def account(**metric):
    return {"name": "prod", "regions": ["eu-west-1"], "metrics": [{"namespace": "AWS/EC2", **metric}]}


def test_the_shipped_sample_config_is_valid_and_covers_ec2_rds_and_elb():
    config = load_config(ROOT / "config" / "cloudwatch.example.yaml")
    namespaces = {m.namespace for a in config.accounts for m in a.metrics}
    assert {"AWS/EC2", "AWS/RDS", "AWS/ELB"} <= namespaces


def test_a_missing_config_file_means_not_configured(tmp_path):
    assert not load_config(tmp_path / "none.yaml").configured


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"accounts": [account(statistcs=["Average"])]}, "accounts[0].metrics[0].statistcs: unknown key"),
        ({"accounts": [account(statistics=["Avg"])]}, "accounts[0].metrics[0].statistics: unknown statistic(s) ['Avg']"),
        ({"accounts": [account(extended_statistics=["p101x"])]}, "extended_statistics: not an extended statistic"),
        ({"accounts": [account(period_seconds=45)]}, "period_seconds must be 1, 5, 10, 30 or a multiple of 60"),
        ({"accounts": [{**account(), "regions": ["mars-1"]}]}, "accounts[0].regions: not an AWS region name"),
        ({"accounts": [{**account(), "metrics": []}]}, "accounts[0].metrics"),
        ({"budget_usd_per_run": -1}, "budget_usd_per_run"),
        ({"acounts": []}, "acounts: unknown key"),
        ([1, 2], "the top level must be a mapping"),
    ],
)
def test_config_errors_name_the_bad_key(raw, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(raw, "cloudwatch.yaml")
    assert message in str(exc.value) and str(exc.value).startswith("cloudwatch.yaml:")


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "cw.yaml"
    path.write_text("accounts: [unclosed")
    with pytest.raises(ConfigError, match="cw.yaml: not valid YAML"):
        load_config(path)


@pytest.mark.parametrize(
    ("age", "configured", "expected"),
    [(timedelta(days=1), 60, 60), (timedelta(days=15), 60, 60), (timedelta(days=16), 60, 300),
     (timedelta(days=20), 600, 600), (timedelta(days=64), 60, 3600), (timedelta(days=455), 300, 3600),
     (timedelta(days=20), 420, 600), (timedelta(days=100), 5400, 7200), (timedelta(days=2), 1, 60),
     (timedelta(hours=1), 1, 1), (timedelta(days=2), 120, 120)],
)
def test_older_windows_ask_for_the_period_cloudwatch_still_keeps(age, configured, expected):
    assert period_for(NOW - age, NOW, configured) == expected


def test_windows_older_than_455_days_are_refused_clearly():
    with pytest.raises(WindowTooOld, match="CloudWatch keeps metrics for at most 455 days .* no longer has this data"):
        period_for(NOW - timedelta(days=456), NOW, 60)


def q(i, period=60, region="eu-west-1"):
    return Query("prod", None, region, "AWS/EC2", "CPUUtilization", (("InstanceId", f"i-{i}"),), "Average", period, "percent")


def test_an_hour_needs_ceil_queries_over_500_calls_and_costs_one_cent_per_thousand():
    start = datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    calls = plan_calls([q(i) for i in range(2001)], start, start + timedelta(hours=1))
    assert [len(c.queries) for c in calls] == [500, 500, 500, 500, 1]
    assert estimate(calls) == (2001, pytest.approx(0.02001))


def test_long_windows_stay_under_100800_datapoints_per_call():
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    calls = plan_calls([q(i) for i in range(300)], start, start + timedelta(days=7))
    per_query = 7 * 24 * 60
    assert all(len(c.queries) * per_query <= 100_800 for c in calls)
    assert sum(len(c.queries) for c in calls) == 300  # no window split needed: cost stays 300 metrics
    # A window longer than 100,800 periods is split, each part within the limit.
    long = plan_calls([q(0)], start - timedelta(days=80), start)
    assert len(long) == 2 and all((c.end - c.start).total_seconds() / 60 <= 100_800 for c in long)


def test_calls_are_grouped_per_region_and_period_and_aligned():
    start = datetime(2026, 11, 22, 10, 7, tzinfo=timezone.utc)
    calls = plan_calls([q(1), q(2, period=300), q(3, region="us-east-1")], start, start + timedelta(minutes=50))
    assert len(calls) == 3
    assert align(start, start + timedelta(minutes=50), 300) == (
        datetime(2026, 11, 22, 10, 5, tzinfo=timezone.utc), datetime(2026, 11, 22, 11, 0, tzinfo=timezone.utc))


def test_series_naming_resources_and_units():
    assert metric_name("AWS/EC2", "CPUUtilization") == "aws_ec2_cpuutilization"
    assert metric_name("MyApp/Orders", "Latency p99") == "aws_myapp_orders_latency_p99"
    assert resource_for("AWS/RDS", (("DBInstanceIdentifier", "db-1"), ("Role", "WRITER"))) == "db-1"
    assert resource_for("AWS/Usage", (("Service", "EC2"), ("Type", "API"))) == "Service=EC2,Type=API"
    assert unit_for("AWS/EC2", "CPUUtilization", "p95") == "percent"
    assert unit_for("AWS/EC2", "CPUUtilization", "SampleCount") == "count"
    assert unit_for("Custom", "Queue", "Average", {"Queue": "Count/Second"}) == "count_per_second"
    labels = q(1).labels
    assert labels == {"namespace": "AWS/EC2", "region": "eu-west-1", "account": "prod", "statistic": "Average", "InstanceId": "i-1"}


def test_an_accounts_tenant_becomes_the_series_tenant_label():
    config = parse_config({"accounts": [{"name": "acme-prod", "tenant": "acme", "regions": ["eu-west-1"],
                                                        "metrics": [{"namespace": "AWS/EC2"}]}]})
    assert config.accounts[0].tenant == "acme"
    query = dataclasses.replace(q(1), tenant="acme")
    assert query.labels["tenant"] == "acme" and "tenant" not in q(1).labels
