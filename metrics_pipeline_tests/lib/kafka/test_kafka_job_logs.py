"""Job-log records from a real broker to `ingestion_runs`: every message once, poison quarantined by its coordinates."""

import json
from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka import files
from metrics_pipeline.lib.kafka.config import Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.kafka.job_logs import parse_file
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka
from metrics_pipeline_tests.support.ingestion_logs import at

NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
H = NOW - timedelta(hours=1)
START, END = H, NOW + timedelta(hours=2)  # the records' hour; refused messages belong to their own (now)
JOB_LOGS = Topic(name="job-logs", format="job_logs")


def record(i: int, **changes) -> dict:
    return at(H, i % 60, Objet_Id=10_000 + i, **changes)


def load(dsn, zone):
    return ingestion_load.load_window(Warehouse(dsn, "metrics"), zone, START, END, ParseOptions())


def runs(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT object_id, status, source_file, source_position FROM metrics.ingestion_runs "
                            "ORDER BY object_id::int").fetchall()


def quarantine(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT kafka_topic, kafka_partition, kafka_offset, position, reason FROM metrics.quarantine "
                            "ORDER BY kafka_partition, kafka_offset, position").fetchall()


def test_every_message_is_loaded_or_quarantined_once_and_poison_never_blocks_its_partition(tansu, tmp_path, warehouse_dsn):
    kafka.create_topic(tansu.bootstrap, "job-logs", partitions=2)
    poison = [b"not json {", b"", None, b"\xff\xfe\x00", b'"a string"', b"x" * 3000, json.dumps(record(9000, Etat="??")).encode()]
    good = [record(i) for i in range(600)]
    batch = [record(700 + i) for i in range(3)]
    messages = good[:300] + poison + [batch, [], [record(800), 5]] + good[300:]
    kafka.produce(tansu.bootstrap, "job-logs", messages, key=lambda i, m: str(i % 7).encode())
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, JOB_LOGS, bootstrap=tansu.bootstrap, max_message_bytes=2048)

    stats = KafkaIngest(config, warehouse=Warehouse(warehouse_dsn, "metrics")).run(until_idle=2.0)
    assert stats.messages == len(messages) and stats.refused == 3  # empty, tombstone, oversized
    assert stats.files >= 2  # one file per partition at least

    result = load(warehouse_dsn, zone)
    # 600 + 3 + 1 records; 7 poison messages + 1 bad batch element; the empty batch is counted and skipped
    assert (result.rows, result.quarantined, result.redelivered) == (604, 8, 0)
    assert result.read == result.loaded + result.quarantined
    stored = runs(warehouse_dsn)
    assert len(stored) == 604 and all(r[2].startswith("kafka:job-logs/") for r in stored)
    bad = quarantine(warehouse_dsn)
    reasons = sorted(q[4].split(" (")[0].split(":")[0] for q in bad)
    assert reasons == sorted(["not JSON", "empty message", "null value", "not UTF-8", "wrong shape",
                              "message larger than the limit", "unknown status '??'", "record is a JSON int, not an object"])
    assert all(q[0] == "job-logs" and q[2] is not None for q in bad)
    assert len({(q[1], q[2], q[3]) for q in bad}) == 8
    with psycopg.connect(warehouse_dsn) as conn:
        [(committed, lag)] = conn.execute("SELECT sum(committed_offset), sum(lag) FROM metrics.kafka_partitions").fetchall()
    assert committed == len(messages) and lag == 0
    # Loading again changes nothing.
    again = load(warehouse_dsn, zone)
    assert (again.rows, again.quarantined) == (604, 8) and runs(warehouse_dsn) == stored and quarantine(warehouse_dsn) == bad


def test_a_message_landed_twice_is_loaded_once_and_the_later_of_two_runs_wins(tmp_path, warehouse_dsn):
    zone = LocalLanding(tmp_path)
    stamp = int(H.timestamp() * 1000) + 60_000
    a = [(100, stamp, json.dumps(record(1)).encode()), (101, stamp, b"broken"),
         (102, stamp, json.dumps(record(2)).encode())]
    b = a[1:] + [(103, stamp, json.dumps(record(2, Etat="FAILED")).encode())]  # redelivered 101-102, then 103
    for messages in (a, b):
        body = files.header("job-logs", 0, "job_logs", None, messages[0][0], messages[-1][0], len(messages))
        body += b"".join(files.frame(o, t, v, 1_000_000) for o, t, v in messages)
        zone.write(files.file_key("job_logs", "job-logs", 0, messages[0][0], messages[-1][0], H.timestamp()), body)
    result = load(warehouse_dsn, zone)
    assert (result.read, result.loaded, result.quarantined, result.redelivered, result.rows) == (4, 3, 1, 2, 2)
    assert [(r[0], r[1], r[2]) for r in runs(warehouse_dsn)] == [
        ("10001", "SUCCESS", "kafka:job-logs/0/100"), ("10002", "FAILED", "kafka:job-logs/0/103")]
    assert [q[:4] for q in quarantine(warehouse_dsn)] == [("job-logs", 0, 101, -1)]


def test_a_record_is_judged_by_its_message_time_so_every_copy_is_judged_alike():
    ahead = at(H + timedelta(days=3), 1)  # more than a day after the message was produced
    stamp = int(H.timestamp() * 1000)
    data = files.header("t", 0, "job_logs", None, 5, 5, 1) + files.frame(5, stamp, json.dumps(ahead).encode(), 10**6)
    parsed = parse_file(data, "ingestion_logs/kafka/t/x.kafka", ParseOptions(now=NOW + timedelta(days=30)))
    [bad] = parsed.rejected
    assert "in the future" in bad.reason and parsed.origins[bad.position] == ("kafka:t/0/5", 0)
