"""`custom_points`, `custom_events` and `custom_sensor` (issue 18): pushed batches of two tenants,
a retried batch and an item of an earlier hour, materialised through Dagster; what the superuser and
tenant-restricted BI logins see in `v_points` / `v_events`; the sensor's requests."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.custom import sensors as custom_sensors
from metrics_pipeline.defs.custom.assets import NEW_FILES, REASON_TAG, custom_events, custom_points
from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.security import connect_as

H = datetime(2026, 2, 3, 10, tzinfo=timezone.utc)
EARLIER = H - timedelta(hours=2)


class Clock:
    def __init__(self, now: datetime):
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pushed(tmp_path):
    """Two tenants' measures and events received at H+10m..H+12m, a retried batch, an item of EARLIER."""
    landing = tmp_path / "landing"
    clock = Clock(H + timedelta(minutes=10))
    batch = [Measure("orders", 3.0, H + timedelta(minutes=5), {"shop": "eu"}, "count"),
             Measure("orders", 4.0, EARLIER + timedelta(minutes=30), {"shop": "eu"}, "count")]
    with PushWriter(ApiConfig(landing=str(landing), spool_dir=str(tmp_path / "spool")), clock=clock) as writer:
        writer.write("acme", "measures", batch)
        writer.write("acme", "events", [Event("deploy", H + timedelta(minutes=6), {"app": "shop"}, "v2.3")])
        clock.now += 60
        writer.write("acme", "measures", batch)  # the client's retry: same identities
        writer.write("boreal", "measures", [Measure("queue_depth", 7.0, H + timedelta(minutes=7), {"host": "q-1"})])
        writer.write("boreal", "events", [Event("incident", H + timedelta(minutes=8), {}, "disk full")])
    return landing


def resources(dsn, landing):
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=str(landing))}


def materialise(dsn, landing, hour, tags=None):
    result = dg.materialize([custom_points, custom_events], partition_key=hour_key(hour), resources=resources(dsn, landing),
                            tags=tags)
    assert result.success
    return {node: {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
            for node in ("custom_points", "custom_events")}


def test_assets_load_both_tenants_once_each_with_metadata(warehouse_dsn, pushed):
    meta = materialise(warehouse_dsn, pushed, H)
    assert {k: meta["custom_points"][k] for k in ("items_read", "loaded", "duplicates", "quarantined", "files", "points")} \
        == {"items_read": 3, "loaded": 3, "duplicates": 1, "quarantined": 0, "files": 3, "points": 2}
    assert {k: meta["custom_events"][k] for k in ("items_read", "loaded", "duplicates", "rows")} == \
        {"items_read": 2, "loaded": 2, "duplicates": 0, "rows": 2}
    earlier = materialise(warehouse_dsn, pushed, EARLIER)
    assert (earlier["custom_points"]["points"], earlier["custom_points"]["duplicates"]) == (1, 1)
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("""SELECT tenant, metric, resource, ts, value FROM metrics.v_points
                               WHERE source = 'custom' ORDER BY ts""").fetchall() == [
            ("acme", "orders", "", EARLIER + timedelta(minutes=30), 4.0),
            ("acme", "orders", "", H + timedelta(minutes=5), 3.0),
            ("boreal", "queue_depth", "q-1", H + timedelta(minutes=7), 7.0)]
        assert conn.execute("SELECT tenant, name, text FROM metrics.v_events ORDER BY ts").fetchall() == [
            ("acme", "deploy", "v2.3"), ("boreal", "incident", "disk full")]


def test_restricted_bi_logins_see_only_their_tenants_points_and_events(warehouse_dsn, pushed):
    materialise(warehouse_dsn, pushed, H)
    warehouse = Warehouse(warehouse_dsn)
    seen = {}
    for tenant in ("acme", "boreal", None):
        role, password = f"bi_{tenant or 'all'}_{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
        bi.ensure_role(warehouse, role, password=password, tenants=[tenant] if tenant else None)
        with connect_as(warehouse_dsn, role, password) as conn:
            seen[tenant] = (
                sorted(conn.execute("SELECT DISTINCT tenant FROM metrics.v_points WHERE source = 'custom'").fetchall()),
                sorted(conn.execute("SELECT tenant, name FROM metrics.v_events").fetchall()))
    assert seen["acme"] == ([("acme",)], [("acme", "deploy")])
    assert seen["boreal"] == ([("boreal",)], [("boreal", "incident")])
    assert seen[None] == ([("acme",), ("boreal",)], [("acme", "deploy"), ("boreal", "incident")])


def test_the_sensor_requests_each_kind_for_the_hours_its_new_files_touch(warehouse_dsn, pushed, monkeypatch):
    monkeypatch.setattr(custom_sensors, "utc_now", lambda: H + timedelta(minutes=12, seconds=30))
    context = dg.build_sensor_context(cursor=None, resources=resources(warehouse_dsn, pushed))
    result = custom_sensors.custom_sensor(context)
    requested = sorted((r.asset_selection[0].to_user_string(), r.partition_key) for r in result.run_requests)
    assert requested == [("custom_events", hour_key(H)), ("custom_points", hour_key(EARLIER)),
                         ("custom_points", hour_key(H))]
    assert all(r.tags == {REASON_TAG: NEW_FILES} for r in result.run_requests)
    again = custom_sensors.custom_sensor(dg.build_sensor_context(cursor=result.cursor,
                                                                 resources=resources(warehouse_dsn, pushed)))
    assert again.run_requests == []


def test_the_sensors_runs_load_only_what_is_new_and_other_runs_replace_the_hour(warehouse_dsn, tmp_path):
    # a recent hour: records are kept only for hours items can still reach (the API's back window)
    recent = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    landing, clock = tmp_path / "landing", Clock(recent + timedelta(minutes=10))
    with PushWriter(ApiConfig(landing=str(landing), spool_dir=str(tmp_path / "spool")), clock=clock) as writer:
        writer.write("acme", "measures", [Measure("orders", 3.0, recent + timedelta(minutes=5), {"shop": "eu"}, "count"),
                                          Measure("orders", 4.0, recent + timedelta(minutes=6), {"shop": "eu"}, "count")])
        writer.write("acme", "events", [Event("deploy", recent + timedelta(minutes=6), {"app": "shop"}, "v2.3")])
        first = materialise(warehouse_dsn, landing, recent, tags={REASON_TAG: NEW_FILES})  # no record: the whole hour
        assert (first["custom_points"]["mode"], first["custom_points"]["points"]) == ("full", 2)
        clock.now += 600
        writer.write("acme", "measures", [Measure("orders", 5.0, recent + timedelta(minutes=19), {"shop": "eu"}, "count")])
        writer.write("acme", "events", [Event("deploy", recent + timedelta(minutes=19), {"app": "shop"}, "v2.4")])
    new = materialise(warehouse_dsn, landing, recent, tags={REASON_TAG: NEW_FILES})
    assert {k: new["custom_points"][k] for k in ("mode", "new_items", "new_files", "items_read", "points", "dagster/row_count")} \
        == {"mode": "incremental", "new_items": 1, "new_files": 1, "items_read": 3, "points": 3, "dagster/row_count": 3}
    assert (new["custom_events"]["mode"], new["custom_events"]["rows"]) == ("incremental", 2)
    again = materialise(warehouse_dsn, landing, recent)  # by hand (or a backfill, a re-execution): the hour replaced
    assert {k: again["custom_points"][k] for k in ("mode", "full_because", "points", "points_changed")} == \
        {"mode": "full", "full_because": "asked for", "points": 3, "points_changed": 0}
