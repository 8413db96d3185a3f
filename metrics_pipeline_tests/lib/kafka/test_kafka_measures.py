"""Measures and events topics through a real broker (Tansu): exactly once in `v_points` whatever step
the consumer dies at, poison among thousands of good messages, tenant binding, a rebalance (SPEC §12).

What each message must become is computed from what the test produced: a good measure is one point
of `v_points` (its value names the message and element, so a copy would show), a bad message or
element one quarantine row keyed by (topic, partition, offset) and element, an empty array nothing
but a count. Loads go through `custom_load` as `custom_points` / `custom_events` run them.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.kafka import consumer as consumer_module
from metrics_pipeline.lib.kafka.config import Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka
from metrics_pipeline_tests.support.kafka_crash import POINTS, Crash, arm

NOW = datetime.now(timezone.utc)
H = NOW.replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
_examples = itertools.count()


def measure(value: float, second: int, **metadata) -> dict:
    ts = (H + timedelta(seconds=second % 3600, milliseconds=int(value) % 1000)).isoformat()
    return {"name": "orders", "value": value, "ts": ts, "metadata": {"shop": "eu", **metadata}}


def stream(example: int, count: int = 240) -> list:
    """Good measures (some batches of three), and a poison message now and then; every good value unique."""
    base = 1_000_000 * (example + 1)
    out = []
    for i in range(count):
        if i % 40 == 7:
            out.append([measure(base + 10 * i + j, i, lane=str(j)) for j in range(3)])
        elif i % 50 == 13:
            out.append([b"not json", None, b"", b'[{"name": "x"}, 1]'][i % 4])
        else:
            out.append(measure(base + 10 * i, i))
    return out


def expected(produced: list, sent: list, topic: str) -> tuple[Counter, dict]:
    """(values expected once in v_points, {(address, element): 1} expected in quarantine)."""
    values, bad = Counter(), {}
    for (partition, offset), message in zip(sent, produced):
        address = f"kafka:{topic}/{partition}/{offset}"
        if isinstance(message, dict):
            values[message["value"]] += 1
        elif isinstance(message, list):
            values.update(m["value"] for m in message)
        elif message == b'[{"name": "x"}, 1]':
            bad.update({(address, 0): 1, (address, 1): 1})
        else:
            bad[(address, -1)] = 1
    return values, bad


def stored(dsn: str, topic: str, tenant: str) -> tuple[Counter, dict]:
    with psycopg.connect(dsn) as conn:
        values = conn.execute("SELECT value FROM metrics.v_points WHERE source = 'custom' AND tenant = %s",
                              (tenant,)).fetchall()
        bad = conn.execute("SELECT source_file, position, count(*) FROM metrics.quarantine "
                           "WHERE kafka_topic = %s GROUP BY 1, 2", (topic,)).fetchall()
    return Counter(v for (v,) in values), {(f, p): n for f, p, n in bad}


def load(dsn: str, zone: LocalLanding, kind: str = "measures", **kwargs) -> custom_load.CustomLoad:
    """Load hour H (the items' ts) and the hours after it (a refused message belongs to the hour of its
    own timestamp, now), one run an hour as the sensor asks for them; the counts summed."""
    loader = custom_load.load_measures if kind == "measures" else custom_load.load_events
    total = custom_load.CustomLoad(kind)
    for hour in (H + timedelta(hours=n) for n in range(3)):
        result = loader(Warehouse(dsn, "metrics"), zone, hour, hour + timedelta(hours=1), **kwargs)
        for name in ("read", "loaded", "duplicates", "quarantined", "empty_batches", "redelivered", "rows"):
            setattr(total, name, getattr(total, name) + getattr(result, name))
    return total


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crashes=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 4)), min_size=1, max_size=3),
       incremental=st.booleans())
def test_each_measure_is_in_v_points_once_whatever_step_the_consumer_dies_at(
        crashes, incremental, tansu, tmp_path, warehouse_dsn, monkeypatch):
    example = next(_examples)
    topic, tenant = f"measures-{example}", f"tenant-{example}"
    kafka.create_topic(tansu.bootstrap, topic, partitions=3)
    produced = stream(example)
    sent = kafka.produce(tansu.bootstrap, topic, produced)
    zone = LocalLanding(tmp_path / f"landing-{example}")
    config = kafka.config(zone.root, Topic(name=topic, format="measures", tenant=tenant), bootstrap=tansu.bootstrap,
                          group_id=f"group-{example}")
    warehouse = Warehouse(warehouse_dsn, "metrics")
    monkeypatch.setattr(consumer_module, "BATCH", 40)  # several files per run, so every point is reached often
    for point, after in crashes:
        with monkeypatch.context() as armed:
            arm(armed, point, after)
            try:
                KafkaIngest(config, warehouse=warehouse).run(until_idle=1.0)
            except Crash:
                pass
        if incremental:  # the hour in progress is loaded between crashes, as the sensor would
            load(warehouse_dsn, zone, incremental=True)
    KafkaIngest(config, warehouse=warehouse).run(until_idle=1.0)
    result = load(warehouse_dsn, zone, incremental=incremental)
    want_values, want_bad = expected(produced, sent, topic)
    got_values, got_bad = stored(warehouse_dsn, topic, tenant)
    assert got_values == want_values
    assert got_bad == want_bad
    assert result.read == result.loaded + result.quarantined
    assert (result.loaded, result.quarantined) == (sum(want_values.values()), len(want_bad))
    # and a full reload of the same files leaves the same warehouse
    full = load(warehouse_dsn, zone)
    assert stored(warehouse_dsn, topic, tenant) == (got_values, got_bad)
    assert (full.read, full.loaded, full.quarantined, full.redelivered) == (
        result.read, result.loaded, result.quarantined, result.redelivered)


def test_poison_among_thousands_of_good_messages_is_quarantined_with_its_coordinates_and_blocks_nothing(
        tansu, tmp_path, warehouse_dsn):
    topic = "measures"
    kafka.create_topic(tansu.bootstrap, topic, partitions=2)
    poison = {
        b"\xff\xfe not utf-8": "not UTF-8",
        b"{not json": "not JSON",
        None: "null value (a tombstone)",
        b"": "empty message",
        b"42": "wrong shape",
        b"x" * 3000: "message larger than the limit",
        json.dumps({"name": "orders", "value": "12"}).encode(): "value: must be a number",
        json.dumps({"name": "bad\u0000name", "value": 1}).encode(): "name: must not contain NUL characters",
        json.dumps({"name": "orders", "value": 1, "metadata": {"tenant": "acme"}}).encode(): "metadata.tenant",
        json.dumps({"name": "orders", "value": 1, "metadata": {"severity": "high"}}).encode(): "metadata.severity",
        json.dumps({"name": "orders", "value": 1, "colour": "red"}).encode(): "colour: unknown field",
        json.dumps({"name": "orders", "value": 1, "tenant": "other"}).encode(): "names tenant 'other'",
        json.dumps({"name": "orders", "value": 1, "ts": "2020-01-01T00:00:00Z"}).encode(): "before now",
    }
    WHOLE = {"not UTF-8", "not JSON", "null value (a tombstone)", "empty message", "wrong shape",
             "message larger than the limit"}
    produced: list = []
    for i in range(3000):
        produced.append(measure(float(i), i))
        if i % 200 == 100:
            produced.extend(poison)
    produced += [b"[]", b"[]"]  # empty batches: counted, nothing stored
    produced.append([measure(5000.0, 1, lane="a"), {"name": "orders"}, measure(5001.0, 2, lane="b")])
    produced.append({**measure(5002.0, 3), "tenant": "demo"})  # naming its own tenant is fine
    sent = kafka.produce(tansu.bootstrap, topic, produced)
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, Topic(name=topic, format="measures", tenant="demo"), bootstrap=tansu.bootstrap,
                          max_message_bytes=2048)
    stats = KafkaIngest(config).run(until_idle=1.0)
    assert stats.messages == len(produced)
    result = load(warehouse_dsn, zone)

    good = 3000 + 3
    bad_messages = 15 * len(poison)
    assert (result.loaded, result.quarantined, result.empty_batches) == (good, bad_messages + 1, 2)
    assert result.read == result.loaded + result.quarantined
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT value) FROM metrics.v_points "
                            "WHERE source = 'custom' AND tenant = 'demo'").fetchone() == (good, good)
        rows = conn.execute("SELECT kafka_partition, kafka_offset, position, reason, raw FROM metrics.quarantine "
                            "WHERE kafka_topic = %s", (topic,)).fetchall()
    where = {(p, o): m for (p, o), m in zip(sent, produced)}
    assert len(rows) == bad_messages + 1
    for partition, offset, position, reason, raw in rows:
        message = where[(partition, offset)]
        if isinstance(message, list):  # the batch's second element, alone
            assert position == 1 and reason.startswith("value: required")
            continue
        assert poison[message] in reason, (message[:40] if message else message, reason)
        assert position == (-1 if poison[message] in WHOLE else 0)
        if message and len(message) > 2048:
            assert "more bytes" in raw


def test_a_topic_is_bound_to_its_tenant_and_events_topics_load_into_events(tansu, tmp_path, warehouse_dsn):
    kafka.create_topic(tansu.bootstrap, "acme-measures", partitions=1)
    kafka.create_topic(tansu.bootstrap, "globex-events", partitions=1)
    kafka.produce(tansu.bootstrap, "acme-measures", [
        measure(1.0, 1), {**measure(2.0, 2), "tenant": "acme"}, {**measure(3.0, 3), "tenant": "globex"}])
    ts = (H + timedelta(minutes=5)).isoformat()
    kafka.produce(tansu.bootstrap, "globex-events", [
        {"name": "deploy", "ts": ts, "text": "v2 rolled out", "metadata": {"service": "shop"}},
        [{"name": "deploy", "ts": ts, "text": "v2 rolled out", "metadata": {"service": "shop"}},  # the same event
         {"name": "config", "ts": ts, "tenant": "acme"}],
    ])
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, Topic(name="acme-measures", format="measures", tenant="acme"),
                          Topic(name="globex-events", format="events", tenant="globex"), bootstrap=tansu.bootstrap)
    KafkaIngest(config).run(until_idle=1.0)
    assert {p.parts[-2] for p in (tmp_path / "landing").rglob("*.kafka")} == {"acme", "globex"}
    measures, events = load(warehouse_dsn, zone), load(warehouse_dsn, zone, "events")
    assert (measures.loaded, measures.quarantined) == (2, 1)
    assert (events.loaded, events.duplicates, events.quarantined, events.rows) == (2, 1, 1, 1)
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT tenant, value FROM metrics.v_points WHERE source = 'custom' ORDER BY value"
                            ).fetchall() == [("acme", 1.0), ("acme", 2.0)]
        assert conn.execute("SELECT tenant, name, text FROM metrics.v_events").fetchall() == [
            ("globex", "deploy", "v2 rolled out")]
        reasons = dict(conn.execute("SELECT kafka_topic, reason FROM metrics.quarantine").fetchall())
    assert "names tenant 'globex'" in reasons["acme-measures"] and "bound to tenant 'acme'" in reasons["acme-measures"]
    assert "names tenant 'acme'" in reasons["globex-events"]


def test_a_second_consumer_joining_and_leaving_mid_stream_loads_each_measure_once(tansu, tmp_path, warehouse_dsn,
                                                                                   monkeypatch):
    topic = "measures"
    kafka.create_topic(tansu.bootstrap, topic, partitions=4)
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, Topic(name=topic, format="measures", tenant="demo"), bootstrap=tansu.bootstrap)
    monkeypatch.setattr(consumer_module, "BATCH", 200)
    produced: list = []

    def producer():
        for round_ in range(12):  # 6 s of a steady stream
            batch = [measure(round_ * 1000 + i, round_ * 150 + i, host=f"h{i % 7}") for i in range(150)]
            kafka.produce(tansu.bootstrap, topic, batch, key=lambda i, m: m["metadata"]["host"].encode())
            produced.extend(batch)
            time.sleep(0.5)

    stream_thread = threading.Thread(target=producer)
    first = KafkaIngest(config)
    first_thread = threading.Thread(target=first.run, kwargs={"until_idle": 3.0}, daemon=True)
    first_thread.start()
    stream_thread.start()
    time.sleep(2.0)
    second = KafkaIngest(config)
    second_thread = threading.Thread(target=second.run, daemon=True)
    second_thread.start()  # joins: the partitions are shared out
    load(warehouse_dsn, zone, incremental=True)  # the sensor's run of the hour in progress, mid-stream
    time.sleep(2.5)
    second.stop()  # leaves: its partitions are flushed, committed and handed back
    second_thread.join(30)
    stream_thread.join(60)
    first_thread.join(60)
    assert not first_thread.is_alive() and not second_thread.is_alive()
    assert second.stats.messages > 0 and first.stats.rebalances >= 3  # it was really shared
    result = load(warehouse_dsn, zone, incremental=True)
    got, _ = stored(warehouse_dsn, topic, "demo")
    assert got == Counter(m["value"] for m in produced)
    assert result.loaded == len(produced) and result.quarantined == 0
