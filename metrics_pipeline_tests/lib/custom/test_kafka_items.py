"""Kafka landing files of measures, read by the custom loaders without a broker: the tenant's series
cap applies to them item by item, and a message landed twice (a consumer restarted before its commit)
is loaded and counted once, incrementally as in a full reload."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.kafka import files
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse

NOW = datetime.now(timezone.utc)
HOUR = NOW.replace(minute=0, second=0, microsecond=0)


def land(zone: LocalLanding, first: int, values: list, *, topic="measures", tenant="demo", partition=0) -> str:
    """A landing file as the consumer writes it: offsets first.., timestamps now."""
    stamp = int(NOW.timestamp() * 1000)
    body = b"".join(files.frame(first + i, stamp, json.dumps(v).encode(), 1_000_000) for i, v in enumerate(values))
    data = files.header(topic, partition, "measures", tenant, first, first + len(values) - 1, len(values)) + body
    key = files.file_key("measures", topic, partition, first, first + len(values) - 1, NOW.timestamp(), tenant)
    zone.write(key, data)
    return key


def item(i: int, host: str = "a") -> dict:
    return {"name": "latency", "value": float(i), "ts": (HOUR + timedelta(seconds=i)).isoformat(),
            "metadata": {"host": host}}


def test_a_kafka_measure_past_its_tenants_series_cap_is_quarantined_naming_the_limit(
        tmp_path, warehouse_dsn, monkeypatch):
    (tmp_path / "api.yaml").write_text("max_series_per_tenant: 3\n")
    monkeypatch.setenv("METRICS_PIPELINE_API_CONFIG", str(tmp_path / "api.yaml"))
    zone = LocalLanding(tmp_path / "landing")
    land(zone, 0, [item(i, host=f"h{i % 5}") for i in range(10)])
    result = custom_load.load_measures(Warehouse(warehouse_dsn, "metrics"), zone, HOUR, HOUR + timedelta(hours=1))
    assert (result.loaded, result.quarantined) == (6, 4)  # hosts h0-h2 (two points each); h3, h4 refused
    with psycopg.connect(warehouse_dsn) as conn:
        reasons = [r for (r,) in conn.execute("SELECT reason FROM metrics.quarantine WHERE kafka_topic = 'measures'")]
    assert len(reasons) == 4 and all("limit of 3 (max_series_per_tenant)" in r for r in reasons)


def test_a_message_landed_twice_is_loaded_and_counted_once_incrementally_as_in_a_full_reload(tmp_path, warehouse_dsn):
    zone = LocalLanding(tmp_path / "landing")
    warehouse = Warehouse(warehouse_dsn, "metrics")
    hour = (HOUR, HOUR + timedelta(hours=1))
    land(zone, 0, [item(i) for i in range(10)])
    first = custom_load.load_measures(warehouse, zone, *hour, incremental=True)
    land(zone, 5, [item(i) for i in range(5, 15)] + [{"name": "latency"}])  # 5-9 again, then 10-14 and a bad one
    second = custom_load.load_measures(warehouse, zone, *hour, incremental=True)
    assert first.mode == "full" and second.mode == "incremental", second.full_because
    full = custom_load.load_measures(warehouse, zone, *hour)
    for result in (second, full):
        assert (result.read, result.loaded, result.duplicates, result.quarantined, result.redelivered, result.rows) == (
            16, 15, 0, 1, 5, 15)
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT value) FROM metrics.v_points").fetchone() == (15, 15)
