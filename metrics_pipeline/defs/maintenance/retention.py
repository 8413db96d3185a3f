"""The daily retention job: drop partitions past their tier's retention (`lib/retention.py`)."""

import dagster as dg

from metrics_pipeline.defs.partitions import SCHEDULE_STATUS
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import retention


@dg.op(tags={"kind": "postgres"})
def drop_expired_partitions(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    """Drops whole partitions whose rows are all older than their table's retention."""
    dropped = retention.apply(warehouse.dsn, warehouse.schema)
    lines = ["| table | partition | data before |", "|---|---|---|"]
    lines += [f"| {d.table} | {d.partition} | {d.upper.isoformat()} |" for d in dropped]
    context.add_output_metadata({"dropped": len(dropped), "partitions": dg.MetadataValue.md("\n".join(lines))})
    context.log.info(f"dropped {len(dropped)} expired partition(s)")


@dg.job(description="Drop partitions past their retention (points 7 d, 5 m 90 d, 1 h 2 y, 1 d 5 y, runs 1 y).")
def retention_job():
    drop_expired_partitions()


retention_daily = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="17 3 * * *", execution_timezone="UTC", default_status=SCHEDULE_STATUS,
)
