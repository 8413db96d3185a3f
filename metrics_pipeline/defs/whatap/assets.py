"""`whatap_points`: WhaTap server and APM metrics per hour, loaded into `points` (SPEC §2.2)."""

import dagster as dg
from pydantic import Field

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.whatap import collect
from metrics_pipeline.lib.whatap.config import WhatapConfig, default_path, load_config

SOURCE = "whatap"


class WhatapResource(dg.ConfigurableResource):
    """Which WhaTap projects to collect (a YAML file naming the token variables) and how."""

    config_path: str = Field(description="YAML configuration (METRICS_PIPELINE_WHATAP_CONFIG).")

    def load(self) -> WhatapConfig:
        return load_config(self.config_path)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"whatap": WhatapResource(config_path=str(default_path()))})


def _table(counter) -> str:
    if not counter:
        return "none"
    return "\n".join(["| endpoint | count |", "|---|---|", *(f"| {k} | {v} |" for k, v in sorted(counter.items()))])


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
    oid, category and the disk mount or NIC. A run replaces its window per series."""
    config = whatap.load()
    window = context.partition_time_window
    if not config.configured:
        return dg.MaterializeResult(metadata={"status": "not configured", "config": whatap.config_path, "points": 0})
    frame, stats = collect.fetch(config, window.start, window.end)
    result = warehouse.load_points(frame, source=SOURCE, start=window.start, end=window.end, out_of_window="drop", scope="series")
    if stats.client.skipped:
        context.log.warning(f"skipped values: {dict(stats.client.skipped)}")
    return dg.MaterializeResult(
        metadata={
            "status": "collected",
            "dagster/row_count": result.points,
            "projects": stats.projects,
            "agents": len(stats.agents),
            "series": result.series,
            "points": result.points,
            "points_changed": result.changed,
            "duplicate_points": result.dropped.get("duplicate", 0),
            "non_finite_values": result.dropped.get("non_finite", 0),
            "api_calls": sum(stats.client.calls.values()),
            "api_errors": sum(stats.client.errors.values()),
            "calls_per_endpoint": dg.MetadataValue.md(_table(stats.client.calls)),
            "errors_per_endpoint": dg.MetadataValue.md(_table(stats.client.errors)),
            "skipped_values": dg.MetadataValue.md(_table(stats.client.skipped)),
            "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        }
    )
