"""`metrics-pipeline kafka consume`: topics into the landing zone, offsets committed only once durable.

One `KafkaIngest` is one member of the consumer group (confluent-kafka, so librdkafka). It keeps a
buffer per assigned topic-partition: each message read is framed as it came (`files.frame`; nothing
is parsed here, the loaders judge the values) and appended. A buffer becomes a landing file at the
end of its minute (or `flush_interval` after its first message, or once it holds `max_file_bytes`):
written durably (`writer.LandingWriter`), then its offsets are committed, then the consumer's health
row is written to the warehouse (`health.record`). The order is the whole guarantee:

* killed before a file is durable: its messages were never committed, they are read again;
* killed after the file, before the commit: they are read again and land a second time, in a file
  whose offset range overlaps the first; the loaders keep one copy of each (topic, partition, offset);
* nothing is ever committed that is not in a durable file, so nothing is lost.

Rebalances: partitions being revoked are flushed and committed first (the next owner starts after
them); partitions lost without notice (our session expired) are dropped uncommitted, and their
next owner reads them again. A message that cannot be read (not JSON, too large, a tombstone) is
framed like any other and quarantined at load: nothing here can stop a partition.

Brokers unreachable: librdkafka reconnects about once a second (`reconnect.backoff.ms`);
the consumer says so once in its log and in its health row, keeps writing what it buffered, keeps
the commits for later, and probes the brokers with a growing pause (1 s to 30 s), never in a loop.
`until_idle` counts only time with partitions assigned and brokers reachable. `stop()` (SIGTERM)
finishes the current step, flushes, commits, writes health, leaves the group.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import socket
import threading
import time
from datetime import datetime, timezone

from metrics_pipeline.lib.kafka import files, health
from metrics_pipeline.lib.kafka.config import KafkaConfig
from metrics_pipeline.lib.kafka.writer import LandingWriter
from metrics_pipeline.lib.landing import LandingZone, open_landing
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

#: messages taken from librdkafka per call
BATCH = 10_000
POLL_SECONDS = 0.25
#: health rows are written at each commit, and at least this often (broker state, lag while idle)
HEALTH_EVERY_S = 30.0
#: after a failed health write, the warehouse is left alone this long
WAREHOUSE_PAUSE_S = 30.0
#: a consumer that cannot commit says so at most this often
COMMIT_WARN_EVERY_S = 30.0
_DOWN_CODES = ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE", "_AUTHENTICATION", "_SSL")


@dataclasses.dataclass
class ConsumeStats:
    messages: int = 0
    bytes: int = 0
    refused: int = 0  # null, empty or oversized values (quarantined at load)
    files: int = 0
    rewritten: int = 0  # files that existed already (a redelivered range, same bytes): not written again
    commits: int = 0
    failed_commits: int = 0
    rebalances: int = 0
    broker_outages: int = 0


@dataclasses.dataclass
class _Counts:
    messages: int = 0
    bytes: int = 0
    refused: int = 0
    files: int = 0


class _Buffer:
    """The messages of one topic-partition read since its last file."""

    __slots__ = ("topic", "partition", "fmt", "tenant", "chunks", "first", "last", "count", "size", "refused",
                 "opened", "deadline")

    def __init__(self, topic: str, partition: int, fmt: str, tenant: str | None, now: float, flush_s: float):
        self.topic, self.partition, self.fmt, self.tenant = topic, partition, fmt, tenant
        self.chunks: list[bytes] = []
        self.first = self.last = -1
        self.count = self.size = self.refused = 0
        self.opened = now
        # Files never span two minutes: one file per topic-partition and minute.
        self.deadline = min(now + flush_s, (int(now // 60) + 1) * 60)


class KafkaIngest:
    """One consumer of the group; `run()` until stopped, or drive it with `open`/`step`/`close` (tests).

    Args:
        config: the Kafka configuration.
        bootstrap: `--bootstrap` (wins over the environment and the file).
        warehouse: where health rows go (None: nowhere).
        zone: the landing zone (default: opened from `config.landing`).
        overrides: librdkafka properties set last (tests shorten the group timeouts).
        clock: epoch seconds (file minutes, flush deadlines).
    """

    def __init__(self, config: KafkaConfig, *, bootstrap: str | None = None, warehouse: Warehouse | None = None,
                 zone: LandingZone | None = None, overrides: dict | None = None, clock=time.time):
        self.config = config
        self.settings = {**config.consumer_settings(bootstrap), **(overrides or {})}
        self.warehouse = warehouse
        self.zone = zone or open_landing(config.landing, endpoint_url=config.s3_endpoint_url)
        self.topics = {t.name: t for t in config.topics}
        host = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname())[:64] or "host"
        self.consumer_id = f"{host}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stats = ConsumeStats()
        self._clock = clock
        self._flush_s = config.flush_interval.total_seconds()
        self._max_bytes = config.max_message_bytes
        self._consumer = None
        self._writer: LandingWriter | None = None
        self._buffers: dict[tuple[str, int], _Buffer] = {}
        self._assigned: set[tuple[str, int]] = set()
        self._to_commit: dict[tuple[str, int], int] = {}  # next offset, in a durable file, not committed yet
        self._committed: dict[tuple[str, int], int] = {}
        self._unrecorded: dict[tuple[str, int], _Counts] = {}
        self._stop = threading.Event()
        self._failed = False
        self._started_at = datetime.now(timezone.utc)
        self.broker_up = True
        self.broker_down_since: float | None = None
        self._probe_at = 0.0
        self._probe_pause = 1.0
        self._next_commit_try = 0.0
        self._commit_warned = 0.0
        self._next_health = 0.0
        self._warehouse_paused_until = 0.0
        self._idle_s = 0.0
        self._last_step = None
        self._fresh: set[tuple[str, int]] = set()  # assigned, committed offset not asked yet

    # -- lifecycle --------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the consumer and subscribe (partitions come with the first steps)."""
        from confluent_kafka import Consumer

        self._writer = LandingWriter(self.zone, self.config.spool_dir)
        settings = {**self.settings, "error_cb": self._on_error, "client.id": f"metrics-pipeline-{self.consumer_id}"}
        self._consumer = Consumer(settings)
        self._consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_lost)
        log.info("consumer %s of group %s reading %s from %s into %s", self.consumer_id, self.config.group_id,
                 ", ".join(self.topics), self.settings["bootstrap.servers"], self._writer.url)

    def stop(self) -> None:
        """Ask `run` to finish: flush, commit, leave the group (safe from a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, until_idle: float | None = None) -> ConsumeStats:
        """Consume until `stop()`, or until no message came for `until_idle` seconds of assigned,
        reachable partitions; then close cleanly. Any error closes without committing (what was not
        committed is read again by whoever consumes next) and is raised."""
        self.open()
        try:
            while not self._stop.is_set():
                self.step()
                if until_idle is not None and self._idle_s >= until_idle:
                    log.info("no message for %.1f s with partitions assigned: draining and stopping", self._idle_s)
                    break
            self.close()
        except BaseException:
            self.abandon()
            raise
        return self.stats

    def close(self) -> None:
        """Flush every buffer, commit, record health, leave the group, finish uploads."""
        if self._consumer is None:
            return
        self._flush([b for b in self._buffers.values()], self._clock())
        self._commit(force=True)
        self.record_health(state="stopped", force=True)
        self._consumer.close()  # leaves the group; its revoke callback finds nothing left to flush
        self._consumer = None
        self._writer.close()
        log.info("consumer %s stopped: %d message(s) in %d file(s), %d commit(s)", self.consumer_id,
                 self.stats.messages, self.stats.files, self.stats.commits)

    def abandon(self) -> None:
        """Close without flushing or committing, as a crash would (buffers are lost, nothing is committed)."""
        self._failed = True
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:  # noqa: BLE001 - closing after a failure: the failure is what matters
                log.debug("closing the consumer after a failure failed", exc_info=True)
        if self._writer is not None:
            self._writer.close(timeout=5)

    # -- one step -----------------------------------------------------------------------------------

    def step(self, timeout: float = POLL_SECONDS) -> int:
        """Read what is there (up to `timeout` s), write due files, commit them, record health.
        Returns the number of messages read."""
        messages = self._consumer.consume(BATCH, timeout)
        now = self._clock()
        elapsed = 0.0 if self._last_step is None else max(0.0, time.monotonic() - self._last_step)
        self._last_step = time.monotonic()
        read = self._take(messages, now) if messages else 0
        if read:
            self._broker_answered()
        if self._fresh:
            self._fetch_committed()
        self._flush([b for b in self._buffers.values() if now >= b.deadline or b.size >= self.config.max_file_bytes],
                    now)
        self._commit()
        self.record_health()
        if not self.broker_up:
            self._probe()
        if read or not self._assigned or not self.broker_up:
            self._idle_s = 0.0
        else:
            self._idle_s += elapsed
        return read

    def _take(self, messages, now: float) -> int:
        read = 0
        buffers = self._buffers
        max_bytes = self._max_bytes
        key = buffer = None
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_message_error(error)
                continue
            topic, partition = message.topic(), message.partition()
            if key != (topic, partition):
                key = (topic, partition)
                buffer = buffers.get(key)
                if buffer is None:
                    spec = self.topics[topic]
                    buffer = buffers[key] = _Buffer(topic, partition, spec.format, spec.tenant, now, self._flush_s)
            offset = message.offset()
            value = message.value()
            if buffer.first < 0:
                buffer.first = offset
            buffer.last = offset
            buffer.count += 1
            read += 1
            stamp = message.timestamp()[1]
            if value is None:
                buffer.refused += 1
                buffer.chunks.append(b'{"o":%d,"t":%d,"n":-1}\n' % (offset, stamp))
                continue
            size = len(value)
            if size > max_bytes or not size:
                buffer.refused += 1
                buffer.chunks.append(files.frame(offset, stamp, value, max_bytes))
            else:
                buffer.chunks.append(b'{"o":%d,"t":%d,"n":%d}\n%s\n' % (offset, stamp, size, value))
            buffer.size += size
        return read

    def _flush(self, due: list[_Buffer], now: float) -> None:
        """Write each due buffer as a durable file and queue its offsets for the commit."""
        for buffer in due:
            key = (buffer.topic, buffer.partition)
            if self._buffers.get(key) is buffer:
                del self._buffers[key]
            if buffer.count == 0:
                continue
            data = files.header(buffer.topic, buffer.partition, buffer.fmt, buffer.tenant, buffer.first, buffer.last,
                                buffer.count) + b"".join(buffer.chunks)
            name = files.file_key(buffer.fmt, buffer.topic, buffer.partition, buffer.first, buffer.last, buffer.opened,
                                  buffer.tenant)
            written = self._writer.write(name, data)
            if written is None:
                self.stats.rewritten += 1
                log.info("%s exists already (offsets read again after a restart): not written again", name)
            else:
                self.stats.files += 1
                if written != name:
                    log.warning("%s exists with other messages: offsets %d-%d of %s[%d] were reused (the topic was "
                                "created again?); written as %s. Until the old file is gone, the loads take the new "
                                "messages of the same hours for redeliveries: use a new topic name instead",
                                name, buffer.first, buffer.last, buffer.topic, buffer.partition, written)
            self._to_commit[key] = buffer.last + 1
            counts = self._unrecorded.setdefault(key, _Counts())
            counts.messages += buffer.count
            counts.bytes += buffer.size
            counts.refused += buffer.refused
            counts.files += 1
            self.stats.messages += buffer.count
            self.stats.bytes += buffer.size
            self.stats.refused += buffer.refused

    # -- commits ------------------------------------------------------------------------------------

    def _commit(self, force: bool = False, only: set[tuple[str, int]] | None = None) -> bool:
        """Commit the offsets of durable files (of `only`, default all held). True when nothing is left."""
        from confluent_kafka import KafkaException, TopicPartition

        pending = {k: v for k, v in self._to_commit.items() if only is None or k in only}
        if not pending or self._consumer is None:
            return True
        if not force and time.monotonic() < self._next_commit_try:
            return False
        offsets = [TopicPartition(topic, partition, offset) for (topic, partition), offset in sorted(pending.items())]
        try:
            answered = self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            self._commit_failed(exc.args[0] if exc.args else exc, pending)
            return False
        failed = {(tp.topic, tp.partition) for tp in answered or () if tp.error is not None}
        for key, offset in pending.items():
            if key in failed:
                continue
            self._committed[key] = offset
            if self._to_commit.get(key) == offset:
                del self._to_commit[key]
        self.stats.commits += 1
        self._broker_answered()
        if failed:
            self._commit_failed(f"{len(failed)} partition(s) refused the commit", {k: pending[k] for k in failed})
            return False
        self.record_health(force=True)
        return True

    def _commit_failed(self, error, pending: dict) -> None:
        self.stats.failed_commits += 1
        self._next_commit_try = time.monotonic() + min(30.0, 1.0 * 2 ** min(self.stats.failed_commits, 5))
        name = getattr(error, "name", lambda: "")()
        if name in ("ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "FENCED_INSTANCE_ID"):
            # We no longer own these partitions: their next owner reads them again (deduplicated at load).
            for key in pending:
                if key not in self._assigned:
                    self._to_commit.pop(key, None)
        if time.monotonic() - self._commit_warned >= COMMIT_WARN_EVERY_S:
            self._commit_warned = time.monotonic()
            log.warning("commit of %d partition(s) failed (%s); the files are durable, the commit is retried",
                        len(pending), error)

    def _fetch_committed(self) -> None:
        """The group's committed offsets of newly assigned partitions (their lag is measured from them)."""
        from confluent_kafka import TopicPartition

        fresh = sorted(self._fresh & self._assigned)
        self._fresh.clear()
        if not fresh:
            return
        try:
            answered = self._consumer.committed([TopicPartition(t, p) for t, p in fresh], timeout=5.0)
        except Exception as exc:  # noqa: BLE001 - lag stays unknown until our own first commit
            log.info("committed offsets not read (%s)", exc)
            return
        for tp in answered:
            key = (tp.topic, tp.partition)
            if key not in self._committed and tp.error is None:
                self._committed[key] = max(0, tp.offset)

    # -- rebalances ---------------------------------------------------------------------------------

    def _on_assign(self, consumer, partitions) -> None:
        if self._failed:
            return
        self.stats.rebalances += 1
        self._assigned |= {(p.topic, p.partition) for p in partitions}
        self._fresh |= {(p.topic, p.partition) for p in partitions}
        self._broker_answered()
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, consumer, partitions) -> None:
        """Flush and commit what we read of the partitions we give up, before the next owner starts."""
        if self._failed:
            return
        revoked = {(p.topic, p.partition) for p in partitions}
        self._flush([b for k, b in self._buffers.items() if k in revoked], self._clock())
        if not self._commit(force=True, only=revoked):
            log.warning("could not commit %s before giving them up: their next owner reads their last "
                        "messages again (one copy of each is loaded)", _names(partitions))
        for key in revoked:
            self._to_commit.pop(key, None)
        self._assigned -= revoked
        if partitions:
            log.info("revoked %s", _names(partitions))

    def _on_lost(self, consumer, partitions) -> None:
        """Partitions taken from us without a revoke (session expired): drop what we held, commit nothing."""
        if self._failed:
            return
        lost = {(p.topic, p.partition) for p in partitions}
        for key in lost:
            self._buffers.pop(key, None)
            self._to_commit.pop(key, None)
        self._assigned -= lost
        log.warning("lost %s (our session expired): their next owner reads them from the last commit", _names(partitions))

    # -- brokers ------------------------------------------------------------------------------------

    def _on_error(self, error) -> None:
        if error.name() in _DOWN_CODES or error.code() in (-187, -195):
            if self.broker_up:
                self.broker_up = False
                self.broker_down_since = time.time()
                self.stats.broker_outages += 1
                self._probe_pause = 1.0
                self._probe_at = time.monotonic() + self._probe_pause
                log.warning("Kafka brokers %s unreachable (%s): reconnecting every %.1f s, checking with a "
                            "growing pause; what was read is kept, commits wait", self.settings["bootstrap.servers"],
                            error.str(), self.settings.get("reconnect.backoff.ms", 1000) / 1000)
                self.record_health(force=True)
        elif error.fatal():
            raise RuntimeError(f"fatal Kafka client error: {error.str()}")
        else:
            log.warning("Kafka client error: %s", error.str())

    def _on_message_error(self, error) -> None:
        name = error.name()
        if name == "_PARTITION_EOF":
            return
        if name in _DOWN_CODES:
            self._on_error(error)
            return
        log.warning("Kafka: %s", error.str())

    def _broker_answered(self) -> None:
        if not self.broker_up:
            down = time.time() - (self.broker_down_since or time.time())
            self.broker_up, self.broker_down_since = True, None
            log.warning("Kafka brokers reachable again after %.0f s", down)
            self.record_health(force=True)

    def _probe(self) -> None:
        """While the brokers are down: ask for metadata now and then, with a growing pause."""
        if time.monotonic() < self._probe_at:
            return
        try:
            self._consumer.list_topics(timeout=min(2.0, self._probe_pause))
        except Exception:  # noqa: BLE001 - any failure means: still down
            self._probe_pause = min(30.0, self._probe_pause * 2)
            self._probe_at = time.monotonic() + self._probe_pause
            log.info("Kafka brokers still unreachable after %.0f s; next try in %.0f s",
                     time.time() - (self.broker_down_since or time.time()), self._probe_pause)
            return
        self._broker_answered()

    # -- health -------------------------------------------------------------------------------------

    def record_health(self, state: str = "running", force: bool = False) -> None:
        """Write the health rows (at most every HEALTH_EVERY_S unless `force`; never while the warehouse rests)."""
        if self.warehouse is None or self._consumer is None:
            return
        now = time.monotonic()
        if not force and now < self._next_health:
            return
        if now < self._warehouse_paused_until:
            return
        keys = sorted(set(self._committed) | set(self._unrecorded))
        commits = []
        from confluent_kafka import TopicPartition

        for key in keys:
            if key not in self._committed:
                continue
            high = self._high_watermark(TopicPartition(*key))
            counts = self._unrecorded.get(key) or _Counts()
            commits.append(health.PartitionCommit(key[0], key[1], self.topics[key[0]].format, self._committed[key],
                                                  high, counts.messages, counts.bytes, counts.refused, counts.files))
        down_since = (datetime.fromtimestamp(self.broker_down_since, timezone.utc)
                      if self.broker_down_since is not None else None)
        consumer = health.ConsumerState(self.consumer_id, self._started_at, state, self.broker_up, down_since,
                                        len(self._assigned))
        try:
            health.record(self.warehouse, self.config.group_id, consumer, commits)
        except Exception as exc:  # noqa: BLE001 - the landing zone is the buffer: consuming goes on
            self._warehouse_paused_until = now + WAREHOUSE_PAUSE_S
            log.warning("consumer health not written to the warehouse (%s: %s); retrying in %.0f s",
                        type(exc).__name__, " ".join(str(exc).split())[:200], WAREHOUSE_PAUSE_S)
            return
        for commit in commits:
            self._unrecorded.pop((commit.topic, commit.partition), None)
        self._next_health = now + HEALTH_EVERY_S

    def _high_watermark(self, partition) -> int | None:
        try:
            low, high = self._consumer.get_watermark_offsets(partition, cached=True)
            if high is None or high < 0:
                low, high = self._consumer.get_watermark_offsets(partition, timeout=1.0, cached=False)
        except Exception:  # noqa: BLE001 - unknown: lag is then reported from what we know
            return None
        return high if high is not None and high >= 0 else None


def _names(partitions) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "nothing"
