"""Behaviour moto does not implement, through the CloudWatch double (see metrics_pipeline/dev/doubles/cloudwatch.py)."""

import math
import uuid
from datetime import timedelta

import boto3
import numpy as np
import pytest

from metrics_pipeline.lib.cloudwatch.collect import CloudWatchError, fetch
from metrics_pipeline.lib.cloudwatch.config import parse_config
from metrics_pipeline_tests.support.cloudwatch import HOUR


def config_for(endpoint, instance, **top):
    return parse_config({
        "discovery_cache_seconds": 0, **top,
        "accounts": [{"name": "prod", "regions": ["eu-west-1"], "endpoint_url": endpoint, "metrics": [{
            "namespace": "AWS/EC2", "metric_names": ["CPUUtilization"], "dimensions": {"InstanceId": instance},
            "statistics": ["Average"], "extended_statistics": ["p50", "p95", "p99"]}]}],
    })


@pytest.fixture
def busy_instance(moto_endpoint):
    """Ten skewed samples a minute for an hour: percentiles differ from the average."""
    instance = f"i-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(3)
    values = {m: list(np.round(rng.lognormal(2.0, 1.0, 10), 3)) for m in range(60)}
    cw = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name="eu-west-1")
    for m, vs in values.items():
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance}],
             "Timestamp": HOUR + timedelta(minutes=m, seconds=s), "Value": float(v)} for s, v in enumerate(vs)])
    return instance, values


def nearest_rank(values, p):
    ordered = sorted(values)
    return ordered[max(math.ceil(p / 100 * len(ordered)), 1) - 1]


def test_extended_statistics_become_series_of_their_own(double, moto_endpoint, busy_instance, tmp_path):
    instance, values = busy_instance
    frame, stats, _ = fetch(config_for(moto_endpoint, instance), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    assert stats.series == 4 and stats.datapoints == 240
    for stat, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        got = frame[frame["labels"].astype(str).str.contains(f'"statistic":"{stat}"')].sort_values("ts")["value"]
        assert list(got) == [nearest_rank(values[m], p) for m in range(60)], stat


def test_throttling_and_server_errors_are_retried_with_backoff(double, moto_endpoint, busy_instance, tmp_path):
    instance, _ = busy_instance
    double.fail_next("Throttling", 2)
    double.fail_next("InternalServiceFault", 1)
    frame, stats, _ = fetch(config_for(moto_endpoint, instance), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    assert len(frame) == 240
    assert stats.api_calls["GetMetricData"] == 4 and stats.retries == 3


def test_retries_are_bounded_and_the_error_is_clear(double, moto_endpoint, busy_instance, tmp_path):
    instance, _ = busy_instance
    double.fail_next("Throttling", 10)
    with pytest.raises(CloudWatchError, match=r"GetMetricData failed for account 'prod' in eu-west-1: Throttling \(gave up after 2 attempts"):
        fetch(config_for(moto_endpoint, instance, max_attempts=2), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)


def test_next_token_pages_are_followed_and_reassembled_in_order(double, moto_endpoint, busy_instance, tmp_path):
    instance, _ = busy_instance
    whole, _, _ = fetch(config_for(moto_endpoint, instance), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    double.page_size = 25
    paged, stats, _ = fetch(config_for(moto_endpoint, instance), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    assert stats.api_calls["GetMetricData"] == math.ceil(240 / 25)
    assert sum(1 for r in double.requests if r["next_token"]) == math.ceil(240 / 25) - 1
    assert paged.reset_index(drop=True).equals(whole.reset_index(drop=True))
    assert all(r["scan_by"] == "TimestampAscending" for r in double.requests)


def test_results_cloudwatch_cut_without_a_next_token_fail_the_fetch_naming_what_was_cut(
        double, moto_endpoint, busy_instance, tmp_path):
    """PartialData on the last page: the data is incomplete, and a green run must not hide it."""
    instance, _ = busy_instance
    double.page_size, double.cut_results = 25, True
    with pytest.raises(CloudWatchError, match=r"incomplete results \(PartialData, no NextToken\) .* "
                                              r"MaxDatapointsExceeded: results were cut. Nothing was loaded"):
        fetch(config_for(moto_endpoint, instance), HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)


def test_long_windows_are_split_so_no_call_exceeds_100800_datapoints(double, moto_endpoint, tmp_path):
    config = parse_config({"discovery_cache_seconds": 0, "statistics": ["Average"], "accounts": [{
        "name": "prod", "regions": ["eu-west-1"], "endpoint_url": moto_endpoint, "metrics": [{
            "namespace": "AWS/EC2", "metric_names": ["CPUUtilization"],
            "dimensions": {"InstanceId": [f"i-split{i}" for i in range(80)]}}]}]})
    start = HOUR - timedelta(days=1)
    fetch(config, start, start + timedelta(days=1), cache_dir=tmp_path)  # 80 queries x 1,440 points
    calls = [r for r in double.requests if not r["next_token"]]
    assert [r["queries"] for r in calls] == [70, 10]
    assert all(r["queries"] * 1440 <= 100_800 for r in calls)


def test_the_indexed_double_answers_like_moto(moto_endpoint, busy_instance, tmp_path, monkeypatch):
    from metrics_pipeline.dev.doubles.cloudwatch import CloudWatchDouble

    instance, _ = busy_instance
    config = config_for(moto_endpoint, instance)
    plain = CloudWatchDouble().install(monkeypatch)
    expected, _, _ = fetch(config, HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    monkeypatch.undo()
    CloudWatchDouble(indexed=True).install(monkeypatch)
    got, _, _ = fetch(config, HOUR, HOUR + timedelta(hours=1), cache_dir=tmp_path)
    for column in ("metric", "resource", "labels", "unit", "ts"):
        assert list(got[column]) == list(expected[column]), column
    assert np.allclose(got["value"], expected["value"], rtol=1e-12)  # sum/count vs numpy mean
    assert plain.requests  # the first fetch went through moto's own implementation
