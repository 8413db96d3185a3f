"""`custom_points` and `custom_events`: what applications pushed through the API, by hour of `ts`
(SPEC §2.5). Both are built from one spec list: the loaders differ, the glue does not.

The API configuration (`config/api.yaml`) is read at every run for its `ts_back` / `ts_ahead`: they
say which receipt hours can hold items of an hour; a broken file fails the run naming file and key.

A run the sensor requested for new files (tag `metrics_pipeline/reason` = `new files`) loads only
what is new since the hour's last load when that is safe (`lib/custom/incremental.py`); every other
run (the sensor's closing reload, a re-execution, a retry, a backfill, one by hand) replaces its
window. The metadata says which (`mode`, `full_because`)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.custom import config as api_config
from metrics_pipeline.lib.custom import load as custom_load

SOURCE = custom_load.SOURCE
#: The tag the custom sensor puts on its runs: what new files need, or the closing reload of an hour.
REASON_TAG = "metrics_pipeline/reason"
NEW_FILES, CLOSE = "new files", "close"


def _build(name: str, kind: str, loader, description: str) -> dg.AssetsDefinition:
    @dg.asset(
        name=name,
        partitions_def=hourly_partitions,
        backfill_policy=SOURCE_BACKFILL_POLICY,
        group_name="custom",
        kinds={"python", "postgres"},
        owners=["team:platform"],
        tags={"source": SOURCE},
        description=description,
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource,
               landing: LandingZoneResource) -> dg.MaterializeResult:
        config = api_config.load_config()
        window = context.partition_time_window
        incremental = context.run.tags.get(REASON_TAG) == NEW_FILES and context.run.parent_run_id is None
        result = loader(warehouse.get(), landing.zone(), window.start, window.end,
                        back=config.ts_back, ahead=config.ts_ahead, incremental=incremental)
        if result.quarantined:
            context.log.warning(f"{result.quarantined} {kind} item(s) or line(s) quarantined: "
                                f"{dict(result.reasons.most_common(5))}")
        return dg.MaterializeResult(metadata={
            **result.as_metadata(),
            "quarantine_reasons": dg.MetadataValue.md(markdown.counts_table(
                result.reasons, ["reason", "items"], empty="nothing quarantined", limit=10)),
            "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        })

    return _asset


custom_points = _build(
    "custom_points", "measures", custom_load.load_measures,
    "One point per pushed measure (source `custom`): metric = its name, labels = its metadata and "
    "`tenant` (the API key's), resource = metadata `resource` or `host` (else empty). The last write "
    "of each (tenant, name, metadata, ts) wins, so a retried batch stores nothing twice. A run "
    "replaces its hours' window with what the landing files hold (the sensor's runs of an hour "
    "add only what is new since its last load); files are marked processed in the same commit; "
    "unstorable items and corrupt lines go to `quarantine`.",
)

custom_events = _build(
    "custom_events", "events", custom_load.load_events,
    "One row of `events` per pushed event (deploy, config change, note): tenant, name, ts, metadata, "
    "text. The last write of each (tenant, name, ts, metadata, text) wins. A run replaces its hours' "
    "window with what the landing files hold (the sensor's runs of an hour add only what is new "
    "since its last load); files are marked processed in the same commit.",
)
