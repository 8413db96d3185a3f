"""`cloudwatch_points`: AWS CloudWatch metrics per hour, loaded into `points` (SPEC §2.1)."""

import dagster as dg

from metrics_pipeline.defs.cloudwatch.resources import CloudWatchResource
from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.cloudwatch import collect
from metrics_pipeline.lib.warehouse.load import load_points, window_has_points

SOURCE = "cloudwatch"


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
    if stats.coarsened and window_has_points(warehouse.get(), SOURCE, window.start, window.end):
        # CloudWatch now only has a coarser period for this window: replacing what was stored at the
        # configured period would delete most of it. Keep the finer data.
        return dg.MaterializeResult(metadata={
            "status": "kept stored data",
            "reason": f"CloudWatch now holds this window at {max(stats.periods)} s only; the stored points are finer",
            "points": 0, "points_changed": 0, "api_calls": stats.total_calls,
            "estimated_cost_usd": round(stats.estimated_usd, 6),
        })
    # Series scope: a series ListMetrics no longer returns (a terminated instance) keeps its points.
    result = load_points(
        warehouse.get(), frame, source=SOURCE, start=window.start, end=window.end, out_of_window="drop", scope="series"
    )
    requests = [(op, count, count - stats.operations.get(op, 0)) for op, count in sorted(stats.api_calls.items())]
    return dg.MaterializeResult(
        metadata={
            "status": "collected",
            **result.as_metadata(),
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
            "api_requests": dg.MetadataValue.md(markdown.table(["operation", "requests", "of which retries"], requests)),
        }
    )
