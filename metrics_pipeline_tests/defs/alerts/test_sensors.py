from datetime import datetime, timedelta, timezone

import dagster as dg
import requests

from metrics_pipeline.defs.alerts.resources import ALERTMANAGER_URL_ENV, WEBHOOK_URL_ENV, AlertTargetsResource
from metrics_pipeline.defs.alerts.sensors import alert_delivery
from metrics_pipeline.defs.resources import WarehouseResource


def _firing_alert(db):
    now = datetime.now(timezone.utc)
    db.execute(
        """INSERT INTO metrics.alerts (fingerprint, alertname, state, severity, labels, annotations, starts_at)
           VALUES ('f1', 'CpuHigh', 'firing', 'critical',
                   '{"alertname": "CpuHigh", "severity": "critical", "resource": "web-9"}', '{"summary": "hot"}', %s)""",
        (now - timedelta(minutes=3),),
    )


def test_the_sensor_delivers_due_alerts_to_alertmanager(warehouse_dsn, db, alertmanager, monkeypatch):
    _firing_alert(db)
    monkeypatch.setenv(ALERTMANAGER_URL_ENV, alertmanager)
    context = dg.build_sensor_context(resources={
        "warehouse": WarehouseResource(dsn=warehouse_dsn),
        "alert_targets": AlertTargetsResource(alertmanager_url=dg.EnvVar(ALERTMANAGER_URL_ENV)),
    })
    skip = alert_delivery(context)
    assert "1 sent" in skip.skip_message
    alerts = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    assert [a["labels"]["resource"] for a in alerts] == ["web-9"]


def test_without_a_target_the_sensor_says_what_to_configure(warehouse_dsn):
    context = dg.build_sensor_context(resources={
        "warehouse": WarehouseResource(dsn=warehouse_dsn), "alert_targets": AlertTargetsResource(),
    })
    message = alert_delivery(context).skip_message
    assert ALERTMANAGER_URL_ENV in message and WEBHOOK_URL_ENV in message


def test_the_definitions_read_the_targets_from_the_environment_as_env_vars(monkeypatch):
    """The webhook URL is a secret: the resource holds the variable, not its value."""
    from metrics_pipeline.defs.alerts.resources import resources

    monkeypatch.setenv(WEBHOOK_URL_ENV, "https://hooks.example.invalid/T000/B000/secret")
    monkeypatch.delenv(ALERTMANAGER_URL_ENV, raising=False)
    targets = resources().resources["alert_targets"]
    assert targets.webhook_url == dg.EnvVar(WEBHOOK_URL_ENV)
    assert targets.alertmanager_url is None
