"""`ingestion_log_records`: data-ingestion job runs by start hour, with their quarantine (SPEC §2.4)."""

from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.partitions import SOURCE_BACKFILL_POLICY, hourly_partitions, start_date
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib import markdown, settings
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka import health as kafka_health


def parse_options() -> ParseOptions:
    """Deployment-wide parsing settings: log timezone from the environment, partition range."""
    return ParseOptions(
        timezone=settings.log_timezone(),
        min_start=datetime.fromisoformat(start_date()).replace(tzinfo=timezone.utc),
    )


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=SOURCE_BACKFILL_POLICY,
    group_name="ingestion_logs",
    kinds={"python", "postgres"},
    owners=["team:data-platform"],
    tags={"source": "ingestion_logs"},
)
def ingestion_log_records(
    context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingZoneResource
) -> dg.MaterializeResult:
    """One row of `ingestion_runs` per data-ingestion job run that started in the partition's hours
    (company, zone, source system, object, status, start/end, duration, cpu time, memory), read from
    JSON / JSON Lines files in the landing zone. Records that fail validation go to `quarantine` with
    file, position, raw text and reason; for every run, read = loaded + quarantined."""
    window = context.partition_time_window
    result = ingestion_load.load_window(warehouse.get(), landing.zone(), window.start, window.end, parse_options())
    if result.quarantined:
        context.log.warning(f"{result.quarantined} record(s) quarantined: {dict(result.reasons.most_common(5))}")
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.rows,
            **result.as_metadata(),
            "quarantine_reasons": dg.MetadataValue.md(markdown.counts_table(
                result.reasons, ["reason", "records"], empty="no record quarantined", limit=10)),
            "window": f"{window.start.isoformat()} .. {window.end.isoformat()}",
            **kafka_health.lag_metadata(warehouse.get(), "job_logs"),  # records from Kafka topics: their lag
        }
    )
