"""`make dev`'s push API demo: the demo tenant's key survives restarts, and the demo app's measures
and deploy events land under the demo tenant through the real API and client."""

from __future__ import annotations

import stat
from datetime import datetime, timezone

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.idempotency import IdempotencyStore
from metrics_pipeline.dev import demo_host
from metrics_pipeline.dev.demo_app import DemoApp, demo_key
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter, read_items
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.api import serving, wait_until


def test_the_demo_key_is_kept_private_reused_and_replaced_once_revoked(warehouse_dsn, tmp_path):
    warehouse = Warehouse(warehouse_dsn)
    path = tmp_path / "state" / "api_key"
    token = demo_key(warehouse, demo_host.DEMO_TENANT, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == token
    assert demo_key(warehouse, demo_host.DEMO_TENANT, path) == token
    api_keys.revoke_key(warehouse, token.split("_")[1])
    assert demo_key(warehouse, demo_host.DEMO_TENANT, path) not in (token, "")
    assert [t.name for t in api_keys.list_tenants(warehouse)] == [demo_host.DEMO_TENANT]


def test_the_demo_app_pushes_measures_and_a_deploy_under_the_demo_tenant(warehouse_dsn, tmp_path):
    warehouse = Warehouse(warehouse_dsn)
    token = demo_key(warehouse, demo_host.DEMO_TENANT, tmp_path / "api_key")
    config = ApiConfig(landing=str(tmp_path / "landing"))
    with api_keys.KeyRing(warehouse).start() as ring, PushWriter(config) as writer:
        app = create_app(config=config, keys=ring, writer=writer, clock=lambda: datetime.now(timezone.utc),
                         remembered=IdempotencyStore(tmp_path / "idempotency"))
        with serving(app) as url:
            demo = DemoApp(url, token, every=0.2)
            demo.start()

            def landed(kind):
                return [item for path in (tmp_path / "landing").rglob(f"custom/{kind}/**/*.jsonl")
                        for item in read_items(path.read_bytes())[0]]

            try:
                wait_until(lambda: len(landed("measures")) >= 8 and landed("events"), timeout=30)
            finally:
                demo.stopped.set()
                demo.join(15)
    measures, events = landed("measures"), landed("events")
    assert {m["tenant"] for m in measures} == {demo_host.DEMO_TENANT}
    assert {m["name"] for m in measures} == {"orders_processed", "queue_depth"}
    assert events[0]["name"] == "deploy" and events[0]["text"].startswith("orders v1.")
