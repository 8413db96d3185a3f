"""A realistic day of EC2 and RDS metrics for the demo's local CloudWatch (`make dev`).

Six EC2 instances with a daily load curve and noise (one of them, `i-0busy...`, runs hot in the
afternoon, so threshold rules have something to find), two RDS instances, at one datapoint a
minute; `feed()` keeps publishing the current minute while the demo runs. The account belongs to
the demo tenant (`demo_host.DEMO_TENANT`), like the demo hosts.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

from metrics_pipeline.dev.demo_host import DEMO_TENANT

INSTANCES = ("i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002", "i-0a1b2c3d4e5f60003",
             "i-0a1b2c3d4e5f60004", "i-0a1b2c3d4e5f60005", "i-0busy0000000000006")
DATABASES = ("orders-db", "analytics-db")


def _datums(ts: datetime, rng: random.Random) -> dict[str, list[dict]]:
    hour = ts.hour + ts.minute / 60
    daily = 0.5 + 0.5 * math.sin((hour - 9) / 24 * 2 * math.pi)  # peak mid-afternoon UTC
    ec2, rds = [], []
    for i, instance in enumerate(INSTANCES):
        busy = instance.startswith("i-0busy") and 13 <= ts.hour < 16
        cpu = 97 - rng.random() * 4 if busy else max(0.5, min(99.0, 15 + 45 * daily + rng.gauss(0, 6) + i * 3))
        net = max(0.0, 2e7 * daily * (1 + i / 3) + rng.gauss(0, 2e6))
        dims = [{"Name": "InstanceId", "Value": instance}]
        ec2 += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": ts, "Value": round(cpu, 2), "Unit": "Percent"},
            {"MetricName": "NetworkIn", "Dimensions": dims, "Timestamp": ts, "Value": round(net), "Unit": "Bytes"},
            {"MetricName": "NetworkOut", "Dimensions": dims, "Timestamp": ts, "Value": round(net * 0.6), "Unit": "Bytes"},
        ]
    for j, db in enumerate(DATABASES):
        dims = [{"Name": "DBInstanceIdentifier", "Value": db}]
        rds += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": ts,
             "Value": round(max(1.0, 10 + 50 * daily + rng.gauss(0, 5)), 2), "Unit": "Percent"},
            {"MetricName": "FreeableMemory", "Dimensions": dims, "Timestamp": ts,
             "Value": round(4e9 - 2.5e9 * daily + rng.gauss(0, 1e8) - j * 1e9), "Unit": "Bytes"},
            {"MetricName": "DatabaseConnections", "Dimensions": dims, "Timestamp": ts,
             "Value": float(max(0, round(20 + 80 * daily + rng.gauss(0, 5)))), "Unit": "Count"},
        ]
    return {"AWS/EC2": ec2, "AWS/RDS": rds}


def publish(client, start: datetime, end: datetime, seed: int = 5) -> int:
    """PutMetricData for every minute in [start, end); returns datapoints written."""
    rng = random.Random(seed)
    batches: dict[str, list[dict]] = {"AWS/EC2": [], "AWS/RDS": []}
    written = 0
    ts = start.astimezone(timezone.utc).replace(second=0, microsecond=0)
    while ts < end:
        for namespace, datums in _datums(ts, rng).items():
            batches[namespace].extend(datums)
        ts += timedelta(minutes=1)
    for namespace, datums in batches.items():
        for lo in range(0, len(datums), 1000):
            client.put_metric_data(Namespace=namespace, MetricData=datums[lo:lo + 1000])
        written += len(datums)
    return written


def demo_config(endpoint_url: str) -> dict:
    """The demo's CloudWatch configuration: the sample's EC2 and RDS selectors on the local endpoint."""
    return {
        "discovery_cache_seconds": 300,
        "statistics": ["Average", "Minimum", "Maximum", "SampleCount"],
        "accounts": [{
            "name": "demo", "account_id": "000000000000", "tenant": DEMO_TENANT, "regions": ["eu-west-1"],
            "endpoint_url": endpoint_url,
            "metrics": [
                {"namespace": "AWS/EC2", "metric_names": ["CPUUtilization", "NetworkIn", "NetworkOut"],
                 "dimensions": {"InstanceId": "*"}},
                {"namespace": "AWS/RDS", "metric_names": ["CPUUtilization", "FreeableMemory", "DatabaseConnections"],
                 "dimensions": {"DBInstanceIdentifier": "*"}, "statistics": ["Average", "Maximum"]},
            ],
        }],
    }


def now() -> datetime:
    return datetime.now(timezone.utc)
