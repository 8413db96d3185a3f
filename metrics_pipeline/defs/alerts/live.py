"""`host_live_alerts`: the hour in progress of host samples, loaded, evaluated and delivered every 30 s.

Sensors are the part of Dagster that runs on a short cadence without launching a run: this one does
the few seconds of work of `lib/alerts/live.py` (new landing lines into `points`, the host alert
rules around them, delivery of what changed), so an alert reaches Alertmanager within a minute of
its `for` elapsing (SPEC §6). The `host_points` runs stay the record of the hour: its in-progress
refreshes load what is new the same way, and the closed-hour run replaces the window. Stopped by
default like every sensor; the demo starts it.
"""

import dagster as dg

from metrics_pipeline.defs.alerts.resources import AlertTargetsResource
from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.alerts import live, rules


@dg.sensor(minimum_interval_seconds=30, default_status=AUTOMATION_STATUS,
           description="Every 30 s: loads the host samples that landed since the last tick, evaluates the host "
                       "alert rules around them and delivers what changed (alerts within a minute).")
def host_live_alerts(context: dg.SensorEvaluationContext, warehouse: WarehouseResource, landing: LandingZoneResource,
                     alert_targets: AlertTargetsResource) -> dg.SkipReason:
    done = live.tick(warehouse.get(), landing.zone(), rules.load_config(),
                     alertmanager_url=alert_targets.alertmanager_url or None,
                     webhook_url=alert_targets.webhook_url or None)
    if done.delivered and done.delivered.errors:
        context.log.warning(f"{done.delivered.failed} alert(s) not delivered, retried next tick: "
                            f"{'; '.join(done.delivered.errors)}")
    if done.loaded.batch.problems:
        context.log.warning(f"skipped while reading host files: {dict(done.loaded.batch.problems)}")
    return dg.SkipReason(done.summary())
