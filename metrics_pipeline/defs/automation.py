"""When API sources (CloudWatch, WhaTap) fetch their hours (SPEC §4), built once for both.

For an hourly API asset, `api_source_automation` returns:
* `<name>_hourly`: at `fetch_delay_minutes` past each hour, the hour that just closed and the hour
  closed `late_rerun_hours` earlier. APIs publish some datapoints late; loads replace their window,
  so the second run corrects, never duplicates, and reports points changed;
* `<name>_current_hour`: every `refresh_minutes`, the in-progress hour, so dashboards lag by
  minutes, not an hour (each refresh calls the API again; 0 turns it off);
* `<name>_catchup_sensor`: closed hours of the last `catchup_hours` never materialised (the daemon
  was down, a deploy, a fresh install) are requested once, consecutive hours as one range run.
All start stopped unless in the demo (SPEC §4: off-by-default-safe).

The timings come from the source's configuration, read when the code location loads. A broken
configuration does not stop the code location (every other source keeps running): the cron
expressions then use the documented default timings, and every tick of this source's schedules and
sensor reads the configuration again and fails with the error naming the file and the key, as its
runs do. An absent configuration is the documented default: the source is "not configured".
"""

from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.partitions import HOUR_KEY_FORMAT as KEY_FORMAT
from metrics_pipeline.lib.settings import demo_mode

#: Sensors and schedules are off by default-safe (SPEC §4); the demo (`make dev`) starts them.
AUTOMATION_STATUS = dg.DefaultSensorStatus.RUNNING if demo_mode() else dg.DefaultSensorStatus.STOPPED
SCHEDULE_STATUS = dg.DefaultScheduleStatus.RUNNING if demo_mode() else dg.DefaultScheduleStatus.STOPPED


def closed_hour_requests(scheduled: datetime, late_rerun_hours: int) -> list[dg.RunRequest]:
    closed = scheduled.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    requests = []
    for hour, kind in ((closed, "closed"), (closed - timedelta(hours=late_rerun_hours), "late")):
        key = hour.strftime(KEY_FORMAT)
        requests.append(dg.RunRequest(run_key=f"{key}:{kind}", partition_key=key, tags={"metrics_pipeline/reason": kind}))
    return requests


def missing_closed_hours(now: datetime, materialized: set[str], catchup_hours: int, delay_minutes: int) -> list[str]:
    last_closed = (now - timedelta(minutes=delay_minutes)).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    keys = [(last_closed - timedelta(hours=h)).strftime(KEY_FORMAT) for h in range(catchup_hours)]
    return sorted(k for k in keys if k not in materialized)


def contiguous_ranges(keys: list[str]) -> list[tuple[str, str]]:
    """Sorted hourly keys grouped into (first, last) runs of consecutive hours."""
    ranges: list[tuple[str, str]] = []
    for key in sorted(keys):
        hour = datetime.strptime(key, KEY_FORMAT)
        if ranges and datetime.strptime(ranges[-1][1], KEY_FORMAT) + timedelta(hours=1) == hour:
            ranges[-1] = (ranges[-1][0], key)
        else:
            ranges.append((key, key))
    return ranges


def range_request(first: str, last: str, reason: str) -> dg.RunRequest:
    """One run for the hours first..last (a backfill-style range run: one API pass, one load)."""
    if first == last:
        return dg.RunRequest(run_key=f"{first}:{reason}", partition_key=first, tags={"metrics_pipeline/reason": reason})
    return dg.RunRequest(run_key=f"{first}..{last}:{reason}", tags={
        "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last,
        "metrics_pipeline/reason": reason,
    })


def api_source_automation(
    asset: dg.AssetsDefinition, name: str, load_config: Callable, defaults
) -> tuple[dg.ScheduleDefinition, dg.ScheduleDefinition, dg.SensorDefinition]:
    """`load_config()` reads the source's configuration (CloudWatchConfig, WhatapConfig: with
    fetch_delay_minutes, late_rerun_hours, refresh_current_hour_minutes and catchup_hours);
    `defaults` is the configuration with its documented defaults."""
    try:
        timing = load_config()
    except (ValueError, OSError):
        timing = defaults  # the ticks below raise the error, naming the file and key
    fetch_delay_minutes = timing.fetch_delay_minutes
    refresh_minutes = timing.refresh_current_hour_minutes

    @dg.schedule(
        name=f"{name}_hourly",
        cron_schedule=f"{fetch_delay_minutes} * * * *",
        target=asset,
        execution_timezone="UTC",
        default_status=SCHEDULE_STATUS,
        description="Each hour: the hour that just closed, and a late-data re-run of an earlier hour.",
    )
    def hourly(context: dg.ScheduleEvaluationContext):
        return closed_hour_requests(context.scheduled_execution_time, load_config().late_rerun_hours)

    every = refresh_minutes or 60

    @dg.schedule(
        name=f"{name}_current_hour",
        cron_schedule=f"*/{every} * * * *" if every < 60 else "30 * * * *",
        target=asset,
        execution_timezone="UTC",
        default_status=SCHEDULE_STATUS if refresh_minutes else dg.DefaultScheduleStatus.STOPPED,
        description="The in-progress hour, every few minutes, for fresh dashboards.",
    )
    def current_hour(context: dg.ScheduleEvaluationContext):
        load_config()  # a broken configuration fails the tick, naming the file and key
        scheduled = context.scheduled_execution_time
        key = scheduled.replace(minute=0, second=0, microsecond=0).strftime(KEY_FORMAT)
        return dg.RunRequest(run_key=f"{key}:refresh:{scheduled.minute}", partition_key=key,
                             tags={"metrics_pipeline/reason": "refresh"})

    @dg.sensor(
        name=f"{name}_catchup_sensor",
        target=asset,
        minimum_interval_seconds=300,
        default_status=AUTOMATION_STATUS,
        description="Requests recent closed hours that were never materialised.",
    )
    def catchup(context: dg.SensorEvaluationContext):
        catchup_hours = load_config().catchup_hours
        if not catchup_hours:
            return dg.SkipReason("catchup_hours is 0")
        materialized = context.instance.get_materialized_partitions(asset.key)
        keys = missing_closed_hours(datetime.now(timezone.utc), materialized, catchup_hours, fetch_delay_minutes)
        # Consecutive missing hours (a fresh install, a day the daemon was down) in one run each.
        return [range_request(first, last, "catchup") for first, last in contiguous_ranges(keys)]

    return hourly, current_hour, catchup


#: How far back a re-materialised upstream partition (late data, a re-run) still triggers the
#: derived partitions that cover it. CloudWatch and WhaTap re-run closed hours 2 h later; the
#: daily tiers need the previous day as well; and the anomaly detector wants three days of 5-minute
#: rollups behind a fresh start (SPEC §12: `make dev` loads three days of demo CloudWatch history).
DERIVED_LOOKBACK = timedelta(days=3)


#: The hour that closed last (true for one partition: the one before the in-progress hour).
JUST_CLOSED_HOUR = (
    dg.AutomationCondition.in_latest_time_window(timedelta(hours=2))
    & ~dg.AutomationCondition.in_latest_time_window(timedelta(hours=1))
).with_label("just_closed_hour")

#: When the just-closed hour is computed once more, whether or not anything upstream changed.
CLOSE_RECHECK_CRON = "5 * * * *"


def derived_condition(optional: dg.AssetSelection | None = None, *, recheck_closed_hour: bool = False) -> dg.AutomationCondition:
    """Eager, for the derived assets (rollups, SLA): a partition is computed when it appears or when
    any upstream partition it covers is updated, not while one of them is running, and not while
    one is missing, except the `optional` upstreams (sources that arrive as files, or that are not
    configured), which never hold it back: they update it whenever they land.

    Unlike `AutomationCondition.eager()`, updates to any partition of the last two days propagate,
    not only to the latest one, so late data and re-runs reach the rollups.

    `recheck_closed_hour`: also recompute the hour that just closed at CLOSE_RECHECK_CRON, for
    assets whose in-progress rows are "as of now" (freshness, completeness): without it, an hour
    in which nothing upstream landed after its last run would keep a value computed mid-hour.
    """
    not_missing = dg.AutomationCondition.any_deps_missing()
    if optional is not None:
        not_missing = not_missing.ignore(optional)
    trigger = dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()
    if recheck_closed_hour:
        trigger = trigger | (dg.AutomationCondition.cron_tick_passed(CLOSE_RECHECK_CRON, "UTC") & JUST_CLOSED_HOUR)
    return (
        dg.AutomationCondition.in_latest_time_window(DERIVED_LOOKBACK)
        & trigger.since_last_handled()
        & ~not_missing
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("derived_eager")


#: Evaluates every asset's automation condition (rollups, SLA follow their sources). Stopped by
#: default like every schedule and sensor (SPEC §4); the demo starts it. 30 s between ticks keeps
#: the rollups within a minute of their sources without loading the daemon.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "derived_assets_automation",
    target=dg.AssetSelection.all(),
    default_status=AUTOMATION_STATUS,
    minimum_interval_seconds=30,
    description="Materialises rollups, series health and SLA partitions when their sources update.",
)
