"""Pushed items into the warehouse (issue 18, SPEC §12): the last write of each identity, window
replace, items of earlier hours, corrupt and unstorable lines quarantined and counted, the sensor's
plan; and (property) any interleaving of batches gives the table of the last writes."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom import sensor as custom_sensor
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse

H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
END = H + timedelta(hours=1)


class Clock:
    def __init__(self, now: datetime):
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now

    def at(self, when: datetime) -> Clock:
        self.now = when.timestamp()
        return self


@pytest.fixture
def landing(tmp_path):
    return tmp_path / "landing"


@pytest.fixture
def clock():
    return Clock(H + timedelta(minutes=10))


@pytest.fixture
def writer(landing, tmp_path, clock):
    with PushWriter(ApiConfig(landing=str(landing), spool_dir=str(tmp_path / "spool")), clock=clock) as w:
        yield w


def points(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            """SELECT s.tenant, s.metric, s.resource, s.labels::text, s.unit, p.ts, p.value
               FROM metrics.points p JOIN metrics.series s USING (series_id)
               WHERE s.source = 'custom' ORDER BY 1, 2, 4, 6""").fetchall()


def events(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT tenant, name, ts, metadata::text, text FROM metrics.events ORDER BY 1, 2, 3, 5").fetchall()


def test_measures_load_as_points_with_tenant_labels_resource_and_the_last_write_of_each_identity(
        warehouse_dsn, writer, landing, clock):
    ts = H + timedelta(minutes=5, microseconds=7)
    writer.write("acme", "measures", [Measure("orders", 1.0, ts, {"shop": "eu", "host": "web-1"}, "count"),
                                      Measure("queue_depth", 5.0, ts, {}, "")])
    clock.at(H + timedelta(minutes=11))
    writer.write("acme", "measures", [Measure("orders", 2.0, ts, {"shop": "eu", "host": "web-1"}, "count")])  # a retry
    writer.write("boreal", "measures", [Measure("orders", 9.0, ts, {"shop": "eu", "host": "web-1"}, "count")])
    result = custom_load.load_measures(Warehouse(warehouse_dsn), LocalLanding(landing), H, END, now=END)
    assert (result.read, result.loaded, result.duplicates, result.quarantined, result.rows) == (4, 4, 1, 0, 3)
    assert points(warehouse_dsn) == [
        ("acme", "orders", "web-1", '{"host": "web-1", "shop": "eu", "tenant": "acme"}', "count", ts, 2.0),
        ("acme", "queue_depth", "", '{"tenant": "acme"}', "none", ts, 5.0),
        ("boreal", "orders", "web-1", '{"host": "web-1", "shop": "eu", "tenant": "boreal"}', "count", ts, 9.0),
    ]


def test_an_item_of_an_earlier_hour_is_loaded_by_that_hour_and_indexed_under_it(warehouse_dsn, writer, landing):
    early = H - timedelta(hours=30, minutes=1)
    writer.write("acme", "measures", [Measure("orders", 1.0, early), Measure("orders", 3.0, H + timedelta(minutes=1))])
    zone, warehouse = LocalLanding(landing), Warehouse(warehouse_dsn)
    now = H + timedelta(minutes=30)
    this_hour = custom_load.load_measures(warehouse, zone, H, END, now=now)
    assert (this_hour.read, this_hour.rows) == (1, 1)
    hour = early.replace(minute=0)
    before = custom_load.load_measures(warehouse, zone, hour, hour + timedelta(hours=1), now=now)
    assert (before.read, before.rows, before.files) == (1, 1, 1)
    assert [(p[5], p[6]) for p in points(warehouse_dsn)] == [(early, 1.0), (H + timedelta(minutes=1), 3.0)]
    with psycopg.connect(warehouse_dsn) as conn:
        hours, processed = conn.execute(
            "SELECT hours, processed_at IS NOT NULL FROM metrics.landing_files WHERE kind = 'custom_measures'").fetchone()
    assert hours == [hour, H] and processed


def test_events_keep_one_row_per_identity_and_text_is_part_of_it(warehouse_dsn, writer, landing, clock):
    ts = H + timedelta(minutes=2)
    writer.write("acme", "events", [Event("deploy", ts, {"app": "shop"}, "v2.3"), Event("deploy", ts, {"app": "shop"}, "v2.4"),
                                    Event("note", ts, {}, None)])
    clock.at(H + timedelta(minutes=12))
    writer.write("acme", "events", [Event("deploy", ts, {"app": "shop"}, "v2.3"), Event("note", ts, {}, None)])  # retry
    zone, warehouse = LocalLanding(landing), Warehouse(warehouse_dsn)
    result = custom_load.load_events(warehouse, zone, H, END, now=END)
    assert (result.read, result.loaded, result.duplicates, result.rows) == (5, 5, 2, 3)
    assert events(warehouse_dsn) == [("acme", "deploy", ts, '{"app": "shop"}', "v2.3"),
                                     ("acme", "deploy", ts, '{"app": "shop"}', "v2.4"), ("acme", "note", ts, "{}", None)]
    with psycopg.connect(warehouse_dsn) as conn:  # the retry's receipt won
        assert conn.execute("SELECT max(received_at) FROM metrics.events WHERE name = 'note'").fetchone()[0] == \
            H + timedelta(minutes=12)


def test_a_corrupt_file_and_unstorable_items_are_quarantined_and_the_good_items_load(warehouse_dsn, writer, landing):
    key = writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=1))])
    writer.close()
    path = landing / key
    good = path.read_bytes()
    line = json.loads(good.splitlines()[0])
    bad_items = [{**line, "value": "NaN"}, {**line, "tenant": "boreal"}, {**line, "metadata": {"tenant": "x"}},
                 {**line, "name": "x" * 1200}]
    disowned = json.dumps(line).encode() + b"\n" + b'{"committed":5}\n'  # a batch its commit disowns
    path.write_bytes(good + b"not json\n" + b'{"committed":1}\n'
                     + b"".join(json.dumps(i).encode() + b"\n" for i in bad_items)
                     + b'{"committed":%d}\n' % len(bad_items) + disowned + b'{"tenant": "acme", "na')  # torn tail
    result = custom_load.load_measures(Warehouse(warehouse_dsn), LocalLanding(landing), H, END, now=END)
    assert (result.read, result.loaded, result.quarantined, result.corrupt_lines, result.torn_files, result.rows) == \
        (1 + 4 + 2, 1, 6, 2, 1, 1)
    assert result.read == result.loaded + result.quarantined
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute("""SELECT position, split_part(reason, ':', 1) FROM metrics.quarantine
                               WHERE source = 'custom_measures' ORDER BY position""").fetchall()
    assert rows == [(0, "2 corrupt line(s)"), (2, "value"), (3, "tenant"), (4, "metadata"), (5, "name")]


def test_the_sensor_plans_the_hours_new_files_touch_and_nothing_twice(warehouse_dsn, writer, landing, clock):
    zone, warehouse = LocalLanding(landing), Warehouse(warehouse_dsn)
    now = H + timedelta(minutes=10, seconds=30)
    first = custom_sensor.plan_sensor_tick(warehouse, zone, custom_sensor.SensorCursor(), now=now)
    assert first.hours == {"measures": {}, "events": {}}
    writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=9)),
                                      Measure("orders", 1.0, H - timedelta(hours=3, minutes=2))])
    writer.write("acme", "events", [Event("deploy", H + timedelta(minutes=10))])
    second = custom_sensor.plan_sensor_tick(warehouse, zone, first.cursor, now=now)
    assert {k: sorted(v) for k, v in second.hours.items()} == {
        "measures": [H - timedelta(hours=4), H], "events": [H]}
    assert custom_sensor.plan_sensor_tick(warehouse, zone, second.cursor, now=now).hours == {"measures": {}, "events": {}}
    # an item stamped ahead of now (next hour) waits for its hour, then is requested once it begins
    clock.at(H + timedelta(minutes=58))
    writer.write("acme", "measures", [Measure("orders", 1.0, END + timedelta(minutes=2))])
    ahead = custom_sensor.plan_sensor_tick(warehouse, zone, second.cursor, now=H + timedelta(minutes=58, seconds=30))
    assert ahead.deferred == [END] and END not in ahead.hours["measures"]
    begun = custom_sensor.plan_sensor_tick(warehouse, zone, ahead.cursor, now=END + timedelta(seconds=30))
    assert END in begun.hours["measures"]


# -- property: any interleaving of batches, duplicates included, gives the last writes ------------

NAMES = st.sampled_from(["orders", "queue_depth"])
META = st.sampled_from([{}, {"shop": "eu"}, {"shop": "us", "host": "web-1"}])
SECOND = st.integers(min_value=0, max_value=3)
ITEM = st.tuples(st.sampled_from(["acme", "boreal"]), NAMES, META, SECOND, st.floats(-1e6, 1e6, allow_nan=False))
BATCHES = st.lists(st.lists(ITEM, min_size=1, max_size=5), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=BATCHES, data=st.data())
def test_any_interleaving_of_batches_gives_the_last_write_of_each_identity(pg_server, migrated_template, tmp_path_factory,
                                                                           batches, data):
    # duplicates: some batches sent again (a client retry), at any later position
    order = list(range(len(batches)))
    for _ in range(data.draw(st.integers(0, 3))):
        order.insert(data.draw(st.integers(0, len(order))), data.draw(st.sampled_from(range(len(batches)))))
    tmp = tmp_path_factory.mktemp("interleave")
    clock = Clock(H + timedelta(minutes=20))
    expected: dict[tuple, float] = {}
    with PushWriter(ApiConfig(landing=str(tmp / "landing"), spool_dir=str(tmp / "spool")), clock=clock) as w:
        for n, index in enumerate(order):
            clock.at(H + timedelta(minutes=20, seconds=n))  # each write a later receipt
            by_tenant: dict[str, list[Measure]] = {}
            for tenant, name, meta, second, value in batches[index]:
                by_tenant.setdefault(tenant, []).append(Measure(name, value, H + timedelta(seconds=second), meta, "count"))
                expected[(tenant, name, json.dumps({**meta, "tenant": tenant}, sort_keys=True), H + timedelta(seconds=second))] = value
            for tenant, items in by_tenant.items():
                w.write(tenant, "measures", items)
    database = pg_server.create_database(template=migrated_template)
    try:
        dsn = pg_server.dsn(database)
        custom_load.load_measures(Warehouse(dsn), LocalLanding(tmp / "landing"), H, END, now=END)
        got = {(t, m, json.dumps(json.loads(labels), sort_keys=True), ts): v for t, m, _, labels, _, ts, v in points(dsn)}
        assert got == expected
    finally:
        pg_server.drop_database(database)


def test_the_sensor_requests_the_hours_of_a_file_a_run_indexed_before_the_tick_saw_it_grow(
        warehouse_dsn, writer, landing, clock):
    zone, warehouse = LocalLanding(landing), Warehouse(warehouse_dsn)
    now = H + timedelta(minutes=10, seconds=30)
    writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=9))])
    first = custom_sensor.plan_sensor_tick(warehouse, zone, custom_sensor.SensorCursor(), now=now)
    assert list(first.hours["measures"]) == [H]
    # the file grows with an item of an older hour, and the run of H (re)indexes it before the next tick
    writer.write("acme", "measures", [Measure("orders", 2.0, H - timedelta(hours=2))])
    custom_load.load_measures(warehouse, zone, H, END, now=now, incremental=True)
    second = custom_sensor.plan_sensor_tick(warehouse, zone, first.cursor, now=now)
    assert second.files == 0 and list(second.hours["measures"]) == [H - timedelta(hours=2)]
    third = custom_sensor.plan_sensor_tick(warehouse, zone, second.cursor, now=now)
    assert third.hours["measures"] == {}  # requested once as it is; a run will mark it processed


def test_the_sensor_closes_an_hour_loaded_incrementally_once_closed_and_quiet(warehouse_dsn, writer, landing, clock):
    zone, warehouse = LocalLanding(landing), Warehouse(warehouse_dsn)
    writer.write("acme", "events", [Event("deploy", H + timedelta(minutes=9))])
    custom_load.load_events(warehouse, zone, H, END, now=H + timedelta(minutes=11), incremental=True)  # no record: full
    assert custom_sensor.plan_sensor_tick(warehouse, zone, custom_sensor.SensorCursor(),
                                          now=END + timedelta(hours=1)).close["events"] == {}
    clock.at(H + timedelta(minutes=58))
    writer.write("acme", "events", [Event("note", H + timedelta(minutes=57))])
    last = custom_load.load_events(warehouse, zone, H, END, now=H + timedelta(minutes=59), incremental=True)
    assert last.mode == "incremental"
    cursor = custom_sensor.SensorCursor(through=END)
    for minutes, closing in ((62, set()), (64, set()), (65, {H})):  # closed for 5 minutes, and quiet
        plan = custom_sensor.plan_sensor_tick(warehouse, zone, cursor, now=END + timedelta(minutes=minutes - 60))
        assert set(plan.close["events"]) == closing and plan.close["measures"] == {}
    closed = custom_load.load_events(warehouse, zone, H, END, now=END + timedelta(minutes=6))
    assert (closed.mode, closed.rows) == ("full", 2)
    assert custom_sensor.plan_sensor_tick(warehouse, zone, cursor, now=END + timedelta(hours=2)).close["events"] == {}
