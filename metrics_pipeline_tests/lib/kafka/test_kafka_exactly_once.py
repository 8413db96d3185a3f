"""Exactly once: whatever step the consumer dies at, the warehouse holds each message once (SPEC §12).

A consumer is killed at chosen points of its cycle (read -> write the file -> commit -> record
health), possibly several times in a row, then a last one drains the topic. Every message must then
be in the warehouse exactly once: a row per record of a good message (a batch is several records),
one quarantine row per poison message, keyed by (topic, partition, offset); none missing, none twice.

In-process crashes (`Crash` raised at the point, the consumer abandoned without flushing or
committing, as `kill -9` would leave it) make the property test fast and reproducible; the last test
kills a real `metrics-pipeline kafka consume` process with SIGKILL.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka import consumer as consumer_module
from metrics_pipeline.lib.kafka.config import Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka
from metrics_pipeline_tests.support.ingestion_logs import at
from metrics_pipeline_tests.support.kafka_crash import POINTS, Crash, arm

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
H = NOW - timedelta(hours=1)
_examples = itertools.count()


def messages(example: int, count: int = 240) -> list:
    """Good records, batches, poison: each message distinct (object ids unique to the example)."""
    base = 1_000_000 * (example + 1)
    out = []
    for i in range(count):
        if i % 40 == 7:
            out.append([at(H, (i + j) % 60, Objet_Id=base + 10 * i + j) for j in range(3)])
        elif i % 50 == 13:
            out.append([b"not json", None, b"", b"[1, {\"x\": 2}]"][i % 4])
        else:
            out.append(at(H, i % 60, Objet_Id=base + 10 * i))
    return out


def expected(produced: list, sent: list, topic: str) -> tuple[dict, dict]:
    """(address, position) -> count expected in ingestion_runs, and in quarantine."""
    runs, bad = {}, {}
    for (partition, offset), message in zip(sent, produced):
        address = f"kafka:{topic}/{partition}/{offset}"
        if isinstance(message, dict):
            runs[(address, 0)] = 1
        elif isinstance(message, list):
            runs.update({(address, j): 1 for j in range(len(message))})
        elif message == b"[1, {\"x\": 2}]":
            bad.update({(address, 0): 1, (address, 1): 1})
        else:
            bad[(address, -1)] = 1
    return runs, bad


def stored(dsn: str, topic: str) -> tuple[dict, dict]:
    with psycopg.connect(dsn) as conn:
        runs = conn.execute("SELECT source_file, source_position, count(*) FROM metrics.ingestion_runs "
                            "WHERE source_file LIKE %s GROUP BY 1, 2", (f"kafka:{topic}/%",)).fetchall()
        bad = conn.execute("SELECT source_file, position, count(*) FROM metrics.quarantine "
                           "WHERE kafka_topic = %s GROUP BY 1, 2", (topic,)).fetchall()
    return {(f, p): n for f, p, n in runs}, {(f, p): n for f, p, n in bad}


def load(dsn, zone) -> ingestion_load.IngestionLoadResult:
    return ingestion_load.load_window(Warehouse(dsn, "metrics"), zone, H, NOW + timedelta(hours=2), ParseOptions())


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(crashes=st.lists(st.tuples(st.sampled_from(POINTS), st.integers(1, 4)), min_size=1, max_size=3))
def test_the_warehouse_holds_each_message_once_whatever_step_the_consumer_dies_at(
        crashes, tansu, tmp_path, warehouse_dsn, monkeypatch):
    example = next(_examples)
    topic = f"jobs-{example}"
    kafka.create_topic(tansu.bootstrap, topic, partitions=3)
    produced = messages(example)
    sent = kafka.produce(tansu.bootstrap, topic, produced)
    zone = LocalLanding(tmp_path / f"landing-{example}")
    config = kafka.config(zone.root, Topic(name=topic, format="job_logs"), bootstrap=tansu.bootstrap,
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
    KafkaIngest(config, warehouse=warehouse).run(until_idle=1.0)
    result = load(warehouse_dsn, zone)
    want_runs, want_bad = expected(produced, sent, topic)
    got_runs, got_bad = stored(warehouse_dsn, topic)
    assert got_runs == want_runs
    assert got_bad == want_bad
    assert (result.loaded, result.quarantined) == (len(want_runs), len(want_bad))


@pytest.mark.slow
def test_kill_9_of_the_consumer_process_mid_stream_loses_and_duplicates_nothing(tansu, tmp_path, warehouse_dsn):
    topic = "jobs-killed"
    kafka.create_topic(tansu.bootstrap, topic, partitions=3)
    produced, sent = [], []

    def stream(stop):
        for round_ in itertools.count():  # a steady stream while consumers are started and killed
            if stop.is_set():
                return
            batch = messages(100 + round_, count=100)
            sent.extend(kafka.produce(tansu.bootstrap, topic, batch))
            produced.extend(batch)
            time.sleep(0.2)

    landing = tmp_path / "landing"
    (tmp_path / "kafka.yaml").write_text(json.dumps({
        "bootstrap_servers": tansu.bootstrap, "group_id": "killed", "landing": str(landing),
        "spool_dir": str(tmp_path / "spool"), "flush_interval": "0.2s", "session_timeout": "2s",
        "max_poll_interval": "3s", "topics": [{"name": topic, "format": "job_logs"}]}))
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn, "METRICS_PIPELINE_KAFKA_CONFIG": str(tmp_path / "kafka.yaml"),
           "METRICS_PIPELINE_HOME": str(tmp_path / "home")}
    command = [sys.executable, "-m", "metrics_pipeline.cli", "kafka", "consume"]
    stop = threading.Event()
    producer = threading.Thread(target=stream, args=(stop,))
    producer.start()
    try:
        for kill_after in (3.0, 4.0):  # seconds after start: once the group is joined, mid-stream
            proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "log", "ab"))
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            time.sleep(2.5)  # the dead member's session expires
    finally:
        stop.set()
        producer.join(60)
    final = subprocess.run([*command, "--until-idle", "2"], env=env, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr[-3000:]
    assert len(list(landing.rglob("*.kafka"))) > 3  # the killed consumers had landed files
    load(warehouse_dsn, LocalLanding(landing))
    want_runs, want_bad = expected(produced, sent, topic)
    got_runs, got_bad = stored(warehouse_dsn, topic)
    assert got_runs == want_runs and got_bad == want_bad
