"""The consumer's health record: written at each commit, read by /metrics, the lag check and the loads' metadata."""

from datetime import datetime, timedelta, timezone

import dagster as dg
from prometheus_client import CollectorRegistry, generate_latest

from metrics_pipeline.api.metrics import PipelineHealthCollector
from metrics_pipeline.defs.kafka.checks import evaluate
from metrics_pipeline.lib.kafka import health
from metrics_pipeline.lib.warehouse import health as pipeline_health
from metrics_pipeline.lib.warehouse.db import Warehouse

NOW = datetime.now(timezone.utc).replace(second=0, microsecond=0)


def consumer(broker_up=True, state="running"):
    return health.ConsumerState("host-1-abc", NOW - timedelta(hours=1), state, broker_up,
                                None if broker_up else NOW - timedelta(minutes=2), 2)


def commit(partition, committed, high, messages=0):
    return health.PartitionCommit("job-logs", partition, "job_logs", committed, high, messages, messages * 100, 0, 1)


def test_lag_is_the_end_minus_the_committed_offset_and_counters_add_up_over_commits(warehouse_dsn):
    warehouse = Warehouse(warehouse_dsn, "metrics")
    health.record(warehouse, "g", consumer(), [commit(0, 100, 150, 100), commit(1, 40, 40, 40)], now=NOW)
    health.record(warehouse, "g", consumer(), [commit(0, 180, 150, 80)], now=NOW + timedelta(minutes=1))
    state = health.read(warehouse, now=NOW + timedelta(minutes=1))
    rows = {p.partition: (p.committed_offset, p.lag, p.messages, p.files) for p in state.partitions}
    assert rows == {0: (180, 0, 180, 2), 1: (40, 0, 40, 1)}  # a trailing end (Tansu) never makes a negative lag
    assert [len(p.samples) for p in state.partitions] == [2, 1]
    assert health.lag_metadata(warehouse, "job_logs")["kafka_lag_messages"] == 0
    assert health.lag_metadata(warehouse, "measures") == {}


def test_a_lag_that_keeps_growing_warns_and_one_that_comes_and_goes_does_not(warehouse_dsn):
    warehouse = Warehouse(warehouse_dsn, "metrics")
    for minute, (behind, wavy) in enumerate([(10, 500), (200, 0), (400, 800), (900, 10), (1500, 300), (2600, 0)]):
        at = NOW - timedelta(minutes=10 - 2 * minute)
        health.record(warehouse, "g", consumer(), [commit(0, 1000, 1000 + behind), commit(1, 1000, 1000 + wavy)], now=at)
    state = health.read(warehouse, now=NOW)
    assert [p.growing for p in state.partitions] == [True, False]
    result = evaluate(state, "job_logs", NOW)
    assert not result.passed and result.severity == dg.AssetCheckSeverity.WARN
    assert result.metadata["growing_partitions"].value == 1 and result.metadata["kafka_lag_messages"].value == 2600
    assert evaluate(health.read(warehouse, now=NOW, formats=("measures",)), "measures", NOW).passed


def test_messages_waiting_without_a_commit_for_ten_minutes_warn(warehouse_dsn):
    warehouse = Warehouse(warehouse_dsn, "metrics")
    health.record(warehouse, "g", consumer(broker_up=False), [commit(0, 10, 50)], now=NOW - timedelta(minutes=12))
    result = evaluate(health.read(warehouse, now=NOW), "job_logs", NOW)
    assert not result.passed and result.metadata["stale_partitions"].value == 1


def test_metrics_expose_lag_and_counters_per_topic_and_partition(warehouse_dsn):
    warehouse = Warehouse(warehouse_dsn, "metrics")
    health.record(warehouse, "g", consumer(broker_up=False), [commit(0, 100, 130, 100), commit(1, 7, 7, 7)], now=NOW)
    registry = CollectorRegistry()
    registry.register(PipelineHealthCollector(lambda: pipeline_health.read(warehouse), ttl_s=0))
    text = generate_latest(registry).decode()
    assert 'metrics_pipeline_kafka_consumer_lag_messages{partition="0",topic="job-logs"} 30.0' in text
    assert 'metrics_pipeline_kafka_consumer_lag_messages{partition="1",topic="job-logs"} 0.0' in text
    assert 'metrics_pipeline_kafka_consumer_messages_total{partition="0",topic="job-logs"} 100.0' in text
    assert 'metrics_pipeline_kafka_consumer_committed_offset{partition="1",topic="job-logs"} 7.0' in text
    assert 'metrics_pipeline_kafka_consumers_broker_unreachable{group="g"} 1.0' in text
    assert "host-1-abc" not in text  # no per-process series
