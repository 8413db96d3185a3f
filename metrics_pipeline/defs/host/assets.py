"""`host_points`: every host's agent samples of an hour, loaded into `points` (SPEC §2.3)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host import files as host_files
from metrics_pipeline.lib.warehouse import landing_index

SOURCE = "host"


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
    zone = landing.zone()
    batch, objects = host_files.read_window(zone, window.start, window.end)
    files = [(o, [host_files.hour_of_key(o.key)]) for o in objects]
    result = warehouse.load_points(
        batch.frame(),
        source=SOURCE,
        start=window.start,
        end=window.end,
        out_of_window="drop",
        in_transaction=lambda conn: landing_index.mark_processed(
            conn, warehouse.schema, SOURCE, files, window.start, window.end
        ),
    )
    if batch.problems:
        context.log.warning(f"skipped while reading host files: {dict(batch.problems)}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.points,
            "hosts": len(batch.hosts),
            "files": len(objects),
            "lines": batch.lines,
            "series": result.series,
            "new_series": result.new_series,
            "points": result.points,
            "points_changed": result.changed,
            "duplicate_points": result.dropped.get("duplicate", 0),
            "non_finite_values": result.dropped.get("non_finite", 0),
            # Samples whose clock puts them outside the file's hour (a skewed or broken clock): dropped.
            "out_of_window_points": result.dropped.get("out_of_window", 0),
            "partial_lines": batch.problems.get("partial_lines", 0),
            "corrupt_lines": batch.problems.get("corrupt_lines", 0),
            "invalid_samples": batch.problems.get("invalid_samples", 0),
            # Files the landing zone would not read (a key leaving the zone, over the size limit).
            "refused_files": batch.problems.get("refused_files", 0),
            "dropped_points": result.dropped_total,
            "first_sample": result.first_ts.isoformat() if result.first_ts else "none",
            "last_sample": result.last_ts.isoformat() if result.last_ts else "none",
            "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        }
    )
