"""`anomaly_scores`: every series' 5-minute buckets scored by the anomaly detector, hour by hour (SPEC §11).

The asset follows `rollup_5m` like every derived table (`derived_condition`): an hour is scored when
its 5-minute rollups appear or change, the in-progress hour included (up to its last complete bucket).
Each hour resumes from the detector's state stored at its start (`lib/anomalies/scores.py`), so its
cost is proportional to the hour and a re-run gives the same rows.

Hours depend on the hours before them, through that state. When an hour is re-scored with changed
input (late data), the state it leaves for the next hour changes: the hours already scored after it
become stale (`anomaly_hours.stale_since`), and `anomaly_rescore_sensor` (sensors.py) re-scores them
in order, from the first stale hour to the latest, in one run. Dagster's own staleness does not see
this dependency (it is not declared as a self-dependency on purpose: a backfill of a self-dependent
asset waits for the partition before its first one, which never exists for the first hour of
history); the sensor is what keeps it.

A backfill runs a week of hours per run, in order (`ANOMALY_BACKFILL_POLICY`): parallel runs over one
series' history would only make each other's later hours stale.
"""

from datetime import timezone

import dagster as dg

from metrics_pipeline.defs.automation import derived_condition
from metrics_pipeline.defs.partitions import backfill_policy, hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.anomalies import config as anomaly_config
from metrics_pipeline.lib.anomalies import scores

#: A week of hours per backfill run (one pass in order over that week).
ANOMALY_BACKFILL_POLICY = backfill_policy(24 * 7)
ANOMALY_CONDITION = derived_condition()
REASON_TAG = "metrics_pipeline/reason"


def hours_table(results: list[scores.HourResult]) -> str:
    return markdown.table(["hour", "series", "rows", "flagged", "resumed", "replayed", "started", "kept",
                           "states changed", "made stale", "note"], [r.as_row() for r in results])


@dg.asset(
    partitions_def=hourly_partitions,
    deps=["rollup_5m"],
    backfill_policy=ANOMALY_BACKFILL_POLICY,
    automation_condition=ANOMALY_CONDITION,
    group_name="anomalies",
    kinds={"postgres", "python"},
    owners=["team:platform"],
)
def anomaly_scores(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    """One row per series and 5-minute bucket of `rollup_5m` (its `avg`): the detector's anomaly score
    and surprise in [0, 1], the expected value and the band of normal values, and whether the bucket
    is flagged (`config/anomalies.yaml`). Read through `v_anomalies`."""
    config = anomaly_config.load_config()  # a broken file fails this asset only, naming the file and key
    window = context.partition_time_window
    results = scores.score_window(warehouse.get(), window.start, window.end, config)
    for r in results:
        if r.skipped:
            context.log.info(f"{r.hour:%Y-%m-%d %H:%M}: {r.skipped}")
        if r.marked_stale:
            context.log.info(f"{r.hour:%Y-%m-%d %H:%M} left a changed state: from {r.marked_stale:%Y-%m-%d %H:%M} "
                             "on, the scored hours are stale (anomaly_rescore_sensor re-scores them)")
    # Marks inside the window were cleared as the run went on; one past its end is left for the sensor.
    stale = [r.marked_stale for r in results if r.marked_stale and r.marked_stale >= window.end]
    return dg.MaterializeResult(metadata={
        "dagster/row_count": sum(r.rows for r in results),
        "series": max((r.series for r in results), default=0),
        "flagged": sum(r.flagged for r in results),
        "resumed": sum(r.resumed for r in results),
        "replayed": sum(r.replayed for r in results),
        "started": sum(r.started for r in results),
        "kept": sum(r.kept for r in results),
        "made_stale_from": min(stale).astimezone(timezone.utc).isoformat() if stale else "",
        "seconds": round(sum(r.seconds for r in results), 3),
        "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
        "threshold": config.threshold,
        "hours": dg.MetadataValue.md(hours_table(results)),
    })
