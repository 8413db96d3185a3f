"""CloudWatch collection cost and speed for 2,000 metrics x 1 hour (SPEC §8 "CloudWatch").

    python benchmarks/cloudwatch.py [--metrics 2000] [--statistics Average]

A local CloudWatch (moto's server plus the indexed double, dev/doubles/cloudwatch.py) is seeded
with N EC2 CPUUtilization series at 1-minute resolution for one hour. The source then discovers
them (ListMetrics, all pages), plans, fetches and loads the hour, as `cloudwatch_points` does.
Reported: API calls (checked: must equal ceil(queries / 500) + discovery pages), metrics requested,
estimated cost, and points/s fetched+parsed and loaded. Reference in the same run: what the
per-metric exporters' way costs for the same data (one GetMetricStatistics request per metric and
statistic per scrape window), with its requests timed on a sample of 100 metrics against the same
server. Appends a row to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
from common import append_result, scratch_database

from metrics_pipeline.dev.doubles.cloudwatch import LocalCloudWatch
from metrics_pipeline.lib.cloudwatch.collect import fetch
from metrics_pipeline.lib.cloudwatch.config import parse_config
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse

BENCH_DB = "metrics_bench_cloudwatch"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", type=int, default=2000)
    parser.add_argument("--statistics", nargs="+", default=["Average"])
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "benchmark")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "benchmark")

    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    local = LocalCloudWatch(indexed=True)
    try:
        cw = boto3.client("cloudwatch", endpoint_url=local.endpoint_url, region_name="eu-west-1")
        t0 = time.perf_counter()
        datums = [
            {"MetricName": "CPUUtilization", "Dimensions": [{"Name": "InstanceId", "Value": f"i-{i:08x}"}],
             "Timestamp": hour + timedelta(minutes=m), "Value": float((i * 7 + m) % 100)}
            for i in range(args.metrics) for m in range(60)
        ]
        for lo in range(0, len(datums), 1000):
            cw.put_metric_data(Namespace="AWS/EC2", MetricData=datums[lo:lo + 1000])
        print(f"seeded {args.metrics} metrics x 60 datapoints in {time.perf_counter() - t0:.1f} s")

        config = parse_config({
            "discovery_cache_seconds": 0, "statistics": args.statistics,
            "accounts": [{"name": "bench", "regions": ["eu-west-1"], "endpoint_url": local.endpoint_url,
                          "metrics": [{"namespace": "AWS/EC2", "metric_names": ["CPUUtilization"],
                                       "dimensions": {"InstanceId": "*"}}]}],
        })
        t0 = time.perf_counter()
        frame, stats, calls = fetch(config, hour, hour + timedelta(hours=1), cache_dir=Path(tempfile.mkdtemp()))
        fetch_s = time.perf_counter() - t0
        queries = args.metrics * len(args.statistics)
        expected_calls = math.ceil(queries / 500) + stats.discovery_pages
        assert stats.total_calls == expected_calls, (stats.api_calls, expected_calls)

        # Reference: one GetMetricStatistics request per metric and statistic, timed on a sample.
        sample = min(100, args.metrics)
        t0 = time.perf_counter()
        for i in range(sample):
            cw.get_metric_statistics(
                Namespace="AWS/EC2", MetricName="CPUUtilization", Dimensions=[{"Name": "InstanceId", "Value": f"i-{i:08x}"}],
                StartTime=hour, EndTime=hour + timedelta(hours=1), Period=60, Statistics=args.statistics)
        per_request = (time.perf_counter() - t0) / sample
        naive_calls = args.metrics * len(args.statistics)
    finally:
        local.stop()

    with scratch_database(BENCH_DB) as dsn:
        migrate.migrate(Warehouse(dsn))
        t0 = time.perf_counter()
        result = loader.load_points(Warehouse(dsn), frame, source="cloudwatch", start=hour, end=hour + timedelta(hours=1))
        load_s = time.perf_counter() - t0

    n = len(frame)
    print(f"ours     : {stats.total_calls} API calls (GetMetricData {stats.api_calls['GetMetricData']}, "
          f"ListMetrics pages {stats.discovery_pages}) = ceil({queries}/500) + {stats.discovery_pages}; "
          f"{stats.metrics_requested:,} metrics requested, est. ${stats.estimated_usd:.4f}; "
          f"{n:,} points fetched+parsed in {fetch_s:.2f} s ({n / fetch_s:,.0f}/s), loaded in {load_s:.2f} s "
          f"({result.points / load_s:,.0f}/s)")
    print(f"reference: per-metric GetMetricStatistics = {naive_calls:,} requests "
          f"(est. ${naive_calls * 0.01 / 1000:.4f}), {per_request * 1000:.1f} ms each here -> "
          f"~{naive_calls * per_request:.1f} s sequential")
    if not args.no_write:
        append_result(
            "cloudwatch", f"{args.metrics:,} metrics x {len(args.statistics)} stat x 1 h at 60 s (local moto + double)",
            f"{stats.total_calls} calls (= ceil({queries}/500) + {stats.discovery_pages} discovery pages), "
            f"{stats.metrics_requested:,} metrics requested, est. ${stats.estimated_usd:.4f}; "
            f"{n / fetch_s:,.0f} points/s fetched+parsed, {result.points / load_s:,.0f} points/s loaded",
            f"per-metric GetMetricStatistics: {naive_calls:,} requests (~{naive_calls * per_request:.0f} s sequential on this moto)",
            f"{naive_calls / stats.total_calls:.0f} x fewer calls",
        )


if __name__ == "__main__":
    main()
