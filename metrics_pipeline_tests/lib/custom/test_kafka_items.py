"""Kafka landing files of measures, read by the custom loaders without a broker: the tenant's series
cap applies to them item by item, and a message landed twice (a consumer restarted before its commit)
is loaded and counted once, incrementally as in a full reload; the quick path for well-formed
measures (`ItemJudge.quick`) gives the items the full rules give."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from unittest import mock

import psycopg
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.items import Item, ParsedFile
from metrics_pipeline.lib.custom.kafka_items import parse_kafka_file
from metrics_pipeline.lib.custom.validate import ItemJudge
from metrics_pipeline.lib.kafka import files
from metrics_pipeline.lib.landing import LandingObject, LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import measure_shapes as shapes

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


def _file(values: list[tuple[int, bytes | None]], tenant: str = "demo") -> bytes:
    body = b"".join(files.frame(offset, stamp, value, 1_000_000) for offset, (stamp, value) in enumerate(values))
    return files.header("measures", 0, "measures", tenant, 0, len(values) - 1, len(values)) + body


_STAMP = int(shapes.NOW.timestamp() * 1000)
_ELEMENT = st.one_of(shapes.measures(), shapes.measures().map(lambda m: {**m, "tenant": "demo"}),
                     st.sampled_from([{"name": "orders", "value": 1, "metadata": {"host": "b"}}, 5, "x", None, []]))
_MESSAGE = st.one_of(_ELEMENT.map(json.dumps), st.lists(_ELEMENT, max_size=3).map(json.dumps),
                     st.sampled_from(["", "{", "[1", "null", "\"text\""])).map(str.encode)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([_STAMP, _STAMP, _STAMP + 1, _STAMP - 400_000_000, -1]),
                          st.one_of(_MESSAGE, st.none())), min_size=1, max_size=12))
def test_a_kafka_file_read_with_the_quick_path_gives_the_items_of_the_full_rules(messages):
    """Well-formed and malformed elements, batches, tenant fields, shared and distinct message times: the
    same items (values, hours, verdicts, quarantine reasons and keys, series) either way."""
    data = _file(messages)
    key = files.file_key("measures", "measures", 0, 0, len(messages) - 1, shapes.NOW.timestamp(), "demo")
    obj = LandingObject(shapes.NOW.timestamp(), key, len(data), "etag")
    receipt = shapes.NOW.replace(minute=0, second=0, microsecond=0)
    config = ApiConfig(landing="/nonexistent")
    quick = parse_kafka_file(obj, "measures", data, receipt, Item, ParsedFile, config)
    with mock.patch.object(ItemJudge, "quick", lambda self, raw, ignored=None: None):
        full = parse_kafka_file(obj, "measures", data, receipt, Item, ParsedFile, config)
    assert quick.items == full.items and quick.hours == full.hours
    for item in quick.items:
        assert (item.series is not None) == (item.problem is None and not item.empty)


def test_well_formed_measures_of_a_kafka_file_take_the_quick_path():
    """All but the first measure of each series (the one the full rules saw first)."""
    stamp = int(NOW.timestamp() * 1000)
    data = _file([(stamp, json.dumps(item(i, host=f"h{i % 3}")).encode()) for i in range(30)])
    key = files.file_key("measures", "measures", 0, 0, 29, NOW.timestamp(), "demo")
    calls = []
    judge = ItemJudge.judge

    def counted(self, raw):
        calls.append(raw)
        return judge(self, raw)

    with mock.patch.object(ItemJudge, "judge", counted):
        parsed = parse_kafka_file(LandingObject(NOW.timestamp(), key, len(data), "etag"), "measures", data, HOUR,
                                  Item, ParsedFile, ApiConfig(landing="/nonexistent"))
    assert len(calls) == 3 and [i.problem for i in parsed.items] == [None] * 30


def test_a_measure_without_ts_is_stamped_with_its_own_messages_time():
    stamps = [int((NOW - timedelta(seconds=s)).timestamp() * 1000) for s in (30, 30, 20, 20, 10)]
    data = _file([(stamp, json.dumps({"name": "orders", "value": i}).encode()) for i, stamp in enumerate(stamps)])
    key = files.file_key("measures", "measures", 0, 0, 4, NOW.timestamp(), "demo")
    parsed = parse_kafka_file(LandingObject(NOW.timestamp(), key, len(data), "etag"), "measures", data, HOUR,
                              Item, ParsedFile, ApiConfig(landing="/nonexistent"))
    assert [int(i.ts.timestamp() * 1000) for i in parsed.items] == stamps
    assert [i.received_at for i in parsed.items] == [i.ts for i in parsed.items]
