"""Every source with demo data for a past window, for the end-to-end test and the backfill benchmark.

`local_sources()` starts a local CloudWatch (moto + our double) seeded with the demo's EC2/RDS metrics,
the WhaTap API double, and writes host samples (1 s, in the agent's minute files) and simulated
ingestion-job logs into a landing zone. It yields the environment the Dagster code needs to collect
all four, and stops the servers on exit.

The two API doubles are started by `start_cloudwatch_double()` and `start_whatap_double()`, here and
in `make dev` (`devserver.py`) alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from metrics_pipeline.dev.demo_host import BUSY_HOST, host_minute_lines
from metrics_pipeline.lib import settings
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import open_landing

if TYPE_CHECKING:
    from metrics_pipeline.dev.doubles.cloudwatch import LocalCloudWatch

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


CLOUDWATCH_REGION = "eu-west-1"


@dataclass
class CloudWatchDemo:
    """A running local CloudWatch (moto + the indexed double on 127.0.0.1) and what reaches it."""

    local: LocalCloudWatch
    client: Any  # a boto3 CloudWatch client on it, with the server's dummy credentials
    env: dict[str, str]  # selects it: configuration file, credentials, region
    datapoints: int  # written at start (synthetic metrics: one each, to register them)

    @property
    def endpoint_url(self) -> str:
        return self.local.endpoint_url

    def publish(self, start: datetime, end: datetime, seed: int) -> int:
        """More of the demo's EC2/RDS metrics, every minute of [start, end); returns datapoints written."""
        from metrics_pipeline.dev import demo_cloudwatch

        return demo_cloudwatch.publish(self.client, start, end, seed=seed)

    def stop(self) -> None:
        self.local.stop()


def start_cloudwatch_double(
    config_path: Path,
    start: datetime,
    end: datetime,
    *,
    synthetic_metrics: int | None = None,
    statistics: Sequence[str] = ("Average",),
    discovery_cache_seconds: int | None = None,
) -> CloudWatchDemo:
    """A local CloudWatch on 127.0.0.1 holding the demo's EC2/RDS metrics for every minute of
    [start, end) (`demo_cloudwatch`), with a configuration collecting them written to `config_path`.
    Stop it after (`.stop()`).

    With `synthetic_metrics=N`, N synthetic EC2 metrics instead, collected with `statistics` (the
    double answers every minute of any window: `double.synthetic_value`). `discovery_cache_seconds`
    overrides the demo configuration's. `.env` selects the server: set it in the collecting process."""
    import boto3

    from metrics_pipeline.dev import demo_cloudwatch as demo
    from metrics_pipeline.dev.doubles.cloudwatch import LocalCloudWatch

    local = LocalCloudWatch(indexed=True, synthetic=synthetic_metrics is not None)
    try:
        credentials = {"AWS_ACCESS_KEY_ID": "demo", "AWS_SECRET_ACCESS_KEY": "demo"}  # the local server's, not AWS's
        client = boto3.client("cloudwatch", endpoint_url=local.endpoint_url, region_name=CLOUDWATCH_REGION,
                              aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
                              aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"])
        if synthetic_metrics is None:
            datapoints = demo.publish(client, start, end)
            config = demo.demo_config(local.endpoint_url)
        else:
            datapoints = synthetic_metrics
            config = _synthetic_cloudwatch(client, local.endpoint_url, synthetic_metrics, statistics, start)
        if discovery_cache_seconds is not None:
            config["discovery_cache_seconds"] = discovery_cache_seconds
        config_path.write_text(yaml.safe_dump(config))
    except BaseException:
        local.stop()
        raise
    env = {"METRICS_PIPELINE_CLOUDWATCH_CONFIG": str(config_path), **credentials, "AWS_DEFAULT_REGION": CLOUDWATCH_REGION}
    return CloudWatchDemo(local=local, client=client, env=env, datapoints=datapoints)


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
    from metrics_pipeline.dev.simulate_logs import simulate

    state.mkdir(parents=True, exist_ok=True)
    landing = str(state / "landing")
    env = {settings.LANDING_ENV: landing}
    counts = {"host_samples": write_host_samples(landing, hosts, start, end)}
    counts["ingestion_records"] = simulate(open_landing(landing), start, end, jobs_per_hour=jobs_per_hour).records
    missing = state / "absent.yaml"  # an unconfigured source: its asset records "not configured"
    env["METRICS_PIPELINE_CLOUDWATCH_CONFIG"] = env["METRICS_PIPELINE_WHATAP_CONFIG"] = str(missing)
    cloudwatch_double = whatap_double = None
    try:
        if cloudwatch:
            config_path = state / "cloudwatch.yaml"
            if cloudwatch_metrics is None:  # the demo's metrics, a few minutes beyond the window
                cloudwatch_double = start_cloudwatch_double(
                    config_path, start - timedelta(minutes=5), end + timedelta(minutes=5), discovery_cache_seconds=0)
                counts["cloudwatch_datapoints"] = cloudwatch_double.datapoints
            else:
                cloudwatch_double = start_cloudwatch_double(
                    config_path, start, end, synthetic_metrics=cloudwatch_metrics, statistics=cloudwatch_statistics)
                counts["cloudwatch_metrics"] = cloudwatch_metrics
            env.update(cloudwatch_double.env)
        if whatap:
            whatap_double, _, whatap_env = start_whatap_double(state / "whatap.yaml")
            env.update(whatap_env)
        yield LocalSources(env=env, landing_url=landing, counts=counts)
    finally:
        if whatap_double is not None:
            whatap_double.stop()
        if cloudwatch_double is not None:
            cloudwatch_double.stop()
