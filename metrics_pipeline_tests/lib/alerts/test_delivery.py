"""Delivery to a real Alertmanager and to a local webhook receiver."""

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import requests

from metrics_pipeline.lib.alerts import delivery, engine
from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

CPU_RULES = [r for r in DEFAULT_RULES if r.name == "CpuHigh"]
# 10 min at 50 %, 6 min at 85 %, 2 min at 97 %, 5 min at 85 %, then 40 %.
SCENARIO = [(600, 50.0), (360, 85.0), (120, 97.0), (300, 85.0), (600, 40.0)]


def _hour() -> datetime:
    return (datetime.now(timezone.utc) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)


def _load(dsn, hour, segments):
    values = np.concatenate([np.full(n, v, dtype=float) for n, v in segments])
    frame = points_frame([{"metric": "host_cpu_percent", "resource": "web-1", "labels": {"host": "web-1"},
                                  "unit": "percent", "ts": pd.date_range(hour, periods=len(values), freq="1s"),
                                  "value": values}])
    loader.load_points(Warehouse(dsn), frame, source="host", start=hour, end=hour + timedelta(hours=1))


def _active(url) -> list[dict]:
    return requests.get(f"{url}/api/v2/alerts", params={"active": "true", "inhibited": "true"}, timeout=5).json()


def test_alertmanager_receives_the_cpu_scenario_firing_then_resolved(warehouse_dsn, db, alertmanager):
    hour = _hour()
    # While CPU sits at 97 %: the warning and the critical both fire.
    _load(warehouse_dsn, hour, SCENARIO[:3])
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1),
               now=hour + timedelta(seconds=1079), source="host")
    sent = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=alertmanager)
    assert sent.sent == 2 and not sent.errors
    alerts = {a["labels"]["severity"]: a for a in _active(alertmanager)}
    assert set(alerts) == {"warning", "critical"}
    assert alerts["critical"]["labels"]["alertname"] == "CpuHigh" and alerts["critical"]["labels"]["host"] == "web-1"
    assert alerts["critical"]["status"]["state"] == "active"
    assert alerts["warning"]["status"]["state"] == "suppressed"  # inhibited by the critical
    assert alerts["warning"]["status"]["inhibitedBy"] == [alerts["critical"]["fingerprint"]]
    assert alerts["critical"]["annotations"]["summary"] == "CPU above 95 % on web-1"

    # Nothing changed and the interval has not passed: nothing is due.
    assert delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=alertmanager).due == 0
    # Still firing a minute later: re-sent so Alertmanager does not time it out.
    later = datetime.now(timezone.utc) + delivery.RESEND_INTERVAL
    assert delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=alertmanager, now=later).sent == 2

    # CPU recovers: both resolve, are sent once with their endsAt, and leave Alertmanager.
    _load(warehouse_dsn, hour, SCENARIO)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1),
               now=hour + timedelta(hours=1), source="host")
    resolved = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=alertmanager)
    assert resolved.sent == 2
    assert _active(alertmanager) == []
    assert db.execute("SELECT count(*) FROM metrics.alerts WHERE state = 'resolved' AND last_sent_at IS NOT NULL"
                      ).fetchone() == (2,)
    assert delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=alertmanager).due == 0


class _Receiver(BaseHTTPRequestHandler):
    status = 200
    bodies: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).bodies.append(json.loads(body))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    _Receiver.bodies, _Receiver.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token-123", _Receiver
    finally:
        server.shutdown()
        server.server_close()


def test_a_failing_webhook_keeps_alerts_due_and_retries_without_leaking_the_url(warehouse_dsn, db, receiver):
    url, handler = receiver
    hour = _hour()
    _load(warehouse_dsn, hour, SCENARIO)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1), now=hour + timedelta(hours=1),
               source="host")
    handler.status = 503
    failed = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), webhook_url=url)
    assert failed.failed == 2 and "HTTP 503" in failed.errors[0] and "secret-token" not in failed.errors[0]
    error = db.execute("SELECT DISTINCT last_error FROM metrics.alerts").fetchone()[0]
    assert "secret-token" not in error
    handler.status = 200
    ok = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), webhook_url=url)
    assert ok.sent == 2 and ok.due == 2
    body = handler.bodies[-1]
    assert "[RESOLVED] CpuHigh (critical): CPU above 95 % on web-1" in body["text"]
    assert {a["status"] for a in body["alerts"]} == {"resolved"}
    assert db.execute("SELECT max(send_attempts), bool_and(last_error IS NULL) FROM metrics.alerts").fetchone() == (2, True)


def test_an_unreachable_alertmanager_is_an_error_on_the_rows_not_a_lost_alert(warehouse_dsn, db):
    hour = _hour()
    _load(warehouse_dsn, hour, SCENARIO)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1), now=hour + timedelta(hours=1),
               source="host")
    result = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url="http://127.0.0.1:9", timeout=2)
    assert result.failed == 2 and result.errors == ["alertmanager: ConnectionError"]
    assert db.execute("SELECT count(*) FROM metrics.alerts WHERE last_sent_at IS NULL").fetchone() == (2,)


def test_each_target_keeps_its_own_state_so_an_alertmanager_outage_does_not_repeat_the_webhook(warehouse_dsn, db, receiver):
    url, handler = receiver
    hour = _hour()
    _load(warehouse_dsn, hour, SCENARIO[:3])  # both CpuHigh alerts firing
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1),
               now=hour + timedelta(seconds=1079), source="host")
    down = "http://127.0.0.1:9"
    first = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=down, webhook_url=url, timeout=2)
    assert (first.sent, first.failed) == (2, 2) and len(handler.bodies) == 1
    # Alertmanager still down a minute later: it retries; the webhook, which got them, is not repeated.
    later = datetime.now(timezone.utc) + delivery.RESEND_INTERVAL
    again = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), alertmanager_url=down, webhook_url=url, now=later, timeout=2)
    assert (again.sent, again.failed) == (0, 2) and len(handler.bodies) == 1
    assert db.execute("SELECT bool_and(last_error LIKE 'alertmanager:%') FROM metrics.alerts").fetchone() == (True,)
    # Still firing hours later: a reminder; then they resolve: sent once more.
    reminder = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), webhook_url=url, now=later + delivery.WEBHOOK_REPEAT)
    assert reminder.sent == 2 and len(handler.bodies) == 2
    _load(warehouse_dsn, hour, SCENARIO)
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), CPU_RULES, hour, hour + timedelta(hours=1), now=hour + timedelta(hours=1),
               source="host")
    resolved = delivery.deliver(Warehouse(warehouse_dsn, "metrics"), webhook_url=url)
    assert resolved.sent == 2 and {a["status"] for a in handler.bodies[-1]["alerts"]} == {"resolved"}
    assert delivery.deliver(Warehouse(warehouse_dsn, "metrics"), webhook_url=url, now=later + 2 * delivery.WEBHOOK_REPEAT).due == 0
