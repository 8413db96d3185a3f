"""CloudWatch test data: moto seeded with known values (`seeded`, `cw_config`) and the CloudWatch double
(`double`, `indexed_double`), shared by the library, asset, fault and security tests.

Registered once as a pytest plugin by the root conftest (`pytest_plugins`), so every folder sees
these fixtures; `HOUR` (the seeded hour) is imported by the tests that read it.
"""

from datetime import datetime, timedelta, timezone

import boto3
import pytest

from metrics_pipeline.lib.cloudwatch.config import parse_config

HOUR = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)


@pytest.fixture
def seeded(moto_endpoint):
    """Three EC2 instances and one RDS instance, one value a minute for an hour; returns the truth."""
    import uuid

    region = "eu-west-1"
    cw = boto3.client("cloudwatch", endpoint_url=moto_endpoint, region_name=region)
    suffix = uuid.uuid4().hex[:6]  # moto is shared by the session: keep this test's metrics apart
    truth = {}
    for i in range(3):
        instance = f"i-{suffix}{i}"
        values = [float((m * 7 + i * 13) % 100) for m in range(60)]
        truth[("AWS/EC2", "CPUUtilization", instance)] = values
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[
            {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": instance}],
             "Timestamp": HOUR + timedelta(minutes=m), "Value": v, "Unit": "Percent"} for m, v in enumerate(values)])
    db = f"db-{suffix}"
    values = [float(1e9 - m * 1e6) for m in range(60)]
    truth[("AWS/RDS", "FreeableMemory", db)] = values
    cw.put_metric_data(Namespace="AWS/RDS", MetricData=[
        {"MetricName": "FreeableMemory", "Dimensions": [{"Name": "DBInstanceIdentifier", "Value": db}],
         "Timestamp": HOUR + timedelta(minutes=m), "Value": v, "Unit": "Bytes"} for m, v in enumerate(values)])
    return {"truth": truth, "suffix": suffix, "region": region, "endpoint": moto_endpoint}


@pytest.fixture
def cw_config(seeded):
    def make(**top):
        return parse_config({
            "discovery_cache_seconds": 0,
            **top,
            "accounts": [{
                "name": "prod", "account_id": "123456789012", "regions": [seeded["region"]],
                "endpoint_url": seeded["endpoint"],
                "metrics": [
                    {"namespace": "AWS/EC2", "metric_names": ["CPUUtilization"], "dimensions": {"InstanceId": [f"i-{seeded['suffix']}{i}" for i in range(3)]}},
                    {"namespace": "AWS/RDS", "metric_names": ["FreeableMemory"], "dimensions": {"DBInstanceIdentifier": f"db-{seeded['suffix']}"},
                     "statistics": ["Average", "Maximum"]},
                ],
            }],
        })
    return make


@pytest.fixture
def double(moto_endpoint, monkeypatch):
    """moto's CloudWatch with percentiles, NextToken paging and injected faults."""
    from metrics_pipeline.dev.doubles.cloudwatch import CloudWatchDouble

    return CloudWatchDouble().install(monkeypatch)


@pytest.fixture
def indexed_double(moto_endpoint, monkeypatch):
    from metrics_pipeline.dev.doubles.cloudwatch import CloudWatchDouble

    return CloudWatchDouble(indexed=True).install(monkeypatch)
