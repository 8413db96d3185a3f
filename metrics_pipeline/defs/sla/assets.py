"""SLA and failure metrics of the data-ingestion jobs, hourly and daily (SPEC §5).

Both tables are computed from `ingestion_runs` by one set-based statement per window (see
`metrics_pipeline.lib.sla`): a week of hourly backfill is one run and one statement. `sla_daily`
reads the raw runs too, not the hourly rows, because percentiles of hours cannot be merged into
the percentile of a day; its dependency on `sla_hourly` only orders the work (a day follows its hours).

`ingestion_log_records` never holds an hour back: jobs drop files when they run, and an hour with
no file at all is exactly the hour the SLA must report (runs = 0, freshness running out).
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
from metrics_pipeline.lib import markdown, sla

_COMMON = dict(group_name="sla", kinds={"postgres", "sql"}, owners=["team:data-platform"])


def _fmt(value, spec: str = "") -> str:
    return "" if value is None else format(value, spec)


def worst_table(rows: tuple[dict, ...]) -> str:
    """The breaching rows as a short markdown table."""
    def since(r) -> str:
        s = r["time_since_last_success_s"]
        return "never" if s is None else format(s / 3600, ".1f")

    return markdown.table(
        ["bucket", "company", "zone", "source", "object", "runs", "failure rate", "p95 s", "breaches", "since success h"],
        [(f"{r['bucket']:%Y-%m-%d %H:%M}", r["company"], r["zone"], r["source_system"], r["object"], r["runs"],
          _fmt(r["failure_rate"], ".0%"), _fmt(r["duration_p95_s"], ".0f"), r["sla_breaches"], since(r)) for r in rows],
        empty="every job met its SLA", limit=max(len(rows), 1),
    )


def _refresh(context: dg.AssetExecutionContext, warehouse: WarehouseResource, grain: str) -> dg.MaterializeResult:
    window = context.partition_time_window
    result = sla.refresh(warehouse.get(), grain, window.start, window.end, sla.load_config(),
                         now=datetime.now(timezone.utc))
    if result.skipped:
        context.log.info(f"{result.table}: {result.skipped}")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": result.rows,
        "rows_replaced": result.deleted,
        "groups": result.groups,
        "groups_breaching": result.groups_breaching,
        "rows_breaching": result.rows_breaching,
        "worst": dg.MetadataValue.md(worst_table(result.worst)),
        "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        **({"kept": result.skipped} if result.skipped else {}),
    })


@dg.asset(
    partitions_def=hourly_partitions,
    deps=["ingestion_log_records"],
    automation_condition=derived_condition(optional=dg.AssetSelection.assets("ingestion_log_records"),
                                           recheck_closed_hour=True),
    backfill_policy=DERIVED_BACKFILL_POLICY,
    **_COMMON,
)
def sla_hourly(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per UTC hour and ingestion job (company, zone, source system, object): runs started
    in the hour, successes, failures, failure rate, exact duration p50/p95/max, runs over the
    duration target, last success and time since it (as of the hour's end, or now), cpu time, peak
    memory, and whether the job met its SLA targets. A job seen in the previous 7 days with no run
    in the hour gets a row with runs = 0, so a job that stopped shows up as a freshness breach."""
    return _refresh(context, warehouse, "hour")


@dg.asset(
    partitions_def=daily_partitions,
    deps=[dg.AssetDep("sla_hourly", partition_mapping=dg.TimeWindowPartitionMapping())],
    # Like rollup_1d: computed from the hours so far, recomputed as each hour lands.
    automation_condition=derived_condition(optional=dg.AssetSelection.assets("sla_hourly")),
    backfill_policy=DAILY_BACKFILL_POLICY,
    **_COMMON,
)
def sla_daily(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per UTC day and ingestion job (company, zone, source system, object): the same
    columns as `sla_hourly` over the whole day, computed from the day's raw runs (exact daily
    percentiles, not merged from hours); freshness is as of the day's end, or now for today."""
    return _refresh(context, warehouse, "day")
