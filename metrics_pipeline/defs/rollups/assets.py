"""Rollups and series health behind every point source (SPEC §3, §4, §5).

`rollup_5m`, `rollup_1h` and `series_health_hourly` are one hourly multi-asset: the three are
computed from the same raw points in one run and one transaction, so dashboards never see a 5 m
tier that disagrees with the 1 h tier. `rollup_1d` is daily, fed by the 24 hours of `rollup_1h`
through a time-window partition mapping. The SQL is set-based over the whole window: a week of
backfill is one run and one statement per tier (see `metrics_pipeline.lib.rollups`).

Which sources may hold the rollups back: an hour waits for the API sources that are configured
(they are scheduled and land minutes apart, so one computation serves all of them). Sources that
arrive as files (host samples) and sources that are not configured never hold it back: an hour
of CloudWatch must not wait for a host collector that was down, nor for an AWS account that does
not exist. They update the rollups whenever they do land (late data re-computes the hour).
"""

from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.automation import derived_condition
from metrics_pipeline.defs.partitions import (
    DAILY_BACKFILL_POLICY,
    DERIVED_BACKFILL_POLICY,
    daily_partitions,
    hourly_partitions,
)
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import rollups, sla

#: Every asset that writes `points`.
from metrics_pipeline.lib import sources as api_sources
POINT_SOURCES = ["host_points", "cloudwatch_points", "whatap_points"]


def optional_sources() -> list[str]:
    """Point sources that never hold the rollups back: file-based ones, and unconfigured APIs."""
    return ["host_points", *(f"{source}_points" for source in ("cloudwatch", "whatap") if not api_sources.configured(source))]


ROLLUP_CONDITION = derived_condition(optional=dg.AssetSelection.assets(*optional_sources()), recheck_closed_hour=True)

_COMMON = dict(group_name="rollups", kinds={"postgres", "sql"}, owners=["team:platform"],
               automation_condition=ROLLUP_CONDITION)


def _table(results: list[rollups.TierResult]) -> str:
    lines = ["| table | rows | replaced | window | note |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.table} | {r.rows} | {r.deleted} | {r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M} | {r.skipped or ''} |")
    return "\n".join(lines)


@dg.multi_asset(
    specs=[
        dg.AssetSpec("rollup_5m", deps=POINT_SOURCES, description=(
            "One row per series and 5-minute bucket: count, sum, min, max, avg, last, p50/p95/p99 and "
            "the bucket's mergeable sketch (percentiles within 1 % relative), from the raw points."), **_COMMON),
        dg.AssetSpec("rollup_1h", deps=["rollup_5m"], description=(
            "One row per series and hour: the same statistics, merged from the 5-minute rows "
            "(percentiles from the merged sketches, never averaged)."), **_COMMON),
        dg.AssetSpec("series_health_hourly", deps=POINT_SOURCES, description=(
            "One row per series and hour: expected vs received samples, completeness, longest gap, "
            "seconds above the warning/critical thresholds; silent series get a `no_data` row."),
            **{**_COMMON, "group_name": "sla"}),
    ],
    partitions_def=hourly_partitions,
    backfill_policy=DERIVED_BACKFILL_POLICY,
    can_subset=False,
)
def hourly_rollups(context: dg.AssetExecutionContext, warehouse: WarehouseResource):
    """Recompute the hours of the run (one hour, or a backfill range) from the raw points."""
    window = context.partition_time_window
    tiers = rollups.refresh(warehouse.dsn, warehouse.schema, ["rollup_5m", "rollup_1h"], window.start, window.end)
    metrics = sla.load_config().metrics  # thresholds and no-data lookback (config/sla.yaml)
    health = rollups.refresh_health(warehouse.dsn, warehouse.schema, window.start, window.end,
                                    now=datetime.now(timezone.utc), thresholds=metrics.health_thresholds(),
                                    lookback=metrics.no_data_lookback)
    for result in (*tiers, health):
        if result.skipped:
            context.log.info(f"{result.table}: {result.skipped}")
        yield dg.MaterializeResult(
            asset_key=result.table,
            metadata={
                "dagster/row_count": result.rows,
                "rows_replaced": result.deleted,
                "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
                "percentile_relative_accuracy": rollups.RELATIVE_ACCURACY,
                "summary": dg.MetadataValue.md(_table([*tiers, health])),
                **({"kept": result.skipped} if result.skipped else {}),
            },
        )


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetDep("rollup_1h", partition_mapping=dg.TimeWindowPartitionMapping())],
    backfill_policy=DAILY_BACKFILL_POLICY,
    # A day is computed from the hours it has so far and again whenever one of them updates: the
    # day in progress is on dashboards during the day, and a day with an hour never collected
    # still gets its row, rather than waiting for all 24 hours.
    automation_condition=derived_condition(optional=dg.AssetSelection.assets("rollup_1h")),
    group_name="rollups",
    kinds={"postgres", "sql"},
    owners=["team:platform"],
)
def rollup_1d(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per series and UTC day: count, sum, min, max, avg, last and p50/p95/p99, merged
    from the day's 24 hourly rows and their sketches (percentiles within 1 % relative)."""
    window = context.partition_time_window
    (result,) = rollups.refresh(warehouse.dsn, warehouse.schema, ["rollup_1d"], window.start, window.end)
    if result.skipped:
        context.log.info(f"rollup_1d: {result.skipped}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": result.rows,
        "rows_replaced": result.deleted,
        "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        "percentile_relative_accuracy": rollups.RELATIVE_ACCURACY,
        **({"kept": result.skipped} if result.skipped else {}),
    })
