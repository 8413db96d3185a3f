"""`cloudwatch_points`: AWS CloudWatch metrics per hour, loaded into `points` (SPEC §2.1)."""

import os

import dagster as dg
from pydantic import Field

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.cloudwatch import collect
from metrics_pipeline.lib.cloudwatch.config import ENDPOINT_ENV, CloudWatchConfig, default_path, load_config

SOURCE = "cloudwatch"


class CloudWatchResource(dg.ConfigurableResource):
    """Which accounts, regions and metrics to collect (a YAML file) and an optional endpoint override."""

    config_path: str = Field(description="YAML configuration (METRICS_PIPELINE_CLOUDWATCH_CONFIG).")
    endpoint_url: str | None = Field(default=None, description="CloudWatch endpoint override (moto in tests/demo).")

    def load(self) -> CloudWatchConfig:
        return load_config(self.config_path)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "cloudwatch": CloudWatchResource(
                config_path=str(default_path()), endpoint_url=os.environ.get(ENDPOINT_ENV) or None
            )
        }
    )


def _window_has_points(warehouse: WarehouseResource, start, end) -> bool:
    with warehouse.connect() as conn:
        return conn.execute(
            f"""SELECT EXISTS (SELECT 1 FROM {warehouse.schema}.points p JOIN {warehouse.schema}.series s USING (series_id)
                WHERE s.source = %s AND p.ts >= %s AND p.ts < %s)""",
            (SOURCE, start, end),
        ).fetchone()[0]


def _calls_table(stats: collect.FetchStats) -> str:
    lines = ["| operation | requests | of which retries |", "|---|---|---|"]
    for op, count in sorted(stats.api_calls.items()):
        lines.append(f"| {op} | {count} | {count - stats.operations.get(op, 0)} |")
    return "\n".join(lines)


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    pool="cloudwatch",
    group_name="cloudwatch",
    kinds={"aws", "postgres"},
    owners=["team:platform"],
    tags={"source": SOURCE},
)
def cloudwatch_points(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, cloudwatch: CloudWatchResource
) -> dg.MaterializeResult:
    """One row per CloudWatch datapoint (source `cloudwatch`): each configured (metric, dimensions,
    statistic) of each account and region is a series labelled with namespace, dimensions, region,
    account and statistic. A run replaces its window, so the late-data re-run corrects in place."""
    config = cloudwatch.load()
    window = context.partition_time_window
    if not config.configured:
        # Not configured is a state, not a failure: downstream assets must not wait on it.
        return dg.MaterializeResult(metadata={"status": "not configured", "config": cloudwatch.config_path, "points": 0})
    frame, stats, _ = collect.fetch(config, window.start, window.end, endpoint_url=cloudwatch.endpoint_url)
    if stats.coarsened and _window_has_points(warehouse, window.start, window.end):
        # CloudWatch now only has a coarser period for this window: replacing what was stored at the
        # configured period would delete most of it. Keep the finer data.
        return dg.MaterializeResult(metadata={
            "status": "kept stored data",
            "reason": f"CloudWatch now holds this window at {max(stats.periods)} s only; the stored points are finer",
            "points": 0, "points_changed": 0, "api_calls": stats.total_calls,
            "estimated_cost_usd": round(stats.estimated_usd, 6),
        })
    # Series scope: a series ListMetrics no longer returns (a terminated instance) keeps its points.
    result = warehouse.load_points(
        frame, source=SOURCE, start=window.start, end=window.end, out_of_window="drop", scope="series"
    )
    return dg.MaterializeResult(
        metadata={
            "status": "collected",
            "dagster/row_count": result.points,
            "points": result.points,
            "points_changed": result.changed,
            "duplicate_points": result.dropped.get("duplicate", 0),
            "non_finite_values": result.dropped.get("non_finite", 0),
            "series": stats.series,
            "empty_series": stats.empty_series,
            "datapoints": stats.datapoints,
            "api_calls": stats.total_calls,
            "retries": stats.retries,
            "discovery_pages": stats.discovery_pages,
            "metrics_requested": stats.metrics_requested,
            "estimated_cost_usd": round(stats.estimated_usd, 6),
            "period_seconds": ", ".join(str(p) for p in sorted(stats.periods)) or "none",
            "partial_results": stats.partial_results,
            "api_requests": dg.MetadataValue.md(_calls_table(stats)),
            "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        }
    )
