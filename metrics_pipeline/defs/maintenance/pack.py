"""The hourly pack of closed hours of raw points into the compact tier (`lib/warehouse/pack.py`).

A job on a schedule rather than a step of the loading assets: every source writes `points` (host
files, the APIs, pushed and Kafka measures, late re-runs of any of them), and each load marks the
hours it wrote; one pass packs whatever closed at least `DEFAULT_GRACE` ago, so the closed-hour runs
of the sources land on rows first and a late load into a packed hour is packed again next hour.
"""

import dagster as dg

from metrics_pipeline.defs.automation import SCHEDULE_STATUS
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.warehouse import pack


@dg.op(tags={"kind": "postgres"})
def pack_closed_hours(context: dg.OpExecutionContext, warehouse: WarehouseResource) -> None:
    """Packs each marked closed hour of `points` into a row per series and hour (`points_packed`)."""
    done = pack.pack_closed_hours(warehouse.get())
    table = markdown.table(["hour", "series", "points", "merged", "seconds"],
                           [(f"{d.hour:%Y-%m-%d %H:00}", d.series, d.points, d.merged, f"{d.seconds:.1f}") for d in done],
                           limit=len(done) or 1)
    context.add_output_metadata({"hours": len(done), "points": sum(d.points for d in done),
                                 "series_hours": sum(d.series for d in done), "packed": dg.MetadataValue.md(table)})
    context.log.info(f"packed {len(done)} hour(s), {sum(d.points for d in done):,} points")


@dg.job(description="Pack the closed hours of raw points (a row per series and hour, compressed arrays): "
                    "the raw tier at a few bytes a point instead of ~85.")
def pack_points_job():
    pack_closed_hours()


pack_points_hourly = dg.ScheduleDefinition(
    job=pack_points_job, cron_schedule="25 * * * *", execution_timezone="UTC", default_status=SCHEDULE_STATUS,
)
