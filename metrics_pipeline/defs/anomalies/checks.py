"""The `anomalies` check on `anomaly_scores`: `AnomalyDetected` alerts through the alert pipeline (SPEC §6, §11).

Each hour of the run is evaluated on its own (`per_partition`, like the threshold checks):
`lib.anomalies.alerts.evaluate_and_record` turns the stored scores into episodes and reconciles them
with the `alerts` table, which the `alert_delivery` sensor sends to Alertmanager and the webhook. Not
blocking: an anomaly is what the data says about the systems, not a fault of the data.
The check fails while an episode fires in the hour, as ERROR when its critical alert does.
"""

from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.alerts.checks import per_partition
from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown, settings
from metrics_pipeline.lib.anomalies import alerts
from metrics_pipeline.lib.anomalies import config as anomaly_config


def episodes_table(found: list[alerts.Episode]) -> str:
    rows = []
    for e in found:
        hold = e.critical or e.warning
        rows.append((f"{e.series.metric} {e.series.resource}", alerts.dt(e.started_at),
                     "critical" if e.critical else "warning",
                     "firing" if hold.resolved_at is None else f"resolved {alerts.dt(hold.resolved_at):%H:%M}",
                     e.description, f"{e.peak_score:.2f}"))
    return markdown.table(["series", "since", "severity", "state", "band", "score"], rows, empty="no anomaly")


@dg.asset_check(asset="anomaly_scores", name="anomalies", partitions_def=hourly_partitions, blocking=False,
                description="AnomalyDetected alerts (config/anomalies.yaml: threshold, minimum duration, severity, "
                            "mutes) from the hour's scores; recorded in `alerts` for delivery.")
def anomalies_check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
    config = anomaly_config.load_config()

    def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
        result, found = alerts.evaluate_and_record(
            warehouse.get(), config, start, end, now=datetime.now(timezone.utc), run_id=context.run.run_id,
            asset_key="anomaly_scores", partition_key=key, generator_url=f"{settings.dagster_url()}/runs/{context.run.run_id}")
        critical = any(o.rule.severity == "critical" for o in result.firing)
        return dg.AssetCheckResult(
            passed=not result.firing,
            severity=dg.AssetCheckSeverity.ERROR if critical else dg.AssetCheckSeverity.WARN,
            metadata={
                "firing": len({o.fingerprint for o in result.firing}),
                "pending": len(result.pending),
                "series_evaluated": result.series,
                "buckets_evaluated": result.samples,
                "alerts_written": result.written,
                "alerts_removed": result.removed,
                "episodes": dg.MetadataValue.md(episodes_table(found)),
            },
        )

    yield from per_partition(context, hour)
