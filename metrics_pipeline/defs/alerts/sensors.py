"""`alert_delivery`: sends the `alerts` table to Alertmanager and/or a webhook (SPEC §6).

Open-source Dagster has no alert policies: this sensor is ours. Every tick delivers what is due
(new, changed, or firing and last sent a minute ago); a failed delivery stays due and is retried
on the next tick. Targets come from the `alert_targets` resource (`defs/alerts/resources.py`).
Stopped by default like every sensor; the demo starts it.
"""

import dagster as dg

from metrics_pipeline.defs.alerts.resources import ALERTMANAGER_URL_ENV, WEBHOOK_URL_ENV, AlertTargetsResource
from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib.alerts import delivery


@dg.sensor(minimum_interval_seconds=30, default_status=AUTOMATION_STATUS,
           description="Delivers firing and resolved alerts to Alertmanager and/or a JSON webhook; retries failures.")
def alert_delivery(context: dg.SensorEvaluationContext, warehouse: WarehouseResource,
                   alert_targets: AlertTargetsResource) -> dg.SkipReason:
    alertmanager_url, webhook_url = alert_targets.alertmanager_url or None, alert_targets.webhook_url or None
    if not alertmanager_url and not webhook_url:
        return dg.SkipReason(f"no target: set {ALERTMANAGER_URL_ENV} and/or {WEBHOOK_URL_ENV}")
    result = delivery.deliver(warehouse.get(), alertmanager_url=alertmanager_url, webhook_url=webhook_url)
    if result.errors:
        context.log.warning(f"{result.failed} alert(s) not delivered, retried next tick: {'; '.join(result.errors)}")
    return dg.SkipReason(f"{result.due} due, {result.sent} sent, {result.failed} failed")
