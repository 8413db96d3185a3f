"""Push API ingest: accepted measures/s and latency against the floor; lag from 202 to v_points.

Issue 18. The lag runs on the production topology.

    python benchmarks/api_ingest.py [--seconds 20] [--clients 4] [--batch 1000] [--workers N]
                                    [--lag-minutes 3] [--lag-every 2] [--lag-batch 100] [--no-write] [--verbose]

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

The lag (`--lag-minutes`, 0 skips it; `--seconds 0` skips the throughput part): the production
topology (gRPC code server, webserver and daemon on PostgreSQL storage, the repository's dagster.yaml)
with only `custom_sensor` started, and `metrics-pipeline api` on the same scratch warehouse and a
fresh landing zone. One batch of `--lag-batch` measures every `--lag-every` seconds, each batch
labelled with a unique `lag_batch` value; a poller reads `v_points` every 0.5 s (as the superuser)
for the batches not seen yet. Lag = first poll that sees all of a batch's rows - its 202. The sensor
ticks and the runs (GraphQL) split the median lag into: waiting for the tick, queue and launch of the
run, the run's start-up, the load step, and the rest (run teardown, polling).

Targets (issue 18): >= 100,000 measures/s accepted on 2 cores, p99 < 100 ms per batch; lag p95 <= 90 s.
The whole default run takes about 7 minutes.
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
import psycopg
import requests
import yaml
from common import ROOT, append_result, replace_section, scratch_database
from psycopg.conninfo import make_conninfo

from metrics_pipeline.dev.devserver import sqlalchemy_url
from metrics_pipeline.dev.topology import Topology
from metrics_pipeline.lib import api_keys, settings
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


def start_api(dsn: str, landing: Path, work: Path, workers: int, settings: dict | None = None
              ) -> tuple[subprocess.Popen, str]:
    """`metrics-pipeline api` in its own processes, config/api.yaml's defaults but the landing zone
    (and `settings`); returns the process and its URL once /readyz answers."""
    port = _free_port()
    config = work / "api.yaml"
    config.write_text(yaml.safe_dump({"landing": str(landing), **(settings or {})}))
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


# -- the lag from 202 to v_points ---------------------------------------------------------------

LAG_SENSOR = "custom_sensor"
LAG_DRAIN_S = 180  # after the last push, how long batches still count as seen
_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1000) {
      timestamp endTimestamp status runIds runKeys skipReason error { message } logEvents { events { message } }
    } } }
  }
}
"""
_RUNS = """
query($filter: RunsFilter!) {
  runsOrError(filter: $filter, limit: 1000) {
    ... on Runs { results { runId status creationTime startTime endTime
                            tags { key value } stepStats { stepKey startTime endTime } } }
  }
}
"""


class LagPoller(threading.Thread):
    """Every 0.5 s, which of the acknowledged batches have all their rows in `v_points`."""

    def __init__(self, dsn: str, batch: int):
        super().__init__(daemon=True)
        self.dsn, self.batch, self.schema = dsn, batch, Warehouse(dsn).schema
        self.acked: dict[str, float] = {}  # batch label -> time of its 202
        self.seen: dict[str, float] = {}  # batch label -> time of the first poll that saw all its rows
        self.lock, self.stop = threading.Lock(), threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set():
                with self.lock:
                    pending = [b for b in self.acked if b not in self.seen]
                if pending:
                    asked = time.time()  # the query's snapshot is taken after this: rows seen were visible by then
                    rows = conn.execute(f"SELECT labels ->> 'lag_batch', count(*) FROM {self.schema}.v_points WHERE source = 'custom' "
                                        "AND labels ->> 'lag_batch' = ANY(%s) GROUP BY 1", (pending,)).fetchall()
                    with self.lock:
                        self.seen.update({label: asked for label, n in rows if n >= self.batch})
                self.stop.wait(0.5)


def lag_body(label: str, batch: int) -> bytes:
    """`batch` measures stamped over the last 0.1 s (distinct identities), all labelled `label`."""
    now = time.time()
    return json.dumps([{"name": METRICS[i % len(METRICS)], "value": float(i), "ts": round(now - i / 1000, 3),
                        "metadata": {"lag_batch": label, "shop": SHOPS[i % len(SHOPS)], "env": "prod"}}
                       for i in range(batch)]).encode()


def lag(dsn: str, token: str, work: Path, workers: int, minutes: float, every: float, batch: int) -> dict:
    """Push a batch every `every` s for `minutes` through the API while the production topology
    loads them; returns the per-batch lags and the ticks and runs that explain them."""
    admin, dagster_db = make_conninfo(dsn, dbname="postgres"), f"{BENCH_DB}_dagster"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {dagster_db} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {dagster_db}")
    landing = work / "lag-landing"
    landing.mkdir(parents=True)
    env = {settings.DSN_ENV: dsn, settings.LANDING_ENV: str(landing), settings.HOME_ENV: str(work / "home"),
           "METRICS_PIPELINE_API_CONFIG": str(work / "api.yaml")}
    poller = LagPoller(dsn, batch)
    statuses: dict[int, int] = {}
    try:
        with Topology(work / "dagster_home", env, sqlalchemy_url(make_conninfo(admin, dbname=dagster_db))) as topo:
            topo.start_sensor(LAG_SENSOR)
            proc, url = start_api(dsn, landing, work, workers)
            try:
                poller.start()
                session = requests.Session()
                headers = {"X-PMETRICS-API-KEY": token, "Content-Type": "application/json"}
                begin = time.time()
                print(f"topology and API up; one batch of {batch} every {every:g} s for {minutes:g} min", flush=True)
                n = 0
                while time.time() < begin + minutes * 60:
                    label = f"lag-{n:05d}"
                    response = session.post(f"{url}/api/v1/measure", data=lag_body(label, batch), headers=headers, timeout=30)
                    statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                    if response.status_code == 202:
                        with poller.lock:
                            poller.acked[label] = time.time()
                    n += 1
                    time.sleep(max(0.0, begin + n * every - time.time()))
                pushed_until = time.time()
                while time.time() < pushed_until + LAG_DRAIN_S:
                    with poller.lock:
                        if len(poller.seen) == len(poller.acked):
                            break
                    time.sleep(1)
            finally:
                poller.stop.set()
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
            state = topo.graphql(_TICKS, {"selector": topo.sensor_selector(LAG_SENSOR)})["sensorOrError"]["sensorState"]
            ticks = state["ticks"]
            runs = topo.graphql(_RUNS, {"filter": {"tags": [{"key": "dagster/sensor_name", "value": LAG_SENSOR}]}})
            runs = runs["runsOrError"]["results"]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {dagster_db} WITH (FORCE)")
    return {"acked": dict(poller.acked), "seen": dict(poller.seen), "ticks": ticks, "runs": runs,
            "begin": begin, "statuses": statuses}


def lag_breakdown(result: dict) -> dict[str, float]:
    """The median of each part of the lag, per batch seen, through the first successful measures
    run whose load step began after the batch's 202 (a load reads the files when its step runs)."""
    runs = []
    for run in result["runs"]:
        key = next((t["value"] for t in run["tags"] if t["key"] == "dagster/run_key"), "")
        step = next((st for st in run["stepStats"] if st["startTime"] and st["endTime"]), None)
        if run["status"] == "SUCCESS" and key.startswith("measures:") and step and run["startTime"]:
            runs.append((run, step))
    parts: dict[str, list[float]] = {k: [] for k in ("to the tick", "queue + launch", "run start-up", "load step", "rest")}
    for label, acked in result["acked"].items():
        seen = result["seen"].get(label)
        loads = [(run, step) for run, step in runs if step["startTime"] >= acked and step["endTime"] <= seen] if seen else []
        if not loads:
            continue
        run, step = min(loads, key=lambda x: x[1]["endTime"])
        parts["to the tick"].append(run["creationTime"] - acked)
        parts["queue + launch"].append(run["startTime"] - run["creationTime"])
        parts["run start-up"].append(step["startTime"] - run["startTime"])
        parts["load step"].append(step["endTime"] - step["startTime"])
        parts["rest"].append(seen - step["endTime"])
    return {k: float(np.median(v)) for k, v in parts.items() if v}


def lag_summary(result: dict, minutes: float, every: float, batch: int) -> tuple[str, list[float]]:
    lags = [result["seen"][b] - t for b, t in result["acked"].items() if b in result["seen"]]
    ticks = sorted(t["timestamp"] for t in result["ticks"])
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([0.0])
    ok = [r for r in result["runs"] if r["status"] == "SUCCESS" and r["startTime"] and r["endTime"]]
    durations = [r["endTime"] - r["creationTime"] for r in ok]
    parts = lag_breakdown(result)
    quantiles = (f"p50 {np.percentile(lags, 50):.1f} s, p95 {np.percentile(lags, 95):.1f} s, max {max(lags):.1f} s"
                 if lags else "no batch seen")
    line = (f"lag from 202 to `v_points` {quantiles}; {len(lags)} of {len(result['acked'])} batches seen within "
            f"{LAG_DRAIN_S} s of the last push (one batch of {batch} measures every {every:g} s for {minutes:g} min; "
            f"refused: {({k: v for k, v in result['statuses'].items() if k != 202}) or 'none'}). "
            f"{LAG_SENSOR}: {len(ticks)} ticks, every {np.median(gaps):.1f} s (max gap {gaps.max():.1f} s); "
            f"{len(ok)} of {len(result['runs'])} runs succeeded, creation to end p50 {np.median(durations) if durations else 0:.1f} s, "
            f"max {max(durations, default=0):.1f} s. Median lag split: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in parts.items()))
    return line, lags



def print_timeline(result: dict) -> None:
    """Every tick and run of the lag run, in seconds from its first push."""
    def rel(t: float | None) -> str:
        return f"{t - result['begin']:7.1f}" if t else "      -"

    for tick in sorted(result["ticks"], key=lambda t: t["timestamp"]):
        said = "; ".join(e["message"] for e in tick["logEvents"]["events"])
        print(f"tick {rel(tick['timestamp'])}..{rel(tick['endTimestamp'])}  {tick['status']:8} runs {len(tick['runIds'])}"
              f"  {tick.get('skipReason') or ''} {said} {(tick.get('error') or {}).get('message', '')[:200]}")
    for run in sorted(result["runs"], key=lambda r: r["creationTime"]):
        key = next((t["value"] for t in run["tags"] if t["key"] == "dagster/run_key"), "")
        step = run["stepStats"][0] if run["stepStats"] else {}
        print(f"run {key:34} {run['status']:8} created {rel(run['creationTime'])} started {rel(run['startTime'])} "
              f"step {rel(step.get('startTime'))}..{rel(step.get('endTime'))} ended {rel(run['endTime'])}")

def section_paragraphs() -> dict[str, str]:
    """The api_ingest section's current paragraphs, `throughput` and `lag`, to keep what a run skips."""
    doc = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    try:
        body = doc.split("<!-- api_ingest:begin -->", 1)[1].split("<!-- api_ingest:end -->", 1)[0]
    except IndexError:
        return {}
    out: dict[str, str] = {}
    for paragraph in (p.strip() for p in body.split("\n\n") if p.strip()):
        out["lag" if paragraph.startswith("Lag") else "throughput"] = paragraph
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20, help="throughput run; 0 skips it")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="API worker processes (default: one per core)")
    parser.add_argument("--lag-minutes", type=float, default=3, help="minutes of pushes for the lag to v_points; 0 skips it")
    parser.add_argument("--lag-every", type=float, default=2, help="seconds between the lag run's batches")
    parser.add_argument("--lag-batch", type=int, default=100, help="measures per batch of the lag run")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    parser.add_argument("--verbose", action="store_true", help="print every sensor tick and run of the lag run")
    args = parser.parse_args()
    payloads = bodies(args.batch)
    ours = reference = lagged = None
    work = Path(tempfile.mkdtemp(prefix="api-bench-", dir=ROOT / ".metrics_pipeline" if (ROOT / ".metrics_pipeline").exists() else None))
    try:
        with scratch_database(BENCH_DB) as dsn:
            warehouse = Warehouse(dsn)
            migrate.migrate(warehouse)
            api_keys.create_tenant(warehouse, "bench")
            token = api_keys.create_key(warehouse, "bench").token
            if args.seconds > 0:
                proc, url = start_api(dsn, work / "landing", work, args.workers)
                try:
                    drive(url, token, payloads, args.clients, 2, args.batch)  # warm-up
                    ours = drive(url, token, payloads, args.clients, args.seconds, args.batch)
                finally:
                    os.killpg(proc.pid, signal.SIGTERM)
                    proc.wait(30)
            if args.lag_minutes > 0:  # a fresh landing zone: the throughput run's millions of items would slow the loads
                lagged = lag(dsn, token, work, args.workers, args.lag_minutes, args.lag_every, args.lag_batch)
        if args.seconds > 0:
            reference = floor(payloads, work / "floor", min(args.seconds, 10), args.batch)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    today = f"{datetime.now(timezone.utc):%Y-%m-%d}, {os.cpu_count()} cores"
    paragraphs = section_paragraphs()
    if ours is not None:
        line = (f"{ours['accepted_per_s']:,.0f} measures/s accepted ({ours['batches']:,} batches of {args.batch:,} in "
                f"{ours['wall_s']:.0f} s, {args.clients} clients, {args.workers} API workers), batch latency p50 {ours['p50_ms']:.1f} ms, "
                f"p99 {ours['p99_ms']:.1f} ms; refused: {ours['other_statuses'] or 'none'}")
        print(line)
        print(f"floor (decode + validate + durable write, in process, one thread): {reference:,.0f} measures/s")
        paragraphs["throughput"] = (f"Last run ({today}): {line}. Floor in the same run: {reference:,.0f} measures/s "
                                    f"({ours['accepted_per_s'] / reference:.2f} x of it through HTTP).")
    if lagged is not None:
        lag_line, lags = lag_summary(lagged, args.lag_minutes, args.lag_every, args.lag_batch)
        if args.verbose:
            print_timeline(lagged)
        print(lag_line)
        p95 = float(np.percentile(lags, 95)) if lags else float("inf")
        paragraphs["lag"] = (f"Lag, last run ({today}, `--lag-minutes {args.lag_minutes:g}`; production topology, "
                             f"only `{LAG_SENSOR}` on, target p95 <= 90 s): {lag_line}")
    if args.no_write or (ours is None and lagged is None):
        return
    replace_section("api_ingest", "\n\n".join(paragraphs[k] for k in ("throughput", "lag") if k in paragraphs))
    if ours is not None:
        append_result("api ingest", f"batches of {args.batch:,} measures (3 metadata keys), {args.clients} clients",
                      f"{ours['accepted_per_s']:,.0f}/s, p99 {ours['p99_ms']:.1f} ms",
                      f"floor {reference:,.0f}/s; targets >= 100,000/s, p99 < 100 ms",
                      f"{ours['accepted_per_s'] / reference:.2f} x floor")
    if lagged is not None:
        quantiles = (f"p50 {np.percentile(lags, 50):.1f} s, p95 {p95:.1f} s, max {max(lags):.1f} s" if lags else "none seen")
        append_result("api ingest lag", f"{len(lagged['acked'])} batches of {args.lag_batch} measures, one every "
                      f"{args.lag_every:g} s for {args.lag_minutes:g} min; production topology, {LAG_SENSOR} only",
                      f"202 -> v_points {quantiles}; {len(lags)}/{len(lagged['acked'])} seen",
                      "target p95 <= 90 s", f"{p95 / 90:.2f} x target")


if __name__ == "__main__":
    main()
