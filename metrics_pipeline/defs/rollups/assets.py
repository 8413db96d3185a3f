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
from metrics_pipeline.lib import markdown, rollups, sla, sources

#: The point sources that may hold an hour's rollups back (configured API sources); the asset
#: descriptions name them, so the UI shows what the rollups wait for.
OPTIONAL_SOURCES = sources.optional_point_assets()
WAITS_FOR = [a for a in sources.POINT_ASSETS if a not in OPTIONAL_SOURCES]
ROLLUP_CONDITION = derived_condition(optional=dg.AssetSelection.assets(*OPTIONAL_SOURCES), recheck_closed_hour=True)
_WAITS = (f" An hour waits for {', '.join(WAITS_FOR)} (configured API sources)." if WAITS_FOR
          else " No source holds an hour back (no API source is configured).")

_COMMON = dict(group_name="rollups", kinds={"postgres", "sql"}, owners=["team:platform"],
               automation_condition=ROLLUP_CONDITION)


def _table(results: list[rollups.TierResult]) -> str:
    return markdown.table(["table", "rows", "replaced", "window", "note"], [
        (r.table, r.rows, r.deleted, f"{r.start:%Y-%m-%d %H:%M} .. {r.end:%Y-%m-%d %H:%M}", r.skipped or "") for r in results])


@dg.multi_asset(
    specs=[
        dg.AssetSpec("rollup_5m", deps=sources.POINT_ASSETS, description=(
            "One row per series and 5-minute bucket: count, sum, min, max, avg, last, p50/p95/p99 and "
            "the bucket's mergeable sketch (percentiles within 1 % relative), from the raw points." + _WAITS), **_COMMON),
        dg.AssetSpec("rollup_1h", deps=["rollup_5m"], description=(
            "One row per series and hour: the same statistics, merged from the 5-minute rows "
            "(percentiles from the merged sketches, never averaged)."), **_COMMON),
        dg.AssetSpec("series_health_hourly", deps=sources.POINT_ASSETS, description=(
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
    tiers = rollups.refresh(warehouse.get(), ["rollup_5m", "rollup_1h"], window.start, window.end)
    metrics = sla.load_config().metrics  # thresholds and no-data lookback (config/sla.yaml)
    health = rollups.refresh_health(warehouse.get(), window.start, window.end,
                                    now=datetime.now(timezone.utc), thresholds=metrics.health_thresholds(),
                                    lookback=metrics.no_data_lookback)
    for result in (*tiers, health):
        if result.skipped:
            context.log.info(f"{result.table}: {result.skipped}")
        yield dg.MaterializeResult(
            asset_key=result.table,
            metadata={**result.as_metadata(), "summary": dg.MetadataValue.md(_table([*tiers, health]))},
        )


@dg.asset(
    partitions_def=daily_partitions,
    # The day's hourly series health too: its sums are written with the day's rows (migration 0027).
    deps=[dg.AssetDep("rollup_1h", partition_mapping=dg.TimeWindowPartitionMapping()),
          dg.AssetDep("series_health_hourly", partition_mapping=dg.TimeWindowPartitionMapping())],
    backfill_policy=DAILY_BACKFILL_POLICY,
    # A day is computed from the hours it has so far and again whenever one of them updates: the
    # day in progress is on dashboards during the day, and a day with an hour never collected
    # still gets its row, rather than waiting for all 24 hours.
    automation_condition=derived_condition(optional=dg.AssetSelection.assets("rollup_1h", "series_health_hourly")),
    group_name="rollups",
    kinds={"postgres", "sql"},
    owners=["team:platform"],
)
def rollup_1d(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per series and UTC day: count, sum, min, max, avg, last and p50/p95/p99, merged
    from the day's 24 hourly rows and their sketches (percentiles within 1 % relative); and the
    sums of the day's hourly series health (`series_health_daily`), read by API summaries."""
    window = context.partition_time_window
    (result,) = rollups.refresh(warehouse.get(), ["rollup_1d"], window.start, window.end)
    if result.skipped:
        context.log.info(f"rollup_1d: {result.skipped}")
    return dg.MaterializeResult(metadata=result.as_metadata())
