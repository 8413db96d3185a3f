"""Alert latency on the production topology: from a condition in the data to Alertmanager, and back.

The production topology (gRPC code server, webserver and daemon on PostgreSQL storage, the
repository's dagster.yaml), a real Alertmanager, and synthetic hosts written the way the agent writes
them (a line a second, appended and fsync'd to the current minute file). One busy host's CPU crosses
80 % at known times, `--episodes` times; a rule `CpuHigh` (> 80 % for `--hold`, shortened from 5 min
as SPEC §12 allows: each episode fires for 60 s, longer than the latency measured, so that 10
episodes fit in about 23 minutes) is the SPEC rule otherwise. Only the
sensors a deployment runs for this are started: `host_live_alerts` (the live loop, every 30 s),
`alert_delivery` and `host_points_sensor` (the runs of the hour).

Reported:
* active in Alertmanager - `for` elapsed, p50/p95/max over the episodes (polled every second from
  Alertmanager's API, the way an on-call tool sees it);
* resolved in Alertmanager - condition ended;
* CPU time of the live loop per hour of data (each tick reports its own thread's CPU), against the
  CPU time of loading the same hour once (`host.files.load_window`, the closed-hour run), measured
  in the same run on the same files.
Targets (issue 15): p95 <= 60 s both ways; live loop <= 1.5x one load of the hour.

Run: `python benchmarks/alert_latency.py` (about 20 minutes; `--episodes 3` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg
import requests
import yaml
from common import append_result, replace_section
from psycopg.conninfo import make_conninfo

from metrics_pipeline.dev.demo_host import start_alertmanager
from metrics_pipeline.dev.devserver import sqlalchemy_url, stop_process_group
from metrics_pipeline.dev.topology import Topology, free_port
from metrics_pipeline.lib import settings
from metrics_pipeline.lib.host import files
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres

BUSY = "bench-busy-1"
SENSORS = ("host_live_alerts", "alert_delivery", "host_points_sensor")

_TICKS = """
query($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: 1000) { timestamp status skipReason error { message } } } }
  }
}
"""


class Agent(threading.Thread):
    """Synthetic agents: every second one line per host into its minute file (append + fsync)."""

    def __init__(self, root, hosts: int, samples: int, busy_until: list[tuple[float, float]]):
        super().__init__(daemon=True)
        self.root, self.hosts, self.samples, self.busy = root, hosts, samples, busy_until
        self.stop = threading.Event()

    def cpu(self, ts: float) -> float:
        return 92.0 if any(a <= ts < b for a, b in self.busy) else 35.0

    def run(self) -> None:
        next_tick = float(int(time.time()) + 1)
        while not self.stop.is_set():
            time.sleep(max(0.0, next_tick - time.time()))
            ts = next_tick
            next_tick += 1.0
            for h in range(self.hosts):
                host = BUSY if h == 0 else f"bench-host-{h}"
                cpu = self.cpu(ts) if h == 0 else 30.0 + (h % 7)
                samples = [["host_cpu_percent", cpu, "percent", {}]]
                samples += [[f"host_bench_metric_{i}", float(i), "count", {}] for i in range(self.samples - 1)]
                path = self.root / host_key(host, ts)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab", buffering=0) as fh:
                    fh.write((json.dumps({"ts": ts, "host": host, "samples": samples}) + "\n").encode())
                    os.fsync(fh.fileno())


class Watcher(threading.Thread):
    """Polls Alertmanager every second: when CpuHigh on the busy host becomes active / goes away."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop = url, threading.Event()
        self.changes: list[tuple[float, bool]] = []
        self.errors: list[str] = []
        self.seen: list = []

    def run(self) -> None:
        active = False
        while not self.stop.is_set():
            try:
                alerts = requests.get(f"{self.url}/api/v2/alerts", timeout=2).json()
                self.seen = alerts
                now_active = any(a["labels"].get("alertname") == "CpuHigh" and a["labels"].get("resource") == BUSY
                                 and a["status"]["state"] == "active" for a in alerts)
                if now_active != active:
                    self.changes.append((time.time(), now_active))
                    active = now_active
            except Exception as exc:  # noqa: BLE001 - keep polling; say what went wrong once
                if not self.errors:
                    print(f"polling Alertmanager failed: {exc!r}", flush=True)
                self.errors.append(repr(exc))
            time.sleep(1.0)


def _quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    a = np.array(values)
    return f"p50 {np.percentile(a, 50):.0f} s, p95 {np.percentile(a, 95):.0f} s, max {a.max():.0f} s (n={len(a)})"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10)
    # An episode must fire for longer than the latency measured (two ticks), or it would be delivered
    # already resolved: `for` 30 s, then 60 s firing, then 45 s below (10 episodes in 23 minutes).
    parser.add_argument("--hold", type=int, default=30, help="the rule's `for`, seconds")
    parser.add_argument("--high", type=int, default=90, help="seconds above 80 %% per episode")
    parser.add_argument("--low", type=int, default=45, help="seconds below between episodes")
    parser.add_argument("--hosts", type=int, default=20, help="hosts written, the busy one included")
    parser.add_argument("--samples", type=int, default=39, help="samples per host and second (the agent's 39)")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="print every tick and every Alertmanager change")
    args = parser.parse_args()

    state = settings.state_dir() / "bench-alert-latency"
    shutil.rmtree(state, ignore_errors=True)
    landing = state / "landing"
    landing.mkdir(parents=True)
    (state / "alerts.yaml").write_text(yaml.safe_dump({"rules": [{
        "name": "CpuHigh", "metrics": ["host_cpu_percent"], "source": "host", "op": ">", "threshold": 80,
        "for": f"{args.hold}s", "severity": "warning", "annotations": {"summary": "CPU above 80 % on {resource}"}}]}))
    server = EmbeddedPostgres(state / "pg").start()
    am_port = free_port()
    alertmanager = start_alertmanager(state, am_port)
    if alertmanager is None:
        raise SystemExit("prometheus-alertmanager is not installed (make test installs it)")
    am_url = f"http://127.0.0.1:{am_port}"
    agent = watcher = None
    try:
        admin = server.dsn("postgres")
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in ("bench_alerts", "bench_alerts_dagster", "bench_alerts_once"):
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
                conn.execute(f"CREATE DATABASE {db}")
        dsn = make_conninfo(admin, dbname="bench_alerts")
        migrate.migrate(Warehouse(dsn))
        env = {settings.DSN_ENV: dsn, "METRICS_PIPELINE_LANDING": str(landing),
               "METRICS_PIPELINE_ALERTS_CONFIG": str(state / "alerts.yaml"),
               "METRICS_PIPELINE_ALERTMANAGER_URL": am_url, settings.HOME_ENV: str(state / "home")}
        begin = time.time() + 60  # the topology starts meanwhile; episodes begin after a quiet minute
        period = args.high + args.low
        busy = [(begin + i * period, begin + i * period + args.high) for i in range(args.episodes)]
        agent = Agent(landing, args.hosts, args.samples, busy)
        agent.start()
        with Topology(state / "dagster_home", env, sqlalchemy_url(make_conninfo(admin, dbname="bench_alerts_dagster"))) as topo:
            for name in SENSORS:
                topo.start_sensor(name)
            watcher = Watcher(am_url)
            watcher.start()
            print(f"topology up; {args.episodes} episodes of {args.high} s above 80 % from "
                  f"{datetime.fromtimestamp(begin, timezone.utc):%H:%M:%S}", flush=True)
            end = busy[-1][1] + args.low + 30
            while time.time() < end:
                time.sleep(5)
            ticks = topo.graphql(_TICKS, {"selector": topo.sensor_selector("host_live_alerts")})["sensorOrError"]["sensorState"]["ticks"]
        watcher.stop.set()
        agent.stop.set()
        # Latencies: each episode's first activation after its `for` elapsed, its resolution after it ended.
        fire_lat, resolve_lat = [], []
        for a, b in busy:
            fired = a + args.hold
            on = [t for t, s in watcher.changes if s and a <= t < b + args.low]
            off = [t for t, s in watcher.changes if not s and b <= t < b + args.low + period]
            if on:
                fire_lat.append(on[0] - fired)
            if off:
                resolve_lat.append(off[0] - b)
        cpu = [float(t["skipReason"].rsplit(";", 1)[1].split("s CPU")[0]) for t in ticks
               if t.get("skipReason") and "s CPU" in t["skipReason"]]
        hours = (busy[-1][1] + args.low - begin + 60) / 3600
        live_cpu_per_hour = sum(cpu) / hours if hours else 0.0
        # The reference: load the same data once, as the closed-hour run does.
        once = make_conninfo(admin, dbname="bench_alerts_once")
        migrate.migrate(Warehouse(once))
        zone = LocalLanding(landing)
        first_hour = datetime.fromtimestamp(begin - 60, timezone.utc).replace(minute=0, second=0, microsecond=0)
        last_hour = datetime.fromtimestamp(end, timezone.utc).replace(minute=0, second=0, microsecond=0)
        t0 = time.thread_time()
        files.load_window(Warehouse(once), zone, first_hour, last_hour + timedelta(hours=1))
        once_cpu_per_hour = (time.thread_time() - t0) / hours  # the same data, loaded once
        errors = [t["error"]["message"][:200] for t in ticks if t.get("error")]
    finally:
        if agent:
            agent.stop.set()
        if watcher:
            watcher.stop.set()
        stop_process_group(alertmanager, timeout=10)
        server.stop()

    if args.verbose:
        for tick in sorted(ticks, key=lambda x: x["timestamp"]):
            print(f"tick {tick['timestamp'] - begin:7.1f} s  {tick['status']}  {tick.get('skipReason') or ''}")
        for a, b in busy:
            print(f"episode {a - begin:6.0f} .. {b - begin:6.0f} s (fires at {a + args.hold - begin:.0f} s)")
        for when, state in watcher.changes:
            print(f"alertmanager {when - begin:7.1f} s  {'active' if state else 'gone'}")
        print(f"last seen in Alertmanager: {watcher.seen}")
    ratio = live_cpu_per_hour / once_cpu_per_hour if once_cpu_per_hour else float("inf")
    print(f"active in Alertmanager - for elapsed : {_quantiles(fire_lat)}")
    print(f"resolved in Alertmanager - ended     : {_quantiles(resolve_lat)}")
    print(f"live loop CPU per hour of data       : {live_cpu_per_hour:.2f} s ({len(cpu)} ticks); "
          f"one load of the hour: {once_cpu_per_hour:.2f} s; ratio {ratio:.2f}x")
    if errors:
        print(f"tick errors: {errors[:3]}")
    if args.no_write:
        return
    data = (f"{args.episodes} episodes, `for` {args.hold} s, {args.hosts} hosts x {args.samples} samples/s, "
            "production topology, real Alertmanager")
    append_result("alert_latency", data,
                  f"fire {_quantiles(fire_lat)}; resolve {_quantiles(resolve_lat)}",
                  f"live loop {live_cpu_per_hour:.2f} s CPU/h vs one load {once_cpu_per_hour:.2f} s/h",
                  f"{ratio:.2f}x")
    replace_section("alert_latency", f"Measured {datetime.now(timezone.utc):%Y-%m-%d} with "
                    f"`python benchmarks/alert_latency.py` ({data}).\n\n"
                    "| measure | value | target |\n|---|---|---|\n"
                    f"| active in Alertmanager - `for` elapsed | {_quantiles(fire_lat)} | p95 <= 60 s |\n"
                    f"| resolved in Alertmanager - condition ended | {_quantiles(resolve_lat)} | p95 <= 60 s |\n"
                    f"| live loop CPU per hour of data (our thread) | {live_cpu_per_hour:.2f} s | |\n"
                    f"| loading the hour once (closed-hour run) | {once_cpu_per_hour:.2f} s | |\n"
                    f"| ratio | {ratio:.2f}x | <= 1.5x |\n")


if __name__ == "__main__":
    main()
