"""The two partition definitions every asset shares (SPEC §4).

Hourly for sources, `rollup_5m`, `rollup_1h` and `sla_hourly`; daily for `rollup_1d` and `sla_daily`.
Both are UTC and include the in-progress period (`end_offset=1`), so the current hour can be
re-materialised every few minutes for fresh dashboards. Five-minute buckets are rows, not partitions.

The first partition comes from `METRICS_PIPELINE_START_DATE` (ISO date, default 2025-01-01): move it
back to backfill older history (CloudWatch keeps at most 455 days).
"""

import os
from datetime import date, datetime, timezone

import dagster as dg

START_DATE_ENV = "METRICS_PIPELINE_START_DATE"
DEFAULT_START_DATE = "2025-01-01"


def start_date() -> str:
    value = os.environ.get(START_DATE_ENV, DEFAULT_START_DATE)
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise ValueError(f"{START_DATE_ENV} must be an ISO date like 2025-01-01, got {value!r}") from None


hourly_partitions = dg.HourlyPartitionsDefinition(
    start_date=f"{start_date()}-00:00", timezone="UTC", end_offset=1
)
daily_partitions = dg.DailyPartitionsDefinition(start_date=start_date(), timezone="UTC", end_offset=1)

#: How an hourly partition key is written (Dagster's format for hourly partitions).
HOUR_KEY_FORMAT = "%Y-%m-%d-%H:%M"


def hour_key(hour: datetime) -> str:
    """The partition key of the hour starting at `hour`."""
    return hour.strftime(HOUR_KEY_FORMAT)


def key_hour(key: str) -> datetime:
    """The (UTC) start of the hour of partition key `key`."""
    return datetime.strptime(key, HOUR_KEY_FORMAT).replace(tzinfo=timezone.utc)


MAX_PARTITIONS_PER_RUN_ENV = "METRICS_PIPELINE_MAX_PARTITIONS_PER_RUN"


def backfill_policy(partitions_per_run: int) -> dg.BackfillPolicy:
    """A backfill runs `partitions_per_run` partitions per run (one set-based pass over the range),
    capped by METRICS_PIPELINE_MAX_PARTITIONS_PER_RUN: smaller runs spread a backfill over more run
    workers (Kubernetes), and 1 gives the one-run-per-partition baseline of benchmarks/backfill.py."""
    cap = os.environ.get(MAX_PARTITIONS_PER_RUN_ENV)
    if cap:
        if not cap.isdigit() or int(cap) < 1:
            raise ValueError(f"{MAX_PARTITIONS_PER_RUN_ENV} must be a positive integer, got {cap!r}")
        partitions_per_run = min(partitions_per_run, int(cap))
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run)


#: Backfills run 24 hourly partitions per run: one API/SQL pass per day of history. Rollups and SLA
#: share the sources' policy on purpose: the backfill daemon then puts a day of every hourly asset
#: in one run (sources, their checks, then rollups and SLA) instead of launching each tier one
#: daemon cycle (30 s) after the previous one finished. Daily tiers take a month of days per run.
SOURCE_BACKFILL_POLICY = backfill_policy(24)
DERIVED_BACKFILL_POLICY = SOURCE_BACKFILL_POLICY
DAILY_BACKFILL_POLICY = backfill_policy(31)
