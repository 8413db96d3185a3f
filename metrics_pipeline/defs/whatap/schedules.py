"""Fetch each closed WhaTap hour once complete and once more later for late data (SPEC §4)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SCHEDULE_STATUS, closed_hour_requests
from metrics_pipeline.defs.whatap.assets import whatap_points
from metrics_pipeline.lib.whatap.config import WhatapConfig, load_config

try:
    _SETTINGS = load_config()
except ValueError:
    _SETTINGS = WhatapConfig()  # the asset reports the configuration error when it runs


@dg.schedule(
    cron_schedule=f"{_SETTINGS.fetch_delay_minutes} * * * *",
    target=whatap_points,
    execution_timezone="UTC",
    default_status=SCHEDULE_STATUS,
    description="Each hour: the WhaTap hour that just closed, and a late-data re-run of an earlier hour.",
)
def whatap_hourly(context: dg.ScheduleEvaluationContext):
    return closed_hour_requests(context.scheduled_execution_time, _SETTINGS.late_rerun_hours)
