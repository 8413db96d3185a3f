"""`host_points`: every host's agent samples of an hour, loaded into `points` (SPEC §2.3)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host import files as host_files

SOURCE = host_files.SOURCE


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    group_name="host",
    kinds={"python", "postgres"},
    owners=["team:platform"],
    tags={"source": SOURCE},
)
def host_points(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    """One row per host sample (source `host`): CPU, load, memory, swap, network, disk I/O and disk
    usage of our own hosts, as written by `metrics-pipeline collect`. A run replaces its hours'
    window with exactly what the landing files hold; files are marked processed in the same commit."""
    window = context.partition_time_window
    loaded = host_files.load_window(warehouse.get(), landing.zone(), window.start, window.end)
    if loaded.batch.problems:
        context.log.warning(f"skipped while reading host files: {dict(loaded.batch.problems)}")
    return dg.MaterializeResult(metadata=loaded.as_metadata())
