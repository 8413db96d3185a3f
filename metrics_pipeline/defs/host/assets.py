"""`host_points`: every host's agent samples of an hour, loaded into `points` (SPEC §2.3).

The host configuration (`METRICS_PIPELINE_HOST_CONFIG`, default `config/host.yaml`: which tenant owns
which hosts) is read at every run, so a changed rule applies from the next run; a broken file fails
the run naming the file and key."""

from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host import config as host_config
from metrics_pipeline.lib.host import files as host_files
from metrics_pipeline.lib.host import live as host_live

SOURCE = host_files.SOURCE
#: The tag the host sensor puts on its runs: complete | late | refresh (the hour in progress).
REASON_TAG = "metrics_pipeline/reason"


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
    usage of our own hosts, as written by `metrics-pipeline collect`, labelled `host` and, when the
    agent or the host configuration names one, `tenant`. A run makes its hours' window hold exactly
    what the landing files hold; files are marked processed in the same commit. The sensor's
    refreshes of the hour in progress (and the live alert loop) load only what landed since the
    previous load, and the closed-hour run then only what they had not loaded (`load_mode` tail)
    when every file is unchanged where they loaded it; otherwise it replaces the window."""
    config = host_config.load_config()
    window = context.partition_time_window
    now = datetime.now(timezone.utc)
    refresh = context.run.tags.get(REASON_TAG) == "refresh"
    if refresh and window.start <= now < window.end and window.end - window.start == timedelta(hours=1):
        # The sensor's refresh of the hour in progress: only what landed since the last load (the
        # live path's offsets). Any other run of an hour (closed, late files, by hand) replaces it.
        live_load = host_live.load_new(warehouse.get(), landing.zone(), now, config)
        _warn(context, live_load.batch)
        return dg.MaterializeResult(metadata={
            "status": "in progress: loaded what is new",
            **(live_load.load.as_metadata() if live_load.load else {"points": 0}),
            "files": live_load.files, "new_bytes": live_load.new_bytes,
            "tenants": len(live_load.batch.tenants), "tenant_overrides": live_load.batch.tenant_overrides,
            **{name: live_load.batch.problems.get(name, 0)
               for name in ("partial_lines", "corrupt_lines", "invalid_samples", "refused_files",
                            "out_of_hour_samples")},
        })
    loaded = host_files.load_window(warehouse.get(), landing.zone(), window.start, window.end, config)
    _warn(context, loaded.batch)
    return dg.MaterializeResult(metadata=loaded.as_metadata())


def _warn(context: dg.AssetExecutionContext, batch: host_files.HostBatch) -> None:
    if batch.problems:
        context.log.warning(f"skipped while reading host files: {dict(batch.problems)}")
    if batch.tenant_overrides:
        context.log.warning(f"{batch.tenant_overrides} line(s) named a tenant other than the one the host "
                            f"configuration ({host_config.default_path()}) gives their host: the configuration's was used")
