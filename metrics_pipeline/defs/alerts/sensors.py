"""`alert_delivery`: sends the `alerts` table to Alertmanager and/or a webhook (SPEC §6).

Open-source Dagster has no alert policies: this sensor is ours. Every tick delivers what is due
(new, changed, or firing and last sent a minute ago); a failed delivery stays due and is retried
on the next tick. Targets come from the environment: `METRICS_PIPELINE_ALERTMANAGER_URL` (e.g.
http://alertmanager:9093) and `METRICS_PIPELINE_ALERT_WEBHOOK_URL` (Slack-compatible; a secret,
never logged). Stopped by default like every sensor; the demo starts it.
"""

import os

import dagster as dg

from metrics_pipeline.defs.partitions import AUTOMATION_STATUS
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.alerts import delivery

ALERTMANAGER_URL_ENV = "METRICS_PIPELINE_ALERTMANAGER_URL"
WEBHOOK_URL_ENV = "METRICS_PIPELINE_ALERT_WEBHOOK_URL"


@dg.sensor(minimum_interval_seconds=30, default_status=AUTOMATION_STATUS,
           description="Delivers firing and resolved alerts to Alertmanager and/or a JSON webhook; retries failures.")
def alert_delivery(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SkipReason:
    alertmanager_url = os.environ.get(ALERTMANAGER_URL_ENV) or None
    webhook_url = os.environ.get(WEBHOOK_URL_ENV) or None
    if not alertmanager_url and not webhook_url:
        return dg.SkipReason(f"no target: set {ALERTMANAGER_URL_ENV} and/or {WEBHOOK_URL_ENV}")
    result = delivery.deliver(warehouse.dsn, warehouse.schema, alertmanager_url=alertmanager_url, webhook_url=webhook_url)
    if result.errors:
        context.log.warning(f"{result.failed} alert(s) not delivered, retried next tick: {'; '.join(result.errors)}")
    return dg.SkipReason(f"{result.due} due, {result.sent} sent, {result.failed} failed")
