"""Fetch each closed hour once it is complete, and once more later for late datapoints (SPEC §4).

CloudWatch publishes some datapoints minutes after their timestamp. Every hour at
`fetch_delay_minutes` past, the schedule requests the hour that just closed and the hour closed
`late_rerun_hours` earlier; the load replaces the window, so the second run corrects, never
duplicates, and its metadata says how many points changed.
"""

from datetime import timedelta

import dagster as dg

from metrics_pipeline.defs.cloudwatch.assets import cloudwatch_points
from metrics_pipeline.defs.partitions import SCHEDULE_STATUS
from metrics_pipeline.lib.cloudwatch.config import CloudWatchConfig, load_config

try:
    _SETTINGS = load_config()
except ValueError:
    _SETTINGS = CloudWatchConfig()  # the asset reports the configuration error when it runs


def closed_hour_requests(scheduled, late_rerun_hours: int) -> list[dg.RunRequest]:
    closed = scheduled.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    requests = []
    for hour, kind in ((closed, "closed"), (closed - timedelta(hours=late_rerun_hours), "late")):
        key = hour.strftime("%Y-%m-%d-%H:%M")
        requests.append(dg.RunRequest(run_key=f"{key}:{kind}", partition_key=key, tags={"metrics_pipeline/reason": kind}))
    return requests


@dg.schedule(
    cron_schedule=f"{_SETTINGS.fetch_delay_minutes} * * * *",
    target=cloudwatch_points,
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Each hour: the hour that just closed, and a late-data re-run of an earlier hour.",
)
def cloudwatch_hourly(context: dg.ScheduleEvaluationContext):
    return closed_hour_requests(context.scheduled_execution_time, _SETTINGS.late_rerun_hours)
