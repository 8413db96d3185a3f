"""`anomaly_rescore_sensor`: re-scores, in order, the hours whose starting state changed (SPEC §12).

An hour re-scored with late data leaves a different state for the next hour; the hours already scored
after it are then stale (`lib.anomalies.scores`, `anomaly_hours.stale_since`). Every minute this sensor
asks for one run of `anomaly_scores` over [first stale hour, latest hour scored]: a range run scores
its hours in order, each from the state the previous one left, which is exactly "later hours are
re-scored in order". The in-progress hour is left to the automation that refreshes it anyway. One
such run at a time: while one is queued or running, ticks skip (it clears the marks as it goes).
"""

from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.anomalies.assets import REASON_TAG, anomaly_scores
from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.anomalies import scores

RESCORE = "anomaly_rescore"
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED]


def rescore_request(stale: scores.Stale) -> dg.RunRequest:
    """One run over the stale hours; its key changes with every new mark, so a later one is not
    mistaken for a run already made."""
    first, last = hour_key(stale.first), hour_key(stale.last)
    key = f"{RESCORE}:{first}..{last}:{stale.since.timestamp():.0f}"
    if first == last:
        return dg.RunRequest(run_key=key, partition_key=first, tags={REASON_TAG: RESCORE})
    return dg.RunRequest(run_key=key, tags={"dagster/asset_partition_range_start": first,
                                            "dagster/asset_partition_range_end": last, REASON_TAG: RESCORE})


@dg.sensor(target=anomaly_scores, minimum_interval_seconds=60, default_status=AUTOMATION_STATUS,
           description="Re-scores, in order, the anomaly hours made stale by a re-scored earlier hour.")
def anomaly_rescore_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
    current = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    stale = scores.stale(warehouse.get(), before=current)
    if stale is None:
        return dg.SkipReason("no stale anomaly hour")
    running = context.instance.get_runs(filters=dg.RunsFilter(tags={REASON_TAG: RESCORE}, statuses=IN_FLIGHT), limit=1)
    if running:
        return dg.SkipReason(f"stale from {hour_key(stale.first)}; re-scoring run {running[0].run_id} in progress")
    return rescore_request(stale)
