"""Turn a CloudWatch configuration and a time window into GetMetricData calls, before any call.

Pure functions, so the cost of a run is known (and can be refused) before spending it:
* `period_for`: CloudWatch keeps 1-minute data 15 days, 5-minute 63 days, 1-hour 455 days; an
  older window automatically asks for the finest period that still exists, and one older than
  455 days is refused with a message that says CloudWatch no longer has it.
* `plan_calls`: at most 500 queries per call and at most 100,800 datapoints per call; a window too
  long for even one query per call is split. For an hour at 60 s that is ceil(queries / 500) calls.
  StartTime/EndTime are aligned to the period.
* `estimate`: metrics requested (each query counts once per call it is in) and USD at 0.01 / 1,000.
"""

from __future__ import annotations

import dataclasses
import math
import re
from datetime import datetime, timedelta, timezone

MAX_QUERIES_PER_CALL = 500
MAX_DATAPOINTS_PER_CALL = 100_800
USD_PER_1000_METRICS = 0.01
#: (age limit, finest period CloudWatch still holds for data older than the previous limit)
RETENTION = ((timedelta(days=15), 60), (timedelta(days=63), 300), (timedelta(days=455), 3600))

# Units of well-known AWS metrics, in the project's vocabulary (CloudWatch does not return units
# from GetMetricData). Anything else is "none" unless the configuration names it.
_AWS_UNITS = {
    "Percent": "percent", "Bytes": "bytes", "Bytes/Second": "bytes_per_second", "Count": "count",
    "Count/Second": "count_per_second", "Seconds": "seconds", "Milliseconds": "milliseconds",
}
KNOWN_UNITS = {
    ("AWS/EC2", "CPUUtilization"): "percent", ("AWS/EC2", "NetworkIn"): "bytes", ("AWS/EC2", "NetworkOut"): "bytes",
    ("AWS/EC2", "NetworkPacketsIn"): "count", ("AWS/EC2", "NetworkPacketsOut"): "count",
    ("AWS/EC2", "DiskReadBytes"): "bytes", ("AWS/EC2", "DiskWriteBytes"): "bytes",
    ("AWS/EC2", "DiskReadOps"): "count", ("AWS/EC2", "DiskWriteOps"): "count",
    ("AWS/EC2", "EBSReadBytes"): "bytes", ("AWS/EC2", "EBSWriteBytes"): "bytes",
    ("AWS/EC2", "StatusCheckFailed"): "count", ("AWS/EC2", "CPUCreditBalance"): "count",
    ("AWS/RDS", "CPUUtilization"): "percent", ("AWS/RDS", "FreeableMemory"): "bytes",
    ("AWS/RDS", "FreeStorageSpace"): "bytes", ("AWS/RDS", "DatabaseConnections"): "count",
    ("AWS/RDS", "ReadIOPS"): "count_per_second", ("AWS/RDS", "WriteIOPS"): "count_per_second",
    ("AWS/RDS", "ReadLatency"): "seconds", ("AWS/RDS", "WriteLatency"): "seconds",
    ("AWS/RDS", "ReadThroughput"): "bytes_per_second", ("AWS/RDS", "WriteThroughput"): "bytes_per_second",
    ("AWS/RDS", "NetworkReceiveThroughput"): "bytes_per_second", ("AWS/RDS", "NetworkTransmitThroughput"): "bytes_per_second",
    ("AWS/RDS", "ReplicaLag"): "seconds", ("AWS/RDS", "SwapUsage"): "bytes",
    ("AWS/ELB", "RequestCount"): "count", ("AWS/ELB", "Latency"): "seconds",
    ("AWS/ELB", "HealthyHostCount"): "count", ("AWS/ELB", "UnHealthyHostCount"): "count",
    ("AWS/ELB", "HTTPCode_Backend_5XX"): "count", ("AWS/ELB", "HTTPCode_ELB_5XX"): "count",
    ("AWS/ELB", "SurgeQueueLength"): "count", ("AWS/ELB", "SpilloverCount"): "count",
    ("AWS/ApplicationELB", "RequestCount"): "count", ("AWS/ApplicationELB", "TargetResponseTime"): "seconds",
    ("AWS/ApplicationELB", "HTTPCode_Target_5XX_Count"): "count", ("AWS/ApplicationELB", "HTTPCode_ELB_5XX_Count"): "count",
    ("AWS/ApplicationELB", "ProcessedBytes"): "bytes", ("AWS/ApplicationELB", "HealthyHostCount"): "count",
    ("AWS/ApplicationELB", "UnHealthyHostCount"): "count", ("AWS/ApplicationELB", "ActiveConnectionCount"): "count",
}
#: Dimensions that name the thing measured, most specific first; the series' `resource`.
RESOURCE_DIMENSIONS = (
    "InstanceId", "DBInstanceIdentifier", "DBClusterIdentifier", "LoadBalancer", "LoadBalancerName", "TargetGroup",
    "FunctionName", "QueueName", "TableName", "BucketName", "CacheClusterId", "ClusterName", "ServiceName",
    "VolumeId", "AutoScalingGroupName",
)


class WindowTooOld(ValueError):
    """The window is older than CloudWatch's longest retention (455 days)."""


@dataclasses.dataclass(frozen=True)
class Query:
    """One (metric, dimensions, statistic) of one account and region: one series."""

    account: str
    account_id: str | None
    region: str
    namespace: str
    metric_name: str
    dimensions: tuple[tuple[str, str], ...]
    stat: str
    period: int
    unit: str
    tenant: str | None = None

    @property
    def series_metric(self) -> str:
        return metric_name(self.namespace, self.metric_name)

    @property
    def resource(self) -> str:
        return resource_for(self.namespace, self.dimensions)

    @property
    def labels(self) -> dict[str, str]:
        labels = {"namespace": self.namespace, "region": self.region, "account": self.account, "statistic": self.stat}
        if self.account_id:
            labels["account_id"] = self.account_id
        if self.tenant:
            labels["tenant"] = self.tenant  # series.tenant: BI roles restricted to tenants see only theirs
        # Dimensions keep their own names, unless one collides with the labels above.
        labels.update({(f"dim_{name}" if name in labels else name): value for name, value in self.dimensions})
        return labels

    def request(self, query_id: str) -> dict:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": self.namespace,
                    "MetricName": self.metric_name,
                    "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
                },
                "Period": self.period,
                "Stat": self.stat,
            },
            "ReturnData": True,
        }


@dataclasses.dataclass(frozen=True)
class Call:
    """One GetMetricData request (before NextToken pages)."""

    region_key: tuple[str, str]  # (account, region): which client makes the call
    queries: tuple[Query, ...]
    start: datetime
    end: datetime


def metric_name(namespace: str, name: str) -> str:
    """`AWS/EC2` + `CPUUtilization` -> `aws_ec2_cpuutilization` (SPEC §2 naming)."""
    text = f"{namespace}_{name}" if namespace.startswith("AWS/") else f"aws_{namespace}_{name}"
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def resource_for(namespace: str, dimensions: tuple[tuple[str, str], ...]) -> str:
    values = dict(dimensions)
    for name in RESOURCE_DIMENSIONS:
        if name in values:
            return values[name]
    if dimensions:
        return ",".join(f"{n}={v}" for n, v in sorted(dimensions))
    return namespace


def unit_for(namespace: str, name: str, stat: str, overrides: dict[str, str] | None = None) -> str:
    if stat == "SampleCount":
        return "count"
    if overrides and name in overrides:
        return _AWS_UNITS.get(overrides[name], overrides[name])
    return KNOWN_UNITS.get((namespace, name), "none")


def period_for(start: datetime, now: datetime, configured: int) -> int:
    """The period to ask for a window starting at `start`, given CloudWatch's retention.

    CloudWatch answers an unsupported period with no datapoints and no error, so: high-resolution
    periods (< 60 s) only within 3 hours; beyond 15 days a multiple of 300 s; beyond 63 days a
    multiple of 3600 s; beyond 455 days nothing.
    """
    age = now - start
    if age <= timedelta(hours=3):
        return configured
    finest = next((period for limit, period in RETENTION if age <= limit), None)
    if finest is None:
        raise WindowTooOld(
            f"the window starting {start.isoformat()} is {age.days} days old: CloudWatch keeps metrics for "
            f"at most 455 days (1-hour resolution), so it no longer has this data"
        )
    return max(finest, math.ceil(configured / finest) * finest)


def align(start: datetime, end: datetime, period: int) -> tuple[datetime, datetime]:
    """StartTime floored and EndTime ceiled to a multiple of the period (epoch-aligned)."""
    s = math.floor(start.timestamp() / period) * period
    e = math.ceil(end.timestamp() / period) * period
    return datetime.fromtimestamp(s, tz=timezone.utc), datetime.fromtimestamp(e, tz=timezone.utc)


def plan_calls(queries: list[Query], start: datetime, end: datetime) -> list[Call]:
    """Group queries by client and period, and split them into calls within both API limits."""
    calls: list[Call] = []
    groups: dict[tuple, list[Query]] = {}
    for query in queries:
        groups.setdefault(((query.account, query.region), query.period), []).append(query)
    for (region_key, period), group in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        s, e = align(start, end, period)
        points = int((e - s).total_seconds() // period)
        if points <= MAX_DATAPOINTS_PER_CALL:
            windows = [(s, e)]
        else:
            step = timedelta(seconds=MAX_DATAPOINTS_PER_CALL * period)
            windows = []
            cursor = s
            while cursor < e:
                windows.append((cursor, min(e, cursor + step)))
                cursor += step
        for ws, we in windows:
            per_query = int((we - ws).total_seconds() // period)
            size = max(1, min(MAX_QUERIES_PER_CALL, MAX_DATAPOINTS_PER_CALL // max(per_query, 1)))
            for i in range(0, len(group), size):
                calls.append(Call(region_key, tuple(group[i:i + size]), ws, we))
    return calls


def estimate(calls: list[Call]) -> tuple[int, float]:
    """(metrics requested, estimated USD) for a list of calls."""
    requested = sum(len(c.queries) for c in calls)
    return requested, requested * USD_PER_1000_METRICS / 1000
