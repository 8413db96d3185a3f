"""The consumer's lag and counters in the warehouse (migration 0022), written at each commit.

The consumer calls `record` after every offset commit with what it just committed: per partition
the committed offset, the partition's end as last seen (its lag is the difference), and what it
wrote since its last record (messages, bytes, refused messages, files), added to counters that only
grow; and its own row (brokers reachable, partitions held). A lag sample is kept at most once a
minute per partition, for a day. `/metrics` (`lib/warehouse/health.py`), the lag check and the
loads' metadata read the rows back with `read`.

A lag that "keeps growing" (`growing`): over the last `window` (15 minutes) there are samples
spanning at least 5 minutes, the lag never fell from one sample to the next and the last is higher
than the first by at least `min_growth` messages. A consumer keeping up has a lag that comes and
goes; one that falls behind, or stopped committing while messages arrive, does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.warehouse.db import Warehouse

SAMPLES_KEPT = timedelta(days=1)
GROWTH_WINDOW = timedelta(minutes=15)
GROWTH_SPAN = timedelta(minutes=5)
MIN_GROWTH = 100


@dataclasses.dataclass(frozen=True)
class PartitionCommit:
    """What a consumer committed for one partition, and what it wrote since its last record."""

    topic: str
    partition: int
    format: str
    committed_offset: int
    high_watermark: int | None
    messages: int = 0
    bytes: int = 0
    refused: int = 0
    files: int = 0

    @property
    def lag(self) -> int:
        if self.high_watermark is None or self.high_watermark < 0:
            return 0
        return max(0, self.high_watermark - self.committed_offset)


@dataclasses.dataclass(frozen=True)
class ConsumerState:
    consumer_id: str
    started_at: datetime
    state: str  # running | stopped
    broker_up: bool
    broker_down_since: datetime | None
    assigned: int


def record(warehouse: Warehouse, group_id: str, consumer: ConsumerState, commits: Iterable[PartitionCommit],
           *, now: datetime | None = None, connect_timeout: int = 2) -> None:
    """Write one commit's health rows in one short transaction."""
    now = now or datetime.now(timezone.utc)
    minute = now.replace(second=0, microsecond=0)
    commits = list(commits)
    schema = warehouse.schema
    with warehouse.connect(connect_timeout=connect_timeout) as conn, conn.transaction():
        conn.execute("SET LOCAL statement_timeout = 5000")
        with conn.cursor() as cur:
            if commits:
                cur.executemany(
                    f"""INSERT INTO {schema}.kafka_partitions AS p (group_id, topic, "partition", format,
                            committed_offset, high_watermark, lag, messages, bytes, refused, files, consumer_id, committed_at)
                        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                        ON CONFLICT (group_id, topic, "partition") DO UPDATE SET
                            format = EXCLUDED.format, committed_offset = EXCLUDED.committed_offset,
                            high_watermark = EXCLUDED.high_watermark, lag = EXCLUDED.lag,
                            messages = p.messages + EXCLUDED.messages, bytes = p.bytes + EXCLUDED.bytes,
                            refused = p.refused + EXCLUDED.refused, files = p.files + EXCLUDED.files,
                            consumer_id = EXCLUDED.consumer_id, committed_at = EXCLUDED.committed_at""",
                    [(group_id, c.topic, c.partition, c.format, c.committed_offset, c.high_watermark, c.lag,
                      c.messages, c.bytes, c.refused, c.files, consumer.consumer_id, now) for c in commits],
                )
                cur.executemany(
                    f"""INSERT INTO {schema}.kafka_lag_samples (group_id, topic, "partition", minute, lag)
                        VALUES (%s, %s, %s, %s, %s)
                        ON CONFLICT (group_id, topic, "partition", minute) DO UPDATE SET lag = EXCLUDED.lag""",
                    [(group_id, c.topic, c.partition, minute, c.lag) for c in commits],
                )
            cur.execute(
                f"""INSERT INTO {schema}.kafka_consumers AS c (group_id, consumer_id, started_at, updated_at, state,
                        broker_up, broker_down_since, assigned)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (group_id, consumer_id) DO UPDATE SET updated_at = EXCLUDED.updated_at,
                        state = EXCLUDED.state, broker_up = EXCLUDED.broker_up,
                        broker_down_since = EXCLUDED.broker_down_since, assigned = EXCLUDED.assigned""",
                (group_id, consumer.consumer_id, consumer.started_at, now, consumer.state, consumer.broker_up,
                 consumer.broker_down_since, consumer.assigned),
            )
            if now.minute % 10 == 0:  # a cheap, indexed trim, a few times an hour
                cur.execute(f"DELETE FROM {schema}.kafka_lag_samples WHERE minute < %s", (now - SAMPLES_KEPT,))
                cur.execute(f"DELETE FROM {schema}.kafka_consumers WHERE state = 'stopped' AND updated_at < %s",
                            (now - SAMPLES_KEPT,))


@dataclasses.dataclass(frozen=True)
class PartitionHealth:
    group_id: str
    topic: str
    partition: int
    format: str
    committed_offset: int
    high_watermark: int | None
    lag: int
    messages: int
    bytes: int
    refused: int
    files: int
    committed_at: datetime
    samples: tuple[tuple[datetime, int], ...]  # (minute, lag) within the growth window, oldest first

    @property
    def growing(self) -> bool:
        return growing(self.samples)


def growing(samples: tuple[tuple[datetime, int], ...], min_growth: int = MIN_GROWTH) -> bool:
    """Whether the lag samples (oldest first) keep growing (see the module doc)."""
    if len(samples) < 3 or samples[-1][0] - samples[0][0] < GROWTH_SPAN:
        return False
    lags = [lag for _, lag in samples]
    return all(b >= a for a, b in zip(lags, lags[1:])) and lags[-1] - lags[0] >= min_growth


@dataclasses.dataclass(frozen=True)
class KafkaHealth:
    partitions: list[PartitionHealth]
    consumers: list[ConsumerState]
    group_ids: dict[str, str]  # consumer_id -> group

    def of_format(self, fmt: str) -> list[PartitionHealth]:
        return [p for p in self.partitions if p.format == fmt]


def read(warehouse: Warehouse, *, now: datetime | None = None, formats: tuple[str, ...] | None = None) -> KafkaHealth:
    """Every partition's row (of `formats`, default all) with its recent lag samples, and the running consumers."""
    now = now or datetime.now(timezone.utc)
    schema = warehouse.schema
    with warehouse.connect() as conn:
        rows = conn.execute(
            f"""SELECT group_id, topic, "partition", format, committed_offset, high_watermark, lag, messages, bytes,
                       refused, files, committed_at
                FROM {schema}.kafka_partitions WHERE %(formats)s::text[] IS NULL OR format = ANY(%(formats)s)
                ORDER BY group_id, topic, "partition" """,
            {"formats": list(formats) if formats else None},
        ).fetchall()
        samples: dict[tuple, list] = {}
        for group, topic, partition, minute, lag in conn.execute(
            f"""SELECT group_id, topic, "partition", minute, lag FROM {schema}.kafka_lag_samples
                WHERE minute >= %s ORDER BY minute""", (now - GROWTH_WINDOW,),
        ):
            samples.setdefault((group, topic, partition), []).append((minute, lag))
        consumers = conn.execute(
            f"""SELECT group_id, consumer_id, started_at, state, broker_up, broker_down_since, assigned
                FROM {schema}.kafka_consumers WHERE state = 'running' ORDER BY group_id, consumer_id"""
        ).fetchall()
    return KafkaHealth(
        [PartitionHealth(*row, samples=tuple(samples.get(tuple(row[:3]), ()))) for row in rows],
        [ConsumerState(c[1], c[2], c[3], c[4], c[5], c[6]) for c in consumers],
        {c[1]: c[0] for c in consumers},
    )


def lag_metadata(warehouse: Warehouse, fmt: str) -> dict:
    """Metadata for a load of `fmt` (`kafka_lag_messages` and friends); empty when no consumer of it ever committed."""
    partitions = read(warehouse, formats=(fmt,)).partitions
    if not partitions:
        return {}
    newest = max(p.committed_at for p in partitions)
    return {
        "kafka_lag_messages": sum(p.lag for p in partitions),
        "kafka_max_partition_lag": max(p.lag for p in partitions),
        "kafka_partitions": len(partitions),
        "kafka_lag_growing_partitions": sum(p.growing for p in partitions),
        "kafka_last_commit": newest.isoformat(),
    }
