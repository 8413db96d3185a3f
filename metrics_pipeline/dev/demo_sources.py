"""Every source with demo data for a past window, for the end-to-end test and the backfill benchmark.

`local_sources()` starts a local CloudWatch (moto + our double) seeded with the demo's EC2/RDS metrics,
the WhaTap API double, and writes host samples (1 s, in the agent's minute files) and simulated
ingestion-job logs into a landing zone. It yields the environment the Dagster code needs to collect
all four, and stops the servers on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import yaml

from metrics_pipeline.lib import settings
from metrics_pipeline.dev.demo_host import BUSY_HOST, host_minute_lines
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import open_landing

DEMO_TOKEN_ENV = "METRICS_PIPELINE_DEMO_WHATAP_TOKEN"


def write_host_samples(landing_url: str, hosts: Sequence[str], start: datetime, end: datetime) -> int:
    """Minute files for every host over [start, end); the first host is the busy one. Returns samples."""
    zone = open_landing(landing_url)
    minutes = range(int(start.timestamp()) // 60 * 60, int(end.timestamp()), 60)
    for index, host in enumerate(hosts):
        for minute in minutes:
            zone.write(host_key(host, minute), host_minute_lines(host, index, minute).encode())
    return len(hosts) * len(minutes) * 60 * 3


def start_whatap_double(config_path: Path):
    """The WhaTap double on 127.0.0.1 (deterministic data for any window), a configuration pointing at
    it in `config_path`, and the environment that selects it: (double, url, env). Stop the double after."""
    from metrics_pipeline.dev.doubles.whatap import WhatapDouble

    double = WhatapDouble()
    url = double.start()
    config_path.write_text(yaml.safe_dump({"base_url": url, "account_token_env": DEMO_TOKEN_ENV}))
    # the double's token, not a real account's
    return double, url, {"METRICS_PIPELINE_WHATAP_CONFIG": str(config_path), DEMO_TOKEN_ENV: double.account_token}


SYNTHETIC_METRICS = ("CPUUtilization", "NetworkIn", "NetworkOut", "DiskReadOps", "DiskWriteOps")


def _synthetic_cloudwatch(client, endpoint_url: str, metrics: int, statistics: Sequence[str], start: datetime) -> dict:
    """Register `metrics` EC2 metrics (one datapoint each, so ListMetrics finds them) and return
    the configuration that collects them all."""
    instances = -(-metrics // len(SYNTHETIC_METRICS))
    datums = [
        {"MetricName": name, "Dimensions": [{"Name": "InstanceId", "Value": f"i-{i:017x}"}], "Timestamp": start, "Value": 1.0}
        for i in range(instances) for name in SYNTHETIC_METRICS
    ][:metrics]
    for lo in range(0, len(datums), 1000):
        client.put_metric_data(Namespace="AWS/EC2", MetricData=datums[lo:lo + 1000])
    return {
        "discovery_cache_seconds": 0,
        "statistics": list(statistics),
        "accounts": [{
            "name": "bench", "account_id": "000000000000", "regions": ["eu-west-1"], "endpoint_url": endpoint_url,
            "metrics": [{"namespace": "AWS/EC2", "metric_names": list(SYNTHETIC_METRICS), "dimensions": {"InstanceId": "*"}}],
        }],
    }


@dataclass
class LocalSources:
    env: dict[str, str]
    landing_url: str
    counts: dict[str, int] = field(default_factory=dict)


@contextmanager
def local_sources(
    state: Path,
    start: datetime,
    end: datetime,
    *,
    hosts: Sequence[str] = (BUSY_HOST,),
    jobs_per_hour: int = 120,
    cloudwatch: bool = True,
    cloudwatch_metrics: int | None = None,
    cloudwatch_statistics: Sequence[str] = ("Average",),
    whatap: bool = True,
) -> Iterator[LocalSources]:
    """Demo data for [start, end) (UTC, whole hours) in `state`; yields the env for the Dagster code.

    CloudWatch holds the demo's 24 EC2/RDS metrics, or with `cloudwatch_metrics=N` N synthetic EC2
    metrics (the double answers every minute of any window; see `double.synthetic_value`)."""
    import boto3

    from metrics_pipeline.dev import demo_cloudwatch as demo
    from metrics_pipeline.dev.doubles.cloudwatch import LocalCloudWatch
    from metrics_pipeline.dev.simulate_logs import simulate
    state.mkdir(parents=True, exist_ok=True)
    landing = str(state / "landing")
    env = {settings.LANDING_ENV: landing}
    counts = {"host_samples": write_host_samples(landing, hosts, start, end)}
    counts["ingestion_records"] = simulate(open_landing(landing), start, end, jobs_per_hour=jobs_per_hour).records
    missing = state / "absent.yaml"  # an unconfigured source: its asset records "not configured"
    env["METRICS_PIPELINE_CLOUDWATCH_CONFIG"] = env["METRICS_PIPELINE_WHATAP_CONFIG"] = str(missing)
    local = double = None
    try:
        if cloudwatch:
            local = LocalCloudWatch(indexed=True, synthetic=cloudwatch_metrics is not None)
            client = boto3.client("cloudwatch", endpoint_url=local.endpoint_url, region_name="eu-west-1",
                                  aws_access_key_id="demo", aws_secret_access_key="demo")
            if cloudwatch_metrics is None:
                counts["cloudwatch_datapoints"] = demo.publish(client, start - timedelta(minutes=5), end + timedelta(minutes=5))
                config = {**demo.demo_config(local.endpoint_url), "discovery_cache_seconds": 0}
            else:
                config = _synthetic_cloudwatch(client, local.endpoint_url, cloudwatch_metrics, cloudwatch_statistics, start)
                counts["cloudwatch_metrics"] = cloudwatch_metrics
            path = state / "cloudwatch.yaml"
            path.write_text(yaml.safe_dump(config))
            env["METRICS_PIPELINE_CLOUDWATCH_CONFIG"] = str(path)
            env.update(AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo", AWS_DEFAULT_REGION="eu-west-1")
        if whatap:
            double, _, whatap_env = start_whatap_double(state / "whatap.yaml")
            env.update(whatap_env)
        yield LocalSources(env=env, landing_url=landing, counts=counts)
    finally:
        if double is not None:
            double.stop()
        if local is not None:
            local.stop()
