"""`metrics-pipeline api --buffer kafka`: the push API's durable buffer is a Kafka topic, not local files.

`KafkaBuffer` stands where the API's `PushWriter` stands (`write`, `probe`, `close`): an accepted batch
is published to the measures or events topic bound to the key's tenant in `config/kafka.yaml` (SPEC
§12: one tenant a topic), and `write` returns only once the broker acknowledged every message of it
with an idempotent producer (`acks=all`, `enable.idempotence`): the 202 then means the brokers hold
the batch, and the consumer (`metrics-pipeline kafka consume`) brings it in like any other message.

Anything short of that raises `LandingUnavailable`, which the API answers 503 with `Retry-After`:
brokers unreachable (said by librdkafka's error callback: refused at once, without waiting), a batch
not acknowledged within `ack_timeout`, a full producer queue, no topic bound to the tenant. A batch
of which some messages were acknowledged and others not is refused too; its retry carries the same
identities (the API stamped `ts`), so what was stored twice is one row (last write wins).

Each message is a JSON array of items in the §2.5 schema with their `ts` (the API's stamp when the
client sent none) and the tenant, at most `max_message_bytes` (a large batch is several messages),
stamped with the time of receipt: the loaders validate items against the message's timestamp, as
the API validated them against the time of receipt.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence

from metrics_pipeline.lib.custom.files import rfc3339
from metrics_pipeline.lib.custom.landing import LandingUnavailable
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.kafka.config import KafkaConfig, librdkafka_logger

log = logging.getLogger(__name__)

#: room left in a message for the record's own overhead (the broker's limit counts it)
_MESSAGE_OVERHEAD = 4096
_DOWN_CODES = ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE", "_AUTHENTICATION", "_SSL")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_items(tenant: str, kind: str, items: Sequence[Measure] | Sequence[Event], max_bytes: int) -> list[bytes]:
    """The batch as JSON arrays of at most `max_bytes` each (one item per array at least)."""
    messages, chunk, size = [], [], 2
    for item in items:
        row = {"tenant": tenant, "name": item.name}
        if kind == "measures":
            row.update(value=item.value, ts=rfc3339(item.ts), metadata=item.metadata, unit=item.unit)
        else:
            row.update(ts=rfc3339(item.ts), metadata=item.metadata)
            if item.text is not None:
                row["text"] = item.text
        text = _encode(row).encode("utf-8")
        if chunk and size + len(text) + 1 > max_bytes:
            messages.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(text)
        size += len(text) + 1
    if chunk:
        messages.append(b"[" + b",".join(chunk) + b"]")
    return messages


class KafkaBuffer:
    """Publishes accepted batches; thread-safe, one per API process.

    Args:
        config: the Kafka configuration (`config/kafka.yaml`): client settings and the topics of
            measures and events with their tenants.
        bootstrap: `--bootstrap` (wins over the environment and the file).
        ack_timeout: seconds a batch may wait for the brokers' acknowledgement before a 503.
        clock: epoch seconds (the messages' timestamps: the time of receipt).
    """

    def __init__(self, config: KafkaConfig, *, bootstrap: str | None = None, ack_timeout: float = 10.0,
                 clock=time.time):
        self.config = config
        self.ack_timeout = ack_timeout
        self._clock = clock
        self.topics = {(t.format, t.tenant): t.name for t in config.topics if t.format in ("measures", "events")}
        self._max_bytes = config.max_message_bytes - _MESSAGE_OVERHEAD
        self._settings = {
            **config.client_settings(bootstrap),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            # librdkafka gives up on a message after this long; the API has answered 503 by then
            "message.timeout.ms": max(1000, int(ack_timeout * 1000) + 5000),
            "message.max.bytes": config.max_message_bytes,
            "reconnect.backoff.ms": config.client.get("reconnect.backoff.ms", 1000),
            "reconnect.backoff.max.ms": config.client.get("reconnect.backoff.max.ms", 10_000),
            "logger": librdkafka_logger(),
        }
        self.brokers_down_since: float | None = None
        self._lock = threading.Lock()
        self._producer = None
        self._stop = threading.Event()
        self._open()
        self._thread = threading.Thread(target=self._serve, name="kafka-buffer", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"kafka://{self._settings['bootstrap.servers']}"

    def _open(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({**self._settings, "error_cb": self._on_error})

    def _on_error(self, error) -> None:
        if error.fatal():
            # The idempotent producer cannot go on (its sequence was broken): a new one replaces it.
            log.error("Kafka producer failed for good (%s): starting a new one", error.str())
            self._replace = True
        elif error.name() in _DOWN_CODES:
            if self.brokers_down_since is None:
                self.brokers_down_since = time.monotonic()
                log.warning("Kafka brokers %s unreachable (%s): pushes are answered 503 until they are back",
                            self._settings["bootstrap.servers"], error.str())

    _replace = False

    def _serve(self) -> None:
        """Delivery reports arrive in this thread; a broken producer is replaced here."""
        while not self._stop.is_set():
            producer = self._producer
            try:
                producer.poll(0.1)
            except Exception:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("polling the Kafka producer failed")
                time.sleep(0.5)
            if self._replace:
                with self._lock:
                    self._replace = False
                    self._open()
            if self.brokers_down_since is not None and time.monotonic() - self.brokers_down_since > 1.0:
                self._check_brokers()

    def _check_brokers(self) -> None:
        try:
            self._producer.list_topics(timeout=1.0)
        except Exception:  # noqa: BLE001 - still down
            time.sleep(1.0)
            return
        log.warning("Kafka brokers %s reachable again: pushes are accepted", self._settings["bootstrap.servers"])
        self.brokers_down_since = None

    def topic_for(self, tenant: str, kind: str) -> str:
        topic = self.topics.get((kind, tenant))
        if topic is None:
            log.error("no %s topic is bound to tenant %r in the Kafka configuration: its pushes are refused",
                      kind, tenant)
            raise LandingUnavailable(f"no Kafka topic of {kind} is bound to this tenant")
        return topic

    def write(self, tenant: str, kind: str, items: Sequence[Measure] | Sequence[Event]) -> str:
        """Publish `items` and return once the brokers hold all of them (`kafka:<topic>`).

        Raises:
            LandingUnavailable: brokers down, too slow, or no topic for the tenant: nothing acknowledged.
        """
        if not items:
            raise ValueError("a batch holds at least one item")
        topic = self.topic_for(tenant, kind)
        if self.brokers_down_since is not None:
            raise LandingUnavailable(f"Kafka brokers unreachable for {time.monotonic() - self.brokers_down_since:.0f} s")
        messages = encode_items(tenant, kind, items, self._max_bytes)
        stamp = int(self._clock() * 1000)
        done = threading.Event()
        state = {"left": len(messages), "error": None}
        state_lock = threading.Lock()

        def delivered(error, message) -> None:
            with state_lock:
                if error is not None and state["error"] is None:
                    state["error"] = error.str()
                state["left"] -= 1
                if state["left"] == 0 or error is not None:
                    done.set()

        with self._lock:
            producer = self._producer
            try:
                for value in messages:
                    producer.produce(topic, value=value, timestamp=stamp, on_delivery=delivered)
            except BufferError:
                raise LandingUnavailable("the Kafka producer's queue is full") from None
            except Exception as exc:  # KafkaException: the producer refused the message
                raise LandingUnavailable(f"the Kafka producer refused the batch ({exc})") from None
        if not done.wait(self.ack_timeout):
            raise LandingUnavailable(f"the Kafka brokers did not acknowledge the batch within {self.ack_timeout:g} s")
        if state["error"] is not None:
            raise LandingUnavailable(f"the Kafka brokers refused the batch ({state['error']})")
        return f"kafka:{topic}"

    def probe(self) -> None:
        """Raise LandingUnavailable unless the brokers answer (`/readyz`)."""
        if self.brokers_down_since is not None:
            raise LandingUnavailable("Kafka brokers unreachable")
        try:
            self._producer.list_topics(timeout=2.0)
        except Exception as exc:  # noqa: BLE001 - any failure: not ready
            raise LandingUnavailable(f"Kafka brokers do not answer ({type(exc).__name__})") from None

    def close(self) -> None:
        """Deliver what is queued (up to the ack timeout), then stop."""
        self._stop.set()
        self._thread.join(5)
        left = self._producer.flush(self.ack_timeout)
        if left:
            log.warning("%d Kafka message(s) not delivered at close (their batches were answered 503)", left)
