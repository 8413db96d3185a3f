"""`metrics-pipeline api` as operators run it: a process of its own, killed with SIGKILL while clients
send. Every batch it acknowledged (202) is complete in the landing zone; nothing else is half there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
import yaml

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.landing import read_items
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.api import free_port, wait_until


def start_api(warehouse_dsn: str, landing: Path, tmp_path: Path, workers: int = 1) -> tuple[subprocess.Popen, str]:
    config = tmp_path / "api.yaml"
    config.write_text(yaml.safe_dump({"landing": str(landing)}))
    port = free_port()
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn, "METRICS_PIPELINE_API_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "metrics_pipeline.cli", "api", "--port", str(port),
                             "--workers", str(workers)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready():
        assert proc.poll() is None, proc.stdout.read().decode()
        try:
            return requests.get(f"{url}/readyz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_until(ready, timeout=60)
    return proc, url


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_while_clients_send_loses_no_acknowledged_batch(warehouse_dsn, tmp_path, workers):
    warehouse = Warehouse(warehouse_dsn)
    api_keys.create_tenant(warehouse, "acme")
    token = api_keys.create_key(warehouse, "acme").token
    landing = tmp_path / "landing"
    proc, url = start_api(warehouse_dsn, landing, tmp_path, workers)
    acknowledged: list[str] = []
    stop = threading.Event()

    def client(n: int) -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            batch_id = f"c{n}-{i}"
            body = [{"name": "orders", "value": j, "metadata": {"batch": batch_id}} for j in range(200)]
            try:
                response = session.post(f"{url}/api/v1/measure", json=body, timeout=5,
                                        headers={"X-PMETRICS-API-KEY": token})
            except requests.RequestException:
                return  # the server is gone
            if response.status_code == 202:
                acknowledged.append(batch_id)
            i += 1

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    try:
        for thread in clients:
            thread.start()
        wait_until(lambda: len(acknowledged) >= 40, timeout=60)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        stop.set()
        for thread in clients:
            thread.join(10)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    items, torn = [], 0
    for path in sorted(landing.rglob("*.jsonl")):
        got, was_torn = read_items(path.read_bytes())
        items += got
        torn += was_torn
    per_batch: dict[str, int] = {}
    for item in items:
        per_batch[item["metadata"]["batch"]] = per_batch.get(item["metadata"]["batch"], 0) + 1
    assert all(per_batch.get(b) == 200 for b in acknowledged), "an acknowledged batch is missing or incomplete"
    assert all(count == 200 for count in per_batch.values()), "a batch is half there"
    assert {item["tenant"] for item in items} == {"acme"}
