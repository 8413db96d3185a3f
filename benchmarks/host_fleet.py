"""A fleet of hosts at 1-second sampling, from the agents' files to rollups and checks (issue 21, SPEC §8 "Host fleet").

    python benchmarks/host_fleet.py [--hosts 1000] [--full-hosts 100] [--live-every 30] [--refresh-every 300]

One hour of N hosts (default 1,000), each with the agent's real shape: 38 samples a second (CPU total
and per state, load, memory, swap, three NICs), 5 disk I/O samples every 5 s, 8 disk usage samples
every 30 s (39.3 a second), values that move like a real host's, rounded as the agent rounds them.
Files are written the way agents write them: the agent's own writer (`lib/host/compact.py`,
`MinuteFiles`: one file per host and minute, a tick per line; fsync off, as thousands of hosts on one
disk here would otherwise measure this disk), 15 s of every host at a time. Loaded the way
production loads them, on a simulated clock:
* the live loop every `--live-every` s (`lib/alerts/live.tick`: new lines into points, the host
  alert rules around them; the `host_live_alerts` sensor, 30 s);
* the host sensor's refresh of the hour in progress every `--refresh-every` s (`host_points` with
  reason refresh: `lib/host/live.load_new`), 15 s after the live tick;
* the closed-hour run (`lib/host/files.load_window`), then the hour's rollups (`rollups.refresh`
  5 m + 1 h, `refresh_health`: `hourly_rollups`) and checks (`threshold_alerts`, `values_in_range`).
CPU per stage is this process's CPU plus the PostgreSQL server's (a private server started for the
run, so all of its CPU is ours: backends, checkpointer, WAL writer, autovacuum), per hour of data
per 100 hosts. "Fits in half the machine" = the stages' total within one core-hour per hour.

Reference in the same run: a bare binary COPY of the hour's rows (prebuilt, series ids known) into an
identical empty table. Goal 1 of the issue (parse + load from files >= 400,000 samples/s and >= 0.5 x
the bare COPY) is measured on the first `--full-hosts` hosts: the closed-hour run from files into an
empty window, against the bare COPY of the same rows, alternating, median of 3 (a full hour of
1,000 hosts in one frame would need more memory than this machine has; the production path above
never builds it). Also: landing bytes a sample, and the raw tier (issue 21, goal 3): warehouse bytes
a point as rows (every `points` partition, table + TOAST + indexes, after the closed-hour run) and
once the hour is packed (`lib/warehouse/pack.py`, the hourly `pack_points_job`: every
`points_packed` partition, table + TOAST + indexes, over the points it holds), the pack's CPU per
hour per 100 hosts (a pipeline stage), and the rollups of a packed hour (a re-run after late data:
shown, not in the total). One series-day of raw points (host 0 gets the other 23 hours of the
day, loaded the same way, not timed) is read as the BI role through `v_points`, as rows and
packed: in the server (EXPLAIN ANALYZE) and end to end in Python (psycopg building 86,400 tuples).
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import psycopg
from common import append_result, replace_section
from psycopg.conninfo import make_conninfo

from metrics_pipeline.lib import rollups, settings
from metrics_pipeline.lib.alerts import engine, quality, rules
from metrics_pipeline.lib.alerts import live as alerts_live
from metrics_pipeline.lib.host import files, live
from metrics_pipeline.lib.host.batch import HostBatch
from metrics_pipeline.lib.host.compact import Encoder, MinuteFiles, host_key
from metrics_pipeline.lib.host.config import HostConfig
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.points import prepare
from metrics_pipeline.lib.warehouse import bi, migrate, pack, partitioning
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres

DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)
HOUR = DAY + timedelta(hours=12)
STEP = 15  # seconds of data written between two looks at the clock
CPU_STATES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
NICS = ("eth0", "eth1", "docker0")
NET = (("host_network_receive_bytes_per_second", "bytes_per_second"),
       ("host_network_transmit_bytes_per_second", "bytes_per_second"),
       ("host_network_receive_packets_per_second", "count_per_second"),
       ("host_network_transmit_packets_per_second", "count_per_second"),
       ("host_network_errors_per_second", "count_per_second"),
       ("host_network_drops_per_second", "count_per_second"))
DISK = (("host_disk_read_bytes_per_second", "bytes_per_second"), ("host_disk_write_bytes_per_second", "bytes_per_second"),
        ("host_disk_read_ops_per_second", "count_per_second"), ("host_disk_write_ops_per_second", "count_per_second"))


class FakeHost:
    """Samples of the agent's shape (`agent.Sampler`'s metrics, units, labels and rounding) for one host."""

    def __init__(self, index: int):
        self.name = f"web-{index:04d}"
        self.r = random.Random(index)
        self.busy = self.r.uniform(5, 60)
        self.load = self.r.uniform(0.1, 4.0)
        self.cores = float(self.r.choice((2, 4, 8, 16)))
        self.mem_total = float(self.r.choice((8, 16, 32, 64)) * 1024 ** 3)
        self.mem_used = self.mem_total * self.r.uniform(0.2, 0.8)
        self.traffic = [10 ** self.r.uniform(3, 6), 10 ** self.r.uniform(2, 4), 0.0]

    def tick(self, ts: float) -> list:
        r = self.r
        self.busy = min(100.0, max(0.0, self.busy + r.gauss(0, 3)))
        self.load = max(0.0, self.load + r.gauss(0, 0.02))
        self.mem_used = min(self.mem_total, max(0.0, self.mem_used + r.gauss(0, 4e6)))
        used = float(int(self.mem_used) // 4096 * 4096)
        iowait = round(r.uniform(0, 0.5), 3)
        pct = {"user": round(self.busy * 0.6, 3), "nice": 0.0, "system": round(self.busy * 0.3, 3),
               "idle": round(100 - self.busy - iowait, 3), "iowait": iowait, "irq": 0.0,
               "softirq": round(self.busy * 0.1, 3), "steal": 0.0}
        out = [("host_cpu_percent", round(self.busy, 3), "percent", {})]
        out += [("host_cpu_state_percent", pct[s], "percent", {"state": s}) for s in CPU_STATES]
        out += [("host_load1", round(self.load, 3), "count", {}), ("host_load5", round(self.load * 0.95, 3), "count", {}),
                ("host_load15", round(self.load * 0.9, 3), "count", {}), ("host_cpu_count", self.cores, "count", {}),
                ("host_memory_percent", round(100 * used / self.mem_total, 3), "percent", {}),
                ("host_memory_used_bytes", used, "bytes", {}),
                ("host_memory_available_bytes", self.mem_total - used, "bytes", {}),
                ("host_memory_total_bytes", self.mem_total, "bytes", {}),
                ("host_swap_percent", 0.0, "percent", {}), ("host_swap_used_bytes", 0.0, "bytes", {}),
                ("host_swap_total_bytes", 0.0, "bytes", {})]
        for nic, level in zip(NICS, self.traffic):
            rx = round(r.expovariate(1 / level), 3) if level else 0.0
            tx = round(r.expovariate(1 / level), 3) if level else 0.0
            labels = {"nic": nic}
            values = (rx, tx, round(rx / 900, 3), round(tx / 900, 3), 0.0, 0.0)
            out += [(m, v, u, labels) for (m, u), v in zip(NET, values)]
        second = int(ts)
        if second % 5 == 0:
            labels = {"device": "nvme0n1"}
            values = (round(r.expovariate(1 / 2e5), 3), round(r.expovariate(1 / 5e5), 3), round(r.uniform(0, 50), 3),
                      round(r.uniform(0, 80), 3))
            out += [(m, v, u, labels) for (m, u), v in zip(DISK, values)]
            out.append(("host_disk_busy_percent", round(r.uniform(0, 20), 3), "percent", labels))
        if second % 30 == 0:
            for mount, total in (("/", 100e9), ("/data", 500e9)):
                labels = {"mount": mount, "fstype": "ext4"}
                used = float(int(total * 0.4 + r.uniform(0, 1e6)) // 4096 * 4096)
                out += [("host_filesystem_used_percent", round(100 * used / total, 1), "percent", labels),
                        ("host_filesystem_used_bytes", used, "bytes", labels),
                        ("host_filesystem_free_bytes", total - used, "bytes", labels),
                        ("host_filesystem_total_bytes", total, "bytes", labels)]
        return out


class Server:
    """A private PostgreSQL for the run (durable settings), and the CPU all of its processes used."""

    def __init__(self, root: Path):
        self.pg = EmbeddedPostgres(root / "pg").start()
        self.dsn = self.pg.dsn("postgres")
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CREATE DATABASE fleet")
        self.dsn = make_conninfo(self.dsn, dbname="fleet")
        self.postmaster = psutil.Process(int((root / "pg" / "postmaster.pid").read_text().split()[0]))

    def settle(self, timeout: float = 2.0) -> None:
        """Wait until the backends of the stage just run have exited (their CPU is then in the
        postmaster's children times, not lost and not counted in the next stage)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = False
            for child in self.postmaster.children():
                try:
                    busy = busy or " fleet " in " ".join(child.cmdline())
                except psutil.Error:
                    pass
            if not busy:
                return
            time.sleep(0.01)

    def cpu(self) -> float:
        """CPU seconds of the server so far: the postmaster, its exited children, and the live ones."""
        self.settle()
        times = self.postmaster.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in self.postmaster.children(recursive=True):
            try:
                t = child.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        self.pg.stop()


class Meter:
    """CPU per stage: this process (process_time) + the server, summed over the stage's calls."""

    def __init__(self, server: Server | None):
        self.server = server
        self.stages: dict[str, dict[str, float]] = {}

    def run(self, stage: str, fn, *args, server: bool = True, **kwargs):
        server = self.server if server else None
        s0 = server.cpu() if server else 0.0
        c0, w0 = time.process_time(), time.perf_counter()
        result = fn(*args, **kwargs)
        row = self.stages.setdefault(stage, {"client": 0.0, "server": 0.0, "wall": 0.0, "calls": 0})
        row["client"] += time.process_time() - c0
        row["wall"] += time.perf_counter() - w0
        row["server"] += (server.cpu() - s0) if server else 0.0
        row["calls"] += 1
        return result


class HostsZone:
    """The landing zone seen through a filter: only the files of some hosts (the goal-1 subset)."""

    def __init__(self, zone: LocalLanding, hosts: set[str]):
        self.zone, self.hosts, self.url = zone, hosts, zone.url

    def list(self, prefix: str = ""):
        return [o for o in self.zone.list(prefix) if files.host_dir_of_key(o.key) in self.hosts]

    def read(self, key: str) -> bytes:
        return self.zone.read(key)


def live_rules(wh: Warehouse, alert_config, loaded: live.LiveLoad, now: datetime) -> None:
    """The second half of `lib/alerts/live.tick` (no delivery): the rules around what was new."""
    start = min(t for t in (loaded.first_ts, now - alerts_live.MIN_WINDOW, alerts_live._open_since(wh, "host")) if t)
    metric_rules = [r for r in alert_config.effective_rules if r.kind == "metric"]
    engine.evaluate_and_record(wh, metric_rules, start, now, now=now, source="host", data_lag=alert_config.data_lag)


def write_ticks(writers: list[MinuteFiles], ticks: list[list]) -> None:
    for writer, host_ticks in zip(writers, ticks):
        for ts, samples in host_ticks:
            writer.append(ts, samples)


def write_day_of_host0(zone: LocalLanding, wh: Warehouse) -> None:
    """The other 23 hours of host 0's day, so that a series-day of raw points exists (not timed)."""
    host = FakeHost(0)
    for hour in range(24):
        start = DAY + timedelta(hours=hour)
        if start == HOUR:
            continue
        for minute in range(60):
            t0 = int(start.timestamp()) + minute * 60
            path = zone.root / host_key(host.name, t0, "p1")
            path.parent.mkdir(parents=True, exist_ok=True)
            encoder = Encoder(host.name, t0)
            path.write_bytes(encoder.header() + b"".join(encoder.tick(t0 + s, host.tick(t0 + s)) for s in range(60)))
        files.load_window(wh, zone, start, start + timedelta(hours=1), HostConfig())


def table_bytes(conn, table: str) -> int:
    """Table + TOAST + indexes of every partition of `table`."""
    return int(conn.execute("""SELECT coalesce(sum(pg_total_relation_size(i.inhrelid)), 0) FROM pg_inherits i
                               WHERE i.inhparent = %s::regclass""", (table,)).fetchone()[0])


#: Stages shown in the table but not part of an hour's regular cost.
NOT_IN_TOTAL = ("agents", "rollups again")


def bi_series_day(dsn: str, password: str, host: str) -> tuple[float, float]:
    """(server ms, end-to-end ms), medians of 10 after a warm-up, of one series-day of raw points
    read as the BI role through v_points."""
    query = """SELECT ts, value FROM metrics.v_points WHERE metric = 'host_cpu_percent' AND resource = %s
               AND ts >= %s AND ts < %s ORDER BY ts"""
    params = (host, DAY, DAY + timedelta(days=1))
    server, wall = [], []
    with psycopg.connect(make_conninfo(dsn, user="fleet_bi", password=password), autocommit=True) as conn:
        for i in range(11):
            t0 = time.perf_counter()
            rows = conn.execute(query, params).fetchall()
            if i:
                wall.append(time.perf_counter() - t0)
            assert len(rows) == 86400, len(rows)
            plan = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + query, params).fetchone()[0][0]
            if i:
                server.append(plan["Execution Time"] / 1000)
    return statistics.median(server) * 1000, statistics.median(wall) * 1000


def bare_copy(dsn: str, batch: HostBatch, first_id: int = 1) -> tuple[float, int]:
    """(wall s, rows) of a binary COPY of `batch`'s rows, prebuilt with series ids from `first_id`,
    into `fleet_ref.points` (emptied first when `first_id` is 1)."""
    p = prepare(batch.frame(), source="host", start=HOUR, end=HOUR + timedelta(hours=1), out_of_window="drop")
    payload = loader.copy_buffer(p.codes + first_id, p.ts_us, p.values)
    with psycopg.connect(dsn, autocommit=True) as conn:
        if first_id == 1:
            conn.execute("TRUNCATE fleet_ref.points")
        conn.execute("CHECKPOINT")
        w0 = time.perf_counter()
        with conn.transaction(), conn.cursor() as cur, cur.copy(
                "COPY fleet_ref.points (series_id, ts, value) FROM STDIN (FORMAT BINARY)") as copy:
            for chunk in payload:
                copy.write(chunk)
        return time.perf_counter() - w0, len(p.codes)


def read_hosts(zone, names: list[str]) -> HostBatch:
    sub = HostsZone(zone, set(names))
    batch, _ = files.read_window(sub, HOUR, HOUR + timedelta(hours=1), HostConfig())
    return batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--full-hosts", type=int, default=100, help="hosts of the goal-1 measurement (full hour from files)")
    parser.add_argument("--live-every", type=int, default=30, help="seconds between live-loop ticks (0: off)")
    parser.add_argument("--refresh-every", type=int, default=300, help="seconds between in-progress refreshes (0: off)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()
    args.full_hosts = min(args.full_hosts, args.hosts)

    root = Path(tempfile.mkdtemp(prefix="host-fleet-", dir=settings.state_dir()))
    server = None
    try:
        if os.environ.get(settings.DSN_ENV):
            dsn = os.environ[settings.DSN_ENV]
        else:
            server = Server(root)
            dsn = server.dsn
        run(dsn, server, root, args)
    finally:
        if server:
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def run(dsn: str, server: Server | None, root: Path, args: argparse.Namespace) -> None:
    wh = Warehouse(dsn, "metrics")
    for schema in ("metrics", "fleet_full", "fleet_ref"):
        migrate.migrate(Warehouse(dsn, schema))
    with psycopg.connect(dsn, autocommit=True) as conn:
        partitioning.ensure_partitions(conn, "fleet_ref", "points", HOUR, HOUR + timedelta(hours=1))
    zone = LocalLanding(root / "landing")
    meter = Meter(server)
    config = HostConfig()
    alert_config = rules.load_config()
    hosts = [FakeHost(i) for i in range(args.hosts)]
    writers = [MinuteFiles(zone.root, host=h.name, writer="p1", fsync=False) for h in hosts]
    samples = 0

    # -- the hour, as it happens ---------------------------------------------------------------
    started = time.perf_counter()
    server_start = server.cpu() if server else 0.0
    for step in range(3600 // STEP):
        t_start = HOUR.timestamp() + step * STEP
        ticks = [[(t_start + s + 0.002, host.tick(t_start + s)) for s in range(STEP)] for host in hosts]
        samples += sum(len(t[1]) for host_ticks in ticks for t in host_ticks)
        meter.run("agents: encode + write (on the hosts, not in the total)", write_ticks, writers, ticks, server=False)
        elapsed = (step + 1) * STEP
        now = HOUR + timedelta(seconds=elapsed, milliseconds=500)
        if args.live_every and elapsed % args.live_every == 0:  # lib/alerts/live.tick, its two halves timed apart
            loaded = meter.run("live loop: new lines -> points", live.load_new, wh, zone, now, config)
            meter.run("live loop: host alert rules", live_rules, wh, alert_config, loaded, now)
        if args.refresh_every and (elapsed - STEP) % args.refresh_every == 0 and elapsed > STEP:
            meter.run("in-progress refresh (host_points)", live.load_new, wh, zone, now, config)
        if step % 40 == 39:
            print(f"  {elapsed // 60} min of data written and loaded ({time.perf_counter() - started:.0f} s)", flush=True)
    for writer in writers:
        writer.close()
    if server:  # what the server did between the stages (autovacuum, checkpoints, WAL): the pipeline's too
        staged = sum(row["server"] for row in meter.stages.values())
        meter.stages["PostgreSQL between the stages (autovacuum, checkpoints)"] = {
            "client": 0.0, "server": server.cpu() - server_start - staged, "wall": 0.0, "calls": 0}
    closed_at = HOUR + timedelta(hours=1, minutes=2)
    closed = meter.run("closed-hour run (host_points)", files.load_window, wh, zone, HOUR, HOUR + timedelta(hours=1), config)
    meter.run("rollups 5 m + 1 h + health", lambda: (rollups.refresh(wh, ["rollup_5m", "rollup_1h"], HOUR, HOUR + timedelta(hours=1)),
                                                     rollups.refresh_health(wh, HOUR, HOUR + timedelta(hours=1), now=closed_at)))
    metric_rules = [r for r in alert_config.effective_rules if r.kind == "metric"]
    meter.run("checks (threshold_alerts, values_in_range)",
              lambda: (engine.evaluate_and_record(wh, metric_rules, HOUR, HOUR + timedelta(hours=1), now=closed_at,
                                                  source="host", data_lag=alert_config.data_lag),
                       quality.out_of_range(wh, "host", HOUR, HOUR + timedelta(hours=1))))
    points = closed.as_metadata()["points"]
    assert points == samples and closed.batch.problems == {}, (points, samples, closed.batch.problems)
    print(f"closed-hour run: {closed.mode} mode, {closed.load.points:,} points loaded by it, {points:,} in the window",
          flush=True)

    # -- sizes as rows; host 0's day (rows); the BI read of it; then the pack ---------------------
    landing_bytes = sum(o.size for o in zone.list(files.hour_prefix(HOUR)))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE metrics.points")
        stored = conn.execute("SELECT count(*) FROM metrics.points").fetchone()[0]
        disk = table_bytes(conn, "metrics.points")
    write_day_of_host0(zone, wh)
    password = secrets.token_urlsafe(18)
    bi.ensure_role(wh, "fleet_bi", password=password, tenants=[])
    bi_rows = bi_series_day(dsn, password, hosts[0].name)
    packed = meter.run("pack the closed hour (pack_points_job)", pack.pack_hour, wh, HOUR)
    assert packed.points == samples, (packed.points, samples)
    print(f"packed {packed.points:,} points into {packed.series:,} rows in {packed.seconds:.1f} s", flush=True)
    pack.pack_closed_hours(wh, now=DAY + timedelta(days=2), grace=timedelta(0))  # host 0's other hours
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE metrics.points")
        packed_rows, packed_points = conn.execute("SELECT count(*), sum(n) FROM metrics.points_packed").fetchone()
        packed_disk = table_bytes(conn, "metrics.points_packed")
        hot_left = table_bytes(conn, "metrics.points")
        assert conn.execute("SELECT count(*) FROM metrics.points").fetchone()[0] == 0
    bi_packed = bi_series_day(dsn, password, hosts[0].name)
    meter.run("rollups again, of the packed hour (a re-run after late data)",
              lambda: (rollups.refresh(wh, ["rollup_5m", "rollup_1h"], HOUR, HOUR + timedelta(hours=1)),
                       rollups.refresh_health(wh, HOUR, HOUR + timedelta(hours=1), now=closed_at)))
    tier = {"stored": stored, "disk": disk, "packed_rows": packed_rows, "packed_points": int(packed_points),
            "packed_disk": packed_disk, "hot_left": hot_left, "bi_rows": bi_rows, "bi_packed": bi_packed,
            "pack_rate": packed.points / packed.seconds}

    # -- bare COPY of the same rows (the hour, every host), 100 hosts a COPY (a whole fleet's payload
    # would not fit in memory); the server's CPU is read around the COPY statements only.
    names = [h.name for h in hosts]
    copy_wall = copy_server = 0.0
    copied = 0
    for i in range(0, len(names), 100):
        batch = read_hosts(zone, names[i:i + 100])
        s0 = server.cpu() if server else 0.0
        wall, rows = bare_copy(dsn, batch, first_id=1 + copied)
        copy_server += (server.cpu() - s0) if server else 0.0
        copy_wall += wall
        copied += rows
    assert copied == samples

    # -- goal 1: the closed-hour run from files into an empty window vs the bare COPY -------------
    subset = HostsZone(zone, set(names[:args.full_hosts]))
    full_wh = Warehouse(dsn, "fleet_full")
    ours, ref = [], []
    for i in range(args.repeat):
        def full_load():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE fleet_full.points, fleet_full.series, fleet_full.series_intervals, "
                             "fleet_full.landing_files CASCADE")
                conn.execute("CHECKPOINT")
            w0 = time.perf_counter()
            result = files.load_window(full_wh, subset, HOUR, HOUR + timedelta(hours=1), config)
            ours.append((time.perf_counter() - w0, result.load.points))

        def reference():
            ref.append(bare_copy(dsn, read_hosts(zone, names[:args.full_hosts])))

        for fn in ((full_load, reference) if i % 2 == 0 else (reference, full_load)):
            fn()
    full_points = ours[0][1]
    full_rate = full_points / statistics.median(w for w, _ in ours)
    ref_rate = full_points / statistics.median(w for w, _ in ref)

    report(args, meter, samples, points, landing_bytes, tier, copy_wall, copy_server, full_points, full_rate,
           ref_rate, server is not None)


def report(args, meter: Meter, samples, points, landing_bytes, tier: dict, copy_wall, copy_server, full_points,
           full_rate, ref_rate, server_measured: bool) -> None:
    per100 = 100 / args.hosts
    lines = ["| stage | calls | this process | PostgreSQL | total | per hour of data per 100 hosts |",
             "|---|---:|---:|---:|---:|---:|"]
    pipeline = 0.0
    for stage, row in meter.stages.items():
        total = row["client"] + row["server"]
        if not stage.startswith(NOT_IN_TOTAL):
            pipeline += total
        lines.append(f"| {stage} | {row['calls']:,} | {row['client']:.1f} s | {row['server']:.1f} s | {total:.1f} s | "
                     f"{total * per100:.1f} s |")
    lines.append(f"| **pipeline (every stage but the agents)** | | | | {pipeline:.1f} s | **{pipeline * per100:.1f} s** |")
    lines.append(f"| reference: bare COPY of the same {samples:,} rows | | | {copy_server:.1f} s | "
                 f"{copy_wall:.1f} s wall | {copy_server * per100:.1f} s |")
    fleet = int(3600 / (pipeline / args.hosts)) if pipeline else 0
    landing = landing_bytes / samples
    per_point = tier["disk"] / tier["stored"]
    packed_per_point = tier["packed_disk"] / tier["packed_points"]
    pack_cpu = sum(r["client"] + r["server"] for k, r in meter.stages.items() if k.startswith("pack the closed hour"))
    (bi_rows_server, bi_rows_wall), (bi_server, bi_wall) = tier["bi_rows"], tier["bi_packed"]
    ratio = full_rate / ref_rate
    text = "\n".join([
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d} with `python benchmarks/host_fleet.py --hosts {args.hosts}` "
        f"({args.hosts:,} hosts x 1 h at 1 s, {samples:,} samples, {samples / args.hosts / 3600:.1f} a host and second; "
        f"live loop every {args.live_every} s, refresh every {args.refresh_every} s; "
        f"{os.cpu_count()} cores{'' if server_measured else '; server CPU not measured (METRICS_PIPELINE_DSN)'}).",
        "",
        *lines,
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| largest fleet within one core (half of this machine) | {fleet:,} hosts | >= 1,000 |",
        f"| files -> points, closed hour of {args.full_hosts} hosts into an empty window ({full_points:,} samples) | "
        f"{full_rate:,.0f} samples/s, {ratio:.2f} x the bare COPY ({ref_rate:,.0f} rows/s) | >= 400,000/s, >= 0.5 x |",
        f"| landing | {landing:.2f} bytes a sample ({landing_bytes / 1e6:,.1f} MB for the hour) | <= 10 |",
        f"| raw tier as rows (`points`, the hour in progress), table + TOAST + indexes | {per_point:.1f} bytes a point "
        f"({tier['stored']:,} rows) | |",
        f"| raw tier packed (`points_packed`: closed hours), table + TOAST + indexes | **{packed_per_point:.1f} bytes a "
        f"point** ({tier['packed_points']:,} points in {tier['packed_rows']:,} rows; `points` left with "
        f"{tier['hot_left'] / 1e6:,.0f} MB of free space the next hour reuses) | <= 16 |",
        f"| pack of the closed hour | {pack_cpu * per100:.1f} CPU-s per hour per 100 hosts "
        f"({tier['pack_rate']:,.0f} points/s) | |",
        f"| one series-day of raw points (86,400) as the BI role, `v_points`, in the server (EXPLAIN ANALYZE) | "
        f"packed **{bi_server:.1f} ms**; as rows {bi_rows_server:.1f} ms (medians of 10) | < 50 ms |",
        f"| the same, end to end in Python (psycopg builds 86,400 tuples) | packed {bi_wall:.1f} ms; "
        f"as rows {bi_rows_wall:.1f} ms | |",
    ])
    print(text)
    if args.no_write:
        return
    replace_section("host_fleet", text)
    append_result(
        "host fleet", f"{args.hosts:,} hosts x 1 h at 1 s ({samples:,} samples), production cadence",
        f"pipeline {pipeline * per100:.1f} CPU-s per hour per 100 hosts -> {fleet:,} hosts in one core; files -> points "
        f"{full_rate:,.0f}/s; landing {landing:.2f} B/sample; raw tier {per_point:.0f} B/point as rows, "
        f"{packed_per_point:.1f} packed (pack {pack_cpu * per100:.1f} CPU-s); BI series-day {bi_server:.0f} ms in the "
        f"server, {bi_wall:.0f} ms end to end",
        f"bare COPY {ref_rate:,.0f} rows/s", f"{ratio:.2f} x COPY")


if __name__ == "__main__":
    main()
