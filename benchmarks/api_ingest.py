"""Push API ingest: accepted measures/s and request latency, against the floor (issue 18).

    python benchmarks/api_ingest.py [--seconds 20] [--clients 4] [--batch 1000] [--workers N] [--no-write]

Starts `metrics-pipeline api` as operators run it (its own processes, uvicorn, `--workers` worker
processes, one per core by default, the production settings of config/api.yaml except the landing
zone, a scratch directory) against a
scratch warehouse holding one tenant and key, then `--clients` threads send batches of `--batch`
measures as fast as the API acknowledges them (keep-alive connections; bodies encoded once
beforehand, so the clients' cost is sending, not building JSON). Reported: measures accepted per
second, p50/p99 latency of a batch, and every status other than 202.

Reference in the same run, the floor: the same bodies decoded, validated and written to a landing
zone by the functions the API uses (`json.loads`, `validate_measures`, `PushWriter.write`), in this
process, one thread, no HTTP.

Targets (issue 18): >= 100,000 measures/s accepted on 2 cores, p99 < 100 ms per batch. The lag from
202 to `v_points` is not measured yet: loading pushed items is the next increment.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests
import yaml
from common import ROOT, append_result, replace_section, scratch_database

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import validate_measures
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse

BENCH_DB = "metrics_bench_api"
SHOPS = [f"shop-{i:02d}" for i in range(20)]
METRICS = ["orders_processed", "queue_depth", "payment_latency_ms", "cart_size", "stock_level"]


def bodies(batch: int, count: int = 40) -> list[bytes]:
    """`count` distinct batches of `batch` measures, as applications send them: a few metrics, a few
    metadata keys, timestamps from the last minute as epoch seconds."""
    rng = random.Random(7)
    now = time.time()
    out = []
    for _ in range(count):
        items = [{"name": rng.choice(METRICS), "value": round(rng.uniform(0, 1000), 3), "ts": round(now - rng.uniform(0, 60), 6),
                  "metadata": {"shop": rng.choice(SHOPS), "region": rng.choice(["eu", "us"]), "env": "prod"}}
                 for _ in range(batch)]
        out.append(json.dumps(items).encode())
    return out


def start_api(dsn: str, landing: Path, work: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    config = work / "api.yaml"
    config.write_text(yaml.safe_dump({"landing": str(landing)}))
    env = {**os.environ, "METRICS_PIPELINE_DSN": dsn, "METRICS_PIPELINE_API_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "metrics_pipeline.cli", "api", "--port", str(port),
                             "--workers", str(workers)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return proc, url
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the API did not become ready")
        time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drive(url: str, token: str, payloads: list[bytes], clients: int, seconds: float, batch: int) -> dict:
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    start = threading.Event()
    deadline = [0.0]

    def client(n: int) -> None:
        session = requests.Session()
        headers = {"X-PMETRICS-API-KEY": token, "Content-Type": "application/json"}
        i = n
        start.wait()
        while time.monotonic() < deadline[0]:
            body = payloads[i % len(payloads)]
            t0 = time.perf_counter()
            response = session.post(f"{url}/api/v1/measure", data=body, headers=headers, timeout=30)
            elapsed = time.perf_counter() - t0
            if response.status_code == 202:
                latencies[n].append(elapsed)
            with lock:
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            i += clients

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    t0 = time.monotonic()
    deadline[0] = t0 + seconds
    start.set()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - t0
    ok = [x for per in latencies for x in per]
    return {"accepted_per_s": len(ok) * batch / wall, "batches": len(ok), "wall_s": wall,
            "p50_ms": float(np.percentile(ok, 50)) * 1000, "p99_ms": float(np.percentile(ok, 99)) * 1000,
            "other_statuses": {k: v for k, v in statuses.items() if k != 202}}


def floor(payloads: list[bytes], landing: Path, seconds: float, batch: int) -> float:
    """Measures/s through decode + validate + durable write, in process, one thread."""
    config = ApiConfig(landing=str(landing))
    n = 0
    with PushWriter(config) as writer:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            items = validate_measures(json.loads(payloads[n % len(payloads)]), datetime.now(timezone.utc), config)
            writer.write("bench", "measures", items)
            n += 1
        return n * batch / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="API worker processes (default: one per core)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    payloads = bodies(args.batch)
    work = Path(tempfile.mkdtemp(prefix="api-bench-", dir=ROOT / ".metrics_pipeline" if (ROOT / ".metrics_pipeline").exists() else None))
    try:
        with scratch_database(BENCH_DB) as dsn:
            warehouse = Warehouse(dsn)
            migrate.migrate(warehouse)
            api_keys.create_tenant(warehouse, "bench")
            token = api_keys.create_key(warehouse, "bench").token
            proc, url = start_api(dsn, work / "landing", work, args.workers)
            try:
                drive(url, token, payloads, args.clients, 2, args.batch)  # warm-up
                ours = drive(url, token, payloads, args.clients, args.seconds, args.batch)
            finally:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
        reference = floor(payloads, work / "floor", min(args.seconds, 10), args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    line = (f"{ours['accepted_per_s']:,.0f} measures/s accepted ({ours['batches']:,} batches of {args.batch:,} in "
            f"{ours['wall_s']:.0f} s, {args.clients} clients, {args.workers} API workers), batch latency p50 {ours['p50_ms']:.1f} ms, "
            f"p99 {ours['p99_ms']:.1f} ms; refused: {ours['other_statuses'] or 'none'}")
    print(line)
    print(f"floor (decode + validate + durable write, in process, one thread): {reference:,.0f} measures/s")
    if not args.no_write:
        replace_section("api_ingest", f"Last run ({datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} cores): {line}. "
                        f"Floor in the same run: {reference:,.0f} measures/s "
                        f"({ours['accepted_per_s'] / reference:.2f} x of it through HTTP).")
        append_result("api ingest", f"batches of {args.batch:,} measures (3 metadata keys), {args.clients} clients",
                      f"{ours['accepted_per_s']:,.0f}/s, p99 {ours['p99_ms']:.1f} ms",
                      f"floor {reference:,.0f}/s; targets >= 100,000/s, p99 < 100 ms",
                      f"{ours['accepted_per_s'] / reference:.2f} x floor")


if __name__ == "__main__":
    main()
