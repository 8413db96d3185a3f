"""Freshness of every source (SPEC §6): the hour in progress must have been materialised recently.

Dagster's time-partition freshness checks fail when an asset's latest hourly partition was not
materialised by the deadline (20 minutes past each hour: sources refresh the in-progress hour
every few minutes, so a miss means collection stopped). They are evaluated by their own sensor,
stopped by default like every sensor (the demo starts it). API sources that are not configured
are left out: they are expected never to update. Ingestion logs are left out as well: jobs drop
files when they run, and hours without any file are normal (the SLA tables track job freshness).
"""

import dagster as dg

from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.lib import sources

DEADLINE_CRON = "20 * * * *"


def fresh_assets() -> list[str]:
    """Every configured point source, and the first rollup tier."""
    return [*(s.asset for s in sources.POINT_SOURCES if sources.configured(s.name)), "rollup_5m"]


freshness_checks = dg.build_time_partition_freshness_checks(
    assets=fresh_assets(), deadline_cron=DEADLINE_CRON, timezone="UTC", severity=dg.AssetCheckSeverity.WARN,
)

freshness_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=freshness_checks, minimum_interval_seconds=60, name="freshness_checks_sensor",
    default_status=AUTOMATION_STATUS,
)
