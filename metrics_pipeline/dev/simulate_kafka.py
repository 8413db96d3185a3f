"""`metrics-pipeline simulate-logs --to kafka`: three microservices publishing job records to a topic.

The same simulated jobs as `simulate_logs.py` (companies, zones, sources, failure mix, broken
records), but published the way event-driven teams do it: the ingestion, standardization and
application services (zones 1-Raw, 2-Standardized, 3-Application) each publish a job's record when
the job ends, one JSON object per message, keyed by the job (company, zone, source, object) so that
one job's records stay in order in one partition, with the service's name in a header and the
record's end time as the message timestamp. Same seed, same messages.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone

from metrics_pipeline.dev.simulate_logs import SOURCES, _break, _job_catalogue, _record
from metrics_pipeline.lib.kafka.config import KafkaConfig
from metrics_pipeline.lib.kafka.producer import ensure_topics, make_producer

SERVICES = {"1-Raw": "ingestion", "2-Standardized": "standardization", "3-Application": "application"}


@dataclasses.dataclass
class PublishStats:
    topic: str
    messages: int = 0
    records: int = 0
    failures: int = 0
    bad_records: int = 0


def job_topic(config: KafkaConfig, topic: str | None = None) -> str:
    """`topic`, else the first job_logs topic of the configuration."""
    if topic:
        return topic
    names = [t.name for t in config.topics if t.format == "job_logs"]
    if not names:
        raise ValueError("config/kafka.yaml has no job_logs topic: pass --topic")
    return names[0]


def job_key(job: dict) -> bytes:
    return f"{job['company']}|{job['zone']}|{job['source']}|{job['object_id']}".encode()


def publish(config: KafkaConfig, start: datetime, end: datetime, *, bootstrap: str | None = None,
            topic: str | None = None, jobs_per_hour: int = 120, seed: int = 7, bad_rate: float = 0.005,
            failure_rate: float = 0.03, outage_rate: float = 0.04, partitions: int = 3) -> PublishStats:
    """Publish the records of the jobs that ended in [start, end) and wait for every acknowledgement."""
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ValueError("simulate-logs needs a timezone-aware start before end")
    stats = PublishStats(job_topic(config, topic))
    ensure_topics(config, [stats.topic], bootstrap=bootstrap, partitions=partitions)
    rng = random.Random(seed)
    jobs = _job_catalogue(rng, jobs_per_hour)
    published = []
    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    while hour < end:
        down = {s for s in SOURCES if rng.random() < outage_rate}
        for job in jobs:
            started = hour + timedelta(seconds=rng.uniform(0, 3600))
            failed = rng.random() < (0.7 if job["source"] in down else failure_rate)
            record = _record(rng, job, started, failed, naive_times=rng.random() < 0.5)
            ended = started + timedelta(seconds=float(record["Duree secondes"]))
            if not start <= ended < end:
                continue
            stats.records += 1
            stats.failures += failed
            if rng.random() < bad_rate:
                record = _break(rng, record)
                stats.bad_records += 1
            published.append((ended, job, record))
        hour += timedelta(hours=1)
    producer = make_producer(config, bootstrap)
    for ended, job, record in sorted(published, key=lambda p: p[0]):
        value = record.encode() if isinstance(record, str) else json.dumps(record, ensure_ascii=False).encode()
        while True:
            try:
                producer.produce(stats.topic, value=value, key=job_key(job), timestamp=int(ended.timestamp() * 1000),
                                 headers={"service": SERVICES[job["zone"]]})
                break
            except BufferError:
                producer.poll(0.1)
        stats.messages += 1
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} of {stats.messages} message(s) were not acknowledged by the brokers")
    return stats
