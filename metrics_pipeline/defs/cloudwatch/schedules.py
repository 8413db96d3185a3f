"""When CloudWatch hours are fetched (SPEC §4).

* `cloudwatch_hourly`: every hour at `fetch_delay_minutes` past, the hour that just closed and the
  hour closed `late_rerun_hours` earlier. CloudWatch publishes some datapoints minutes late; the load
  replaces its window, so the second run corrects, never duplicates, and reports points changed.
* `cloudwatch_current_hour`: every `refresh_current_hour_minutes`, the in-progress hour, so
  dashboards lag by minutes, not an hour. Each refresh requests the hour's metrics again (cost!);
  0 turns it off.
* `cloudwatch_catchup_sensor`: closed hours of the last `catchup_hours` that were never
  materialised (the daemon was down, a deploy, a fresh install) are requested once.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.cloudwatch.assets import cloudwatch_points
from metrics_pipeline.defs.partitions import AUTOMATION_STATUS, KEY_FORMAT, SCHEDULE_STATUS, closed_hour_requests
from metrics_pipeline.lib.cloudwatch.config import CloudWatchConfig, load_config

try:
    _SETTINGS = load_config()
except ValueError:
    _SETTINGS = CloudWatchConfig()  # the asset reports the configuration error when it runs



@dg.schedule(
    cron_schedule=f"{_SETTINGS.fetch_delay_minutes} * * * *",
    target=cloudwatch_points,
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Each hour: the hour that just closed, and a late-data re-run of an earlier hour.",
)
def cloudwatch_hourly(context: dg.ScheduleEvaluationContext):
    return closed_hour_requests(context.scheduled_execution_time, _SETTINGS.late_rerun_hours)


_REFRESH = _SETTINGS.refresh_current_hour_minutes or 60


@dg.schedule(
    cron_schedule=f"*/{_REFRESH} * * * *" if _REFRESH < 60 else "30 * * * *",
    target=cloudwatch_points,
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS if _SETTINGS.refresh_current_hour_minutes else dg.DefaultScheduleStatus.STOPPED,
    description="The in-progress hour, every few minutes, for fresh dashboards.",
)
def cloudwatch_current_hour(context: dg.ScheduleEvaluationContext):
    scheduled = context.scheduled_execution_time
    key = scheduled.replace(minute=0, second=0, microsecond=0).strftime(KEY_FORMAT)
    return dg.RunRequest(run_key=f"{key}:refresh:{scheduled.minute}", partition_key=key,
                         tags={"metrics_pipeline/reason": "refresh"})


def missing_closed_hours(now: datetime, materialized: set[str], catchup_hours: int, delay_minutes: int) -> list[str]:
    last_closed = (now - timedelta(minutes=delay_minutes)).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    keys = [(last_closed - timedelta(hours=h)).strftime(KEY_FORMAT) for h in range(catchup_hours)]
    return sorted(k for k in keys if k not in materialized)


@dg.sensor(
    target=cloudwatch_points,
    minimum_interval_seconds=300,
    default_status=AUTOMATION_STATUS,
    description="Requests recent closed hours that were never materialised.",
)
def cloudwatch_catchup_sensor(context: dg.SensorEvaluationContext):
    if not _SETTINGS.catchup_hours:
        return dg.SkipReason("catchup_hours is 0")
    materialized = context.instance.get_materialized_partitions(cloudwatch_points.key)
    keys = missing_closed_hours(
        datetime.now(timezone.utc), materialized, _SETTINGS.catchup_hours, _SETTINGS.fetch_delay_minutes
    )
    return [dg.RunRequest(run_key=f"{k}:catchup", partition_key=k, tags={"metrics_pipeline/reason": "catchup"}) for k in keys]
