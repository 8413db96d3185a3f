"""The ingestion-log sensor: new landing files -> the hourly partitions their records touch.

It walks the landing prefix with an (mtime, key) cursor, indexes each new file's hours in the
warehouse (so the runs find their files without re-listing everything) and requests each touched
partition once per tick. A tick stops after a time budget well inside Dagster's sensor limit and
continues from its cursor on the next one, so thousands of files are handled across ticks, each
exactly once. A run key names the hour, the cursor and a digest of the files feeding the hour: a
file that arrives behind the cursor (moved in with an older mtime) still makes a new run, and a
retried tick makes none twice.

Records stamped ahead of now (a skewed clock, naive times read in the wrong zone; at most a day
ahead, further ones are quarantined) belong to hours that have no partition yet. The cursor keeps
the hour that was current at the last tick; when a new hour begins, the first tick requests it if
the index says it holds records not committed yet (SPEC §12: such items wait in the landing zone
until their hour's partition exists, then load). Off by default; `make dev` turns it on.
"""

from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records, parse_options
from metrics_pipeline.defs.partitions import hour_key, hourly_partitions
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load

BUDGET_SECONDS = 40.0


def utc_now() -> datetime:
    """The sensor's clock (tests replace it to walk through hours)."""
    return datetime.now(timezone.utc)


@dg.sensor(
    target=ingestion_log_records,
    minimum_interval_seconds=30,
    default_status=AUTOMATION_STATUS,
    description="Requests ingestion_log_records for the start hours of the records in new landing files, "
    "and for hours ahead of now once they begin.",
)
def ingestion_logs_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.SensorResult:
    now = utc_now()
    plan = ingestion_load.plan_sensor_tick(
        warehouse.get(), landing.zone(), ingestion_load.SensorCursor.decode(context.cursor), parse_options(),
        now=now, budget_s=BUDGET_SECONDS,
    )
    keys = {hour_key(h): digest[:12] for h, digest in plan.hours.items()}
    with dg.partition_loading_context(effective_dt=now):  # the clock that deferred the hours ahead
        valid = [k for k in keys if hourly_partitions.has_partition_key(k)]
    if len(valid) < len(keys):
        context.log.warning(f"{len(keys) - len(valid)} hour(s) are outside the partition range: {sorted(set(keys) - set(valid))[:5]}")
    if plan.files:
        context.log.info(f"indexed {plan.files} new file(s) touching {len(valid)} partition(s)")
    if plan.deferred:
        context.log.info(f"{len(plan.deferred)} hour(s) ahead of now wait for their partition: "
                         f"{[hour_key(h) for h in plan.deferred[:5]]}")
    if plan.arrived:
        context.log.info(f"requesting {len(plan.arrived)} hour(s) whose records were stamped ahead and have begun: "
                         f"{[hour_key(h) for h in plan.arrived[:5]]}")
    walk = plan.cursor.walk.encode()
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=f"{key}:{walk}:{keys[key]}", partition_key=key) for key in valid],
        cursor=plan.cursor.encode(),
    )
