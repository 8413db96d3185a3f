"""`metrics-pipeline api --buffer kafka`: a 202 only for what the brokers hold (SPEC §2.6, §12).

The push API runs on uvicorn with a `KafkaBuffer` in front of a real Tansu broker that keeps its
data in (moto's) S3, so it can be stopped and started: while it is down every push is a 503 with
`Retry-After`; once it is back pushes are 202 again; and every item of every 202 ends up in
`v_points` exactly once after the consumer and the loader ran.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone

import boto3
import psycopg
import requests

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.idempotency import IdempotencyStore
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.kafka.buffer import KafkaBuffer, encode_items
from metrics_pipeline.lib.kafka.config import Topic
from metrics_pipeline.lib.kafka.consumer import KafkaIngest
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import kafka
from metrics_pipeline_tests.support.api import serving

NOW = datetime.now(timezone.utc)
HOUR = NOW.replace(minute=0, second=0, microsecond=0)


def batch(first: int, size: int = 50) -> list[dict]:
    return [{"name": "orders", "value": float(first + i), "metadata": {"shop": "eu"},
             "ts": (HOUR + timedelta(microseconds=first + i)).isoformat()} for i in range(size)]


def test_encoded_batches_stay_under_the_message_limit_and_keep_every_item():
    from metrics_pipeline.lib.custom.validate import validate_measures

    items = validate_measures(batch(0, 2000), NOW, ApiConfig())
    messages = encode_items("acme", "measures", items, 20_000)
    assert len(messages) > 5 and all(len(m) <= 20_000 for m in messages)
    decoded = [row for m in messages for row in json.loads(m)]
    assert [r["value"] for r in decoded] == [float(i) for i in range(2000)]
    assert {r["tenant"] for r in decoded} == {"acme"} and decoded[0]["ts"].endswith("Z")


def test_the_kafka_buffer_answers_202_only_for_what_the_brokers_hold(tmp_path, warehouse_dsn, moto_endpoint):
    bucket = f"tansu-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    broker = kafka.TansuBroker(tmp_path / "tansu.log", storage=f"s3://{bucket}/",
                               env={"AWS_ENDPOINT": moto_endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1"})
    broker.start()
    warehouse = Warehouse(warehouse_dsn)
    api_keys.create_tenant(warehouse, "acme")
    token = api_keys.create_key(warehouse, "acme", ["write"]).token
    zone = LocalLanding(tmp_path / "landing")
    config = kafka.config(zone.root, Topic(name="acme-measures", format="measures", tenant="acme"),
                          bootstrap=broker.bootstrap)
    ring = api_keys.KeyRing(warehouse, refresh_s=0.5).start()
    buffer = None
    accepted: list[float] = []
    posted: list[float] = []
    try:
        kafka.create_topic(broker.bootstrap, "acme-measures", partitions=2)
        buffer = KafkaBuffer(config, ack_timeout=3.0)
        api_config = ApiConfig(landing=str(zone.root))
        app = create_app(config=api_config, keys=ring, writer=buffer, reader=warehouse,
                         remembered=IdempotencyStore(tmp_path / "idempotency", api_config.idempotency_ttl))
        with serving(app) as url:
            def post(first: int) -> requests.Response:
                body = batch(first)
                posted.extend(item["value"] for item in body)
                answer = requests.post(f"{url}/api/v1/measure", data=json.dumps(body), timeout=30,
                                       headers={"X-PMETRICS-API-KEY": token})
                if answer.status_code == 202:
                    accepted.extend(item["value"] for item in body)
                return answer

            assert [post(1000 * i).status_code for i in range(10)] == [202] * 10
            assert requests.get(f"{url}/readyz", timeout=10).status_code == 200

            broker.stop(kill=True)
            down = [post(100_000 + 1000 * i) for i in range(6)]
            assert [a.status_code for a in down] == [503] * 6
            assert all(a.headers.get("Retry-After") for a in down)
            assert requests.get(f"{url}/readyz", timeout=10).status_code == 503

            broker.start()
            deadline, back = time.monotonic() + 30, None
            while time.monotonic() < deadline:  # the producer finds the brokers again within seconds
                back = post(200_000 + len(posted))
                if back.status_code == 202:
                    break
                assert back.status_code == 503
                time.sleep(0.5)
            assert back is not None and back.status_code == 202
            assert [post(300_000 + 1000 * i).status_code for i in range(5)] == [202] * 5
    finally:
        if buffer is not None:
            buffer.close()
        ring.stop()
    try:
        KafkaIngest(config).run(until_idle=1.5)
    finally:
        broker.stop()
    for hour in (HOUR, HOUR + timedelta(hours=1)):
        custom_load.load_measures(Warehouse(warehouse_dsn, "metrics"), zone, hour, hour + timedelta(hours=1))
    with psycopg.connect(warehouse_dsn) as conn:
        stored = Counter(v for (v,) in conn.execute(
            "SELECT value FROM metrics.v_points WHERE source = 'custom' AND tenant = 'acme'"))
    assert set(accepted) <= set(stored)  # every 202'd item is there...
    assert set(stored) <= set(posted) and max(stored.values()) == 1  # ...once, and nothing else
    assert len(accepted) == 16 * 50
