"""The daily retention job: drop partitions past their tier's retention, and delete committed
landing-zone files past theirs (`lib/warehouse/retention.py`)."""

import dagster as dg

from metrics_pipeline.defs.automation import SCHEDULE_STATUS
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.warehouse import retention


@dg.op(tags={"kind": "postgres"})
def drop_expired_partitions(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    """Drops whole partitions whose rows are all older than their table's retention."""
    dropped = retention.apply(warehouse.get())
    table = markdown.table(["table", "partition", "data before"], [(d.table, d.partition, d.upper.isoformat()) for d in dropped],
                           limit=len(dropped) or 1)
    context.add_output_metadata({"dropped": len(dropped), "partitions": dg.MetadataValue.md(table)})
    context.log.info(f"dropped {len(dropped)} expired partition(s)")


@dg.op(tags={"kind": "postgres"})
def delete_expired_landing_files(context: dg.OpExecutionContext, warehouse: WarehouseResource,
                                 landing: LandingZoneResource) -> None:
    """Deletes landing files whose data is committed and whose every hour is past the retention."""
    deleted = retention.apply_landing(warehouse.get(), landing.zone())
    by_kind: dict[str, int] = {}
    for item in deleted:
        by_kind[item.kind] = by_kind.get(item.kind, 0) + 1
    context.add_output_metadata({
        "deleted_files": len(deleted),
        "deleted_bytes": sum(item.size for item in deleted),
        "by_kind": dg.MetadataValue.json(by_kind),
        "newest_hour_deleted": max((i.newest_hour for i in deleted), default=None).isoformat() if deleted else "none",
    })
    context.log.info(f"deleted {len(deleted)} landing file(s)")


@dg.job(description="Drop partitions past their retention (points 7 d, 5 m 90 d, 1 h 2 y, 1 d 5 y, runs 1 y) "
                    "and committed landing files past theirs (14 d).")
def retention_job():
    drop_expired_partitions()
    delete_expired_landing_files()


retention_daily = dg.ScheduleDefinition(
    job=retention_job, cron_schedule="17 3 * * *", execution_timezone="UTC", default_status=SCHEDULE_STATUS,
)
