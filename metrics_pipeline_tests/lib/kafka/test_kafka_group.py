"""The consumer in a group and against a broker that goes away: rebalances and outages lose and
duplicate nothing; lag is what the test produced; the brokers' absence is said once, never spun on."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import boto3
import psycopg

from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka import consumer as consumer_module
from metrics_pipeline.lib.kafka.config import Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka
from metrics_pipeline_tests.support.ingestion_logs import at

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
H = NOW - timedelta(hours=1)
TOPIC = Topic(name="job-logs", format="job_logs")


def records(first: int, count: int) -> list[dict]:
    return [at(H, i % 60, Objet_Id=first + i) for i in range(count)]


def loaded_once(dsn: str, zone: LocalLanding, sent: list[tuple[int, int]]) -> None:
    """Every sent (partition, offset) is exactly one row of ingestion_runs, and nothing else is."""
    ingestion_load.load_window(Warehouse(dsn, "metrics"), zone, H, NOW + timedelta(hours=2), ParseOptions())
    with psycopg.connect(dsn) as conn:
        rows = [f for (f,) in conn.execute("SELECT source_file FROM metrics.ingestion_runs")]
    counts = Counter(rows)
    want = {f"kafka:job-logs/{p}/{o}" for p, o in sent}
    assert set(counts) == want, (len(set(counts) - want), len(want - set(counts)))
    assert max(counts.values()) == 1


def in_thread(ingest: KafkaIngest, until_idle: float | None = None) -> threading.Thread:
    thread = threading.Thread(target=ingest.run, kwargs={"until_idle": until_idle}, daemon=True)
    thread.start()
    return thread


def test_a_second_consumer_joining_and_leaving_mid_stream_loses_and_duplicates_nothing(tansu, tmp_path, warehouse_dsn,
                                                                                          monkeypatch):
    kafka.create_topic(tansu.bootstrap, "job-logs", partitions=4)
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, TOPIC, bootstrap=tansu.bootstrap)
    warehouse = Warehouse(warehouse_dsn, "metrics")
    monkeypatch.setattr(consumer_module, "BATCH", 200)
    sent: list[tuple[int, int]] = []

    def producer():
        for round_ in range(16):  # 8 s of a steady stream
            sent.extend(kafka.produce(tansu.bootstrap, "job-logs", records(round_ * 1000, 150),
                                      key=lambda i, m: str(m["Objet_Id"]).encode()))
            time.sleep(0.5)

    stream = threading.Thread(target=producer)
    first = KafkaIngest(config, warehouse=warehouse)
    first_thread = in_thread(first, until_idle=3.0)
    stream.start()
    time.sleep(2.5)
    second = KafkaIngest(config, warehouse=warehouse)
    second_thread = in_thread(second)  # joins: the partitions are shared out
    time.sleep(3.0)
    second.stop()  # leaves: its partitions are flushed, committed and handed back
    second_thread.join(30)
    stream.join(60)
    first_thread.join(60)
    assert not first_thread.is_alive() and not second_thread.is_alive()
    assert second.stats.messages > 0 and first.stats.rebalances >= 3  # it was really shared
    assert first.stats.messages + second.stats.messages >= len(sent)
    loaded_once(warehouse_dsn, zone, sent)
    with psycopg.connect(warehouse_dsn) as conn:
        committed = dict(conn.execute('SELECT "partition", committed_offset FROM metrics.kafka_partitions').fetchall())
    ends = Counter(p for p, _ in sent)
    assert committed == dict(ends)


def test_lag_is_what_was_produced_and_not_yet_committed(tansu, tmp_path, warehouse_dsn):
    kafka.create_topic(tansu.bootstrap, "job-logs", partitions=3)
    sent = kafka.produce(tansu.bootstrap, "job-logs", records(0, 900), key=lambda i, m: str(i % 3).encode())
    produced = Counter(p for p, _ in sent)
    now = [time.time()]
    ingest = KafkaIngest(kafka.config(tmp_path / "landing", TOPIC, bootstrap=tansu.bootstrap, flush_interval=timedelta(seconds=60)),
                         warehouse=Warehouse(warehouse_dsn, "metrics"), clock=lambda: now[0] - now[0] % 60)
    ingest.open()
    try:
        read, deadline = 0, time.monotonic() + 30
        while read < len(sent) and time.monotonic() < deadline:
            read += ingest.step()
        assert read == len(sent) and ingest.stats.files == 0  # all read, nothing durable yet
        ingest.record_health(force=True)
        with psycopg.connect(warehouse_dsn) as conn:
            lag = dict(conn.execute('SELECT "partition", lag FROM metrics.kafka_partitions').fetchall())
        # Nothing committed: the lag is the partition's end (Tansu's may trail the true end by 1-2 %).
        assert set(lag) == {0, 1, 2} and set(produced) <= set(lag)
        assert all(0.97 * produced[p] <= lag[p] <= produced[p] for p in lag), (lag, produced)
        now[0] += 61  # the minute is over: the files are cut and committed
        ingest.step()
        with psycopg.connect(warehouse_dsn) as conn:
            rows = conn.execute('SELECT "partition", lag, committed_offset, messages, files FROM metrics.kafka_partitions').fetchall()
        assert {p: (lag, offset, messages, files) for p, lag, offset, messages, files in rows} == {
            p: (0, produced[p], produced[p], int(produced[p] > 0)) for p in range(3)}
    finally:
        ingest.close()


def test_brokers_stopped_and_started_are_waited_for_with_a_pause_and_nothing_is_lost(tmp_path, warehouse_dsn, moto_endpoint,
                                                                                      caplog):
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    broker = kafka.TansuBroker(tmp_path / "tansu.log", storage=f"s3://{bucket}/",
                               env={"AWS_ENDPOINT": moto_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"})
    broker.start()
    try:
        kafka.create_topic(broker.bootstrap, "job-logs", partitions=2)
        zone = LocalLanding(tmp_path / "landing")
        ingest = KafkaIngest(kafka.config(zone.root, TOPIC, bootstrap=broker.bootstrap),
                             warehouse=Warehouse(warehouse_dsn, "metrics"))
        steps = Counter()
        original = ingest.step

        def counted(*args, **kwargs):
            steps["down" if not ingest.broker_up else "up"] += 1
            return original(*args, **kwargs)
        ingest.step = counted
        caplog.set_level(logging.INFO, logger="metrics_pipeline.lib.kafka")
        thread = in_thread(ingest, until_idle=5.0)
        sent = kafka.produce(broker.bootstrap, "job-logs", records(0, 500))
        deadline = time.monotonic() + 30
        while ingest.stats.commits == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        broker.stop(kill=True)
        time.sleep(8.0)  # longer than until_idle: an outage is not idleness
        assert thread.is_alive() and not ingest.broker_up
        with psycopg.connect(warehouse_dsn) as conn:
            assert conn.execute("SELECT bool_and(NOT broker_up) FROM metrics.kafka_consumers").fetchone()[0]
        broker.start()
        sent += kafka.produce(broker.bootstrap, "job-logs", records(10_000, 500))
        thread.join(60)
        assert not thread.is_alive()
    finally:
        broker.stop()
    assert ingest.broker_up and ingest.stats.broker_outages >= 1
    said = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert said and sum("Kafka brokers 127.0.0.1" in m for m in said) <= ingest.stats.broker_outages
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    # Never spun: consume() waits POLL_SECONDS when nothing comes, so 8 s down is at most ~40 steps.
    assert steps["down"] <= 8.0 / consumer_module.POLL_SECONDS * 1.5 + 5, steps
    loaded_once(warehouse_dsn, zone, sent)
