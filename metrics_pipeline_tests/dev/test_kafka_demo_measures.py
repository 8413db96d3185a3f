"""`make dev`'s measures topic: the demo tenant's shop measures published to Kafka reach `v_points`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg

from metrics_pipeline.dev import kafka_demo
from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.kafka import config as kafka_config
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka


def test_the_demo_publishes_the_demo_tenants_measures_that_custom_points_loads(tmp_path, warehouse_dsn):
    broker = kafka.TansuBroker(tmp_path / "tansu.log").start()
    try:
        topic = kafka_demo.MEASURES_TOPIC.format(started=datetime.now(timezone.utc))
        path = kafka_demo.write_config(tmp_path / "kafka-dev.yaml", broker.bootstrap, str(tmp_path / "landing"), topic)
        config = kafka_config.load_config(path)
        kafka.create_topic(broker.bootstrap, topic, partitions=1)
        now = datetime.now(timezone.utc)
        kafka_demo.JobPublisher(path, measures_topic=topic).publish_measures(config, now)
        KafkaIngest(config.model_copy(update={"topics": [config.topic(topic)], "flush_interval": timedelta(seconds=0.2),
                                              **kafka.FAST_GROUP})).run(until_idle=1.0)
    finally:
        broker.stop()
    hour = now.replace(minute=0, second=0, microsecond=0)
    result = custom_load.load_measures(Warehouse(warehouse_dsn, "metrics"), LocalLanding(tmp_path / "landing"),
                                       hour, hour + timedelta(hours=1))
    assert (result.loaded, result.quarantined) == (6, 0)
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT DISTINCT tenant FROM metrics.v_points WHERE source = 'custom'").fetchall() == [("demo",)]
