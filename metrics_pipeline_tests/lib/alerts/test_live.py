"""The live loop against a real Alertmanager: active within a tick of `for` elapsing, resolved within a
tick of the condition ending, one alert for one continuous hold (issue 15)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import requests

from metrics_pipeline.lib.alerts import live
from metrics_pipeline.lib.alerts.rules import AlertsConfig
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse

TICK = timedelta(seconds=30)


def _cpu(t: datetime, start: datetime) -> float:
    """90 % from start+10 min to start+16 min, 40 % otherwise."""
    return 90.0 if start + timedelta(minutes=10) <= t < start + timedelta(minutes=16) else 40.0


def test_the_busy_host_is_active_in_alertmanager_within_a_minute_and_resolved_within_a_minute(
        warehouse_dsn, db, alertmanager, tmp_path):
    # Real clock: Alertmanager drops alerts whose endsAt is past, so the simulated hour ends now.
    start = (datetime.now(timezone.utc) - timedelta(minutes=17)).replace(microsecond=0)
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(tmp_path)
    fired_at, ended_at = start + timedelta(minutes=15), start + timedelta(minutes=16)
    written = start
    states = []
    now = start + TICK
    while now <= start + timedelta(minutes=17):
        while written < now - timedelta(seconds=1):  # the agent writes and fsyncs a line a second
            path = tmp_path / host_key("busy-1", written.timestamp())
            path.parent.mkdir(parents=True, exist_ok=True)
            line = {"ts": written.timestamp(), "host": "busy-1",
                    "samples": [["host_cpu_percent", _cpu(written, start), "percent", {}]]}
            with open(path, "a") as fh:
                fh.write(json.dumps(line) + "\n")
            written += timedelta(seconds=1)
        live.tick(wh, zone, AlertsConfig(), now=now, alertmanager_url=alertmanager)
        active = [a for a in requests.get(f"{alertmanager}/api/v2/alerts", timeout=5).json()
                  if a["labels"].get("alertname") == "CpuHigh" and a["status"]["state"] == "active"]
        row = db.execute("SELECT state, starts_at, ends_at FROM metrics.alerts").fetchall()
        states.append((now, bool(active), row))
        now += TICK
    first_active = next(t for t, on, _ in states if on)
    assert first_active - fired_at <= timedelta(seconds=60)
    on = [t for t, a, _ in states if a]
    assert on == [t for t, _, _ in states if first_active <= t < on[-1] + TICK]  # never off in between
    resolved = next(t for t, _, rows in states if rows and rows[0][0] == "resolved")
    assert resolved - ended_at <= timedelta(seconds=60)
    assert states[-1][2] == [("resolved", fired_at, ended_at)]  # one row for the one hold
    assert not states[-1][1]  # and Alertmanager has it resolved
