"""`whatap_points`: WhaTap server and APM metrics per hour, loaded into `points` (SPEC §2.2)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.whatap.resources import WhatapResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.warehouse.load import load_points
from metrics_pipeline.lib.whatap import collect

SOURCE = "whatap"


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    pool="whatap",
    group_name="whatap",
    kinds={"api", "postgres"},
    owners=["team:platform"],
    tags={"source": SOURCE},
)
def whatap_points(context: dg.AssetExecutionContext, warehouse: WarehouseResource, whatap: WhatapResource) -> dg.MaterializeResult:
    """One row per WhaTap value (source `whatap`): server CPU, memory, swap, disk, network (sm_stat
    and MXQL) and APM counters and series, per agent (`oname`), labelled with project code and name,
    oid, category and the disk mount or NIC. A run replaces its window per series. Requests whose
    answers may have been cut are split (`requests_split`); one that cannot be split fails the run."""
    config = whatap.load()
    window = context.partition_time_window
    if not config.configured:
        return dg.MaterializeResult(metadata={"status": "not configured", "config": whatap.config_path, "points": 0})
    frame, stats = collect.fetch(config, window.start, window.end)
    result = load_points(warehouse.get(), frame, source=SOURCE, start=window.start, end=window.end,
                         out_of_window="drop", scope="series")
    if stats.client.skipped:
        context.log.warning(f"skipped values: {dict(stats.client.skipped)}")
    if stats.skipped_projects:
        context.log.warning(f"WhaTap projects of other products, not collected: {stats.skipped_projects}")
    return dg.MaterializeResult(
        metadata={
            "status": "collected",
            **result.as_metadata(),
            "projects": stats.projects,
            "agents": len(stats.agents),
            "api_calls": sum(stats.client.calls.values()),
            "api_errors": sum(stats.client.errors.values()),
            "calls_per_endpoint": dg.MetadataValue.md(markdown.counts_table(stats.client.calls, ["endpoint", "calls"])),
            "errors_per_endpoint": dg.MetadataValue.md(markdown.counts_table(stats.client.errors, ["endpoint", "errors"])),
            "skipped_values": dg.MetadataValue.md(markdown.counts_table(stats.client.skipped, ["reason", "values"])),
            # answers that may have been cut (a row cap, merged points) were split and fetched again
            "requests_split": sum(stats.client.splits.values()),
            "splits_per_endpoint": dg.MetadataValue.md(markdown.counts_table(stats.client.splits, ["endpoint", "splits"])),
            "row_caps_seen": dg.MetadataValue.md(markdown.counts_table(stats.client.caps, ["endpoint", "smallest row cap"])),
            "projects_skipped": dg.MetadataValue.md(markdown.table(["project", "product type"],
                                                                  sorted(stats.skipped_projects.items()))),
        }
    )
