"""Producing to the configured brokers: topics that must exist, and a producer that loses nothing.

Used by `simulate-logs --to kafka`, `make dev`, the push API's Kafka buffer, tests and benchmarks.
The producer is idempotent with `acks=all`: a message acknowledged is held by every in-sync replica,
and a retry after a lost acknowledgement is not stored twice.
"""

from __future__ import annotations

import logging

from metrics_pipeline.lib.kafka.config import KafkaConfig, librdkafka_logger

log = logging.getLogger(__name__)


def producer_settings(config: KafkaConfig, bootstrap: str | None = None, **overrides) -> dict:
    return {
        **config.client_settings(bootstrap),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 20,
        "logger": librdkafka_logger(),
        **overrides,
    }


def make_producer(config: KafkaConfig, bootstrap: str | None = None, **overrides):
    """A confluent-kafka Producer for the configured brokers (acks=all, idempotent)."""
    from confluent_kafka import Producer

    return Producer(producer_settings(config, bootstrap, **overrides))


def ensure_topics(config: KafkaConfig, names: list[str], *, bootstrap: str | None = None, partitions: int = 3,
                  timeout: float = 30.0) -> list[str]:
    """Create the topics of `names` that do not exist yet; returns those created."""
    from confluent_kafka.admin import AdminClient, NewTopic

    settings = {k: v for k, v in config.client_settings(bootstrap).items()}
    admin = AdminClient(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [n for n in names if n not in existing]
    if not missing:
        return []
    futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in missing],
                                  request_timeout=timeout)
    created = []
    for name, future in futures.items():
        try:
            future.result(timeout)
            created.append(name)
        except Exception as exc:  # noqa: BLE001 - created meanwhile by someone else is fine
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    if created:
        log.info("created topic(s) %s with %d partition(s)", ", ".join(created), partitions)
    return created


def send(producer, topic: str, value: bytes | None, key: bytes | str | None = None, *, timestamp_ms: int = 0) -> None:
    """Queue one message, waiting for room when the producer's queue is full."""
    while True:
        try:
            producer.produce(topic, value=value, key=key, timestamp=timestamp_ms)
            return
        except BufferError:
            producer.poll(0.1)
