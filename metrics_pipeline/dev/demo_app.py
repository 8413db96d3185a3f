"""`make dev`'s pushing application: the demo tenant's key, and an app that posts measures and a
deploy event now and then through the push API, so they show in the views and Grafana."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

SHOPS = ("eu-west", "us-east", "ap-south")


def demo_key(warehouse: Warehouse, tenant: str, path: Path) -> str:
    """The demo tenant's read+write key, kept in `path` (mode 0600) across `make dev` runs; a new one
    when the file is missing or its key was revoked. Development only: production keys are never stored."""
    api_keys.create_tenant(warehouse, tenant)
    if path.exists():
        token = path.read_text().strip()
        with api_keys.KeyRing(warehouse) as ring:
            ring.refresh()
            if ring.verify(token) is not None:
                return token
    token = api_keys.create_key(warehouse, tenant, ("write", "read"), note="make dev demo").token
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token)
    return token


class DemoApp(threading.Thread):
    """Through the Python client: the orders of three shops and a queue depth every `every` seconds,
    and a deploy event every ~10 minutes."""

    def __init__(self, url: str, token: str, every: float = 10.0):
        super().__init__(name="demo-app", daemon=True)
        self.url, self.token, self.every = url, token, every
        self.stopped = threading.Event()

    def run(self) -> None:
        from metrics_pipeline.client import Client

        rng = random.Random()
        version, last_deploy = 1, 0.0
        with Client(self.url, self.token, flush_interval=2.0) as client:
            while not self.stopped.wait(self.every):
                for shop in SHOPS:
                    client.measure("orders_processed", rng.randint(5, 60), unit="count", shop=shop, service="orders")
                client.measure("queue_depth", rng.randint(0, 200), unit="count", service="orders")
                if time.monotonic() - last_deploy > 600:
                    version += 1
                    client.event("deploy", text=f"orders v1.{version}", service="orders")
                    last_deploy = time.monotonic()
