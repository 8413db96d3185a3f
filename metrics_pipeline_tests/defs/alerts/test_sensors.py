from datetime import datetime, timedelta, timezone

import dagster as dg
import requests

from metrics_pipeline.defs.alerts.sensors import ALERTMANAGER_URL_ENV, WEBHOOK_URL_ENV, alert_delivery
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
    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    context = dg.build_sensor_context(resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)})
    skip = alert_delivery(context)
    assert "1 sent" in skip.skip_message
    alerts = requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
    assert [a["labels"]["resource"] for a in alerts] == ["web-9"]


def test_without_a_target_the_sensor_says_what_to_configure(warehouse_dsn, monkeypatch):
    monkeypatch.delenv(ALERTMANAGER_URL_ENV, raising=False)
    monkeypatch.delenv(WEBHOOK_URL_ENV, raising=False)
    context = dg.build_sensor_context(resources={"warehouse": WarehouseResource(dsn=warehouse_dsn)})
    assert ALERTMANAGER_URL_ENV in alert_delivery(context).skip_message
