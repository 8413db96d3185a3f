"""The custom sensor: every 30 s, index the files the push API wrote since the last tick and
request `custom_points` / `custom_events` for the hours their items touch (SPEC: an item is in
`v_points` within 90 s of its 202: up to 30 s to the tick, then one run of one hour, which loads
only what is new since the hour's last load).

Files are keyed by receipt time and grow while their minute lasts: each tick lists the receipt
hours since the one before its previous tick and indexes the files whose etag changed
(`lib.custom.sensor.plan_sensor_tick`). The run key is the hour and a digest of the files feeding
it, so a grown file makes a new run and a retried tick makes none twice. Items stamped ahead of now
(at most `ts_ahead`) wait for their hour's partition; the first tick of that hour requests it. An
hour loaded incrementally is reloaded whole once it is closed and quiet (tag `close`).
Off by default; `make dev` turns it on.
"""

from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.custom.assets import CLOSE, NEW_FILES, REASON_TAG, custom_events, custom_points
from metrics_pipeline.defs.partitions import hour_key, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.custom import sensor as custom_sensor_plan

ASSET_OF_KIND = {"measures": custom_points, "events": custom_events}


def utc_now() -> datetime:
    """The sensor's clock (tests replace it to walk through hours)."""
    return datetime.now(timezone.utc)


@dg.sensor(
    name="custom_sensor",
    target=[custom_points, custom_events],
    minimum_interval_seconds=30,
    default_status=AUTOMATION_STATUS,
    description="Requests custom_points / custom_events for the hours touched by the items of newly "
    "pushed landing files, for hours ahead of now once they begin, and a closing full reload of "
    "each hour loaded incrementally once it is closed and quiet.",
)
def custom_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                  landing: LandingZoneResource) -> dg.SensorResult:
    now = utc_now()
    plan = custom_sensor_plan.plan_sensor_tick(warehouse.get(), landing.zone(),
                                               custom_sensor_plan.SensorCursor.decode(context.cursor), now=now)
    requests = []
    with dg.partition_loading_context(effective_dt=now):
        for reason, planned in ((NEW_FILES, plan.hours), (CLOSE, plan.close)):
            for kind, hours in planned.items():
                for hour, token in hours.items():
                    key = hour_key(hour)
                    if not hourly_partitions.has_partition_key(key):
                        context.log.warning(f"{kind}: hour {key} is outside the partition range")
                        continue
                    run_key = f"{kind}:{key}:{token[:12]}" if reason == NEW_FILES else f"{kind}:{key}:close:{token}"
                    requests.append(dg.RunRequest(run_key=run_key, partition_key=key, tags={REASON_TAG: reason},
                                                  asset_selection=[ASSET_OF_KIND[kind].key]))
    if plan.files:
        context.log.info(f"indexed {plan.files} new or grown file(s); {len(requests)} run(s) requested")
    if plan.deferred:
        context.log.info(f"{len(plan.deferred)} hour(s) ahead of now wait for their partition")
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.encode())
