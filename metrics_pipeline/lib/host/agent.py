"""`metrics-pipeline collect`: a small psutil agent that samples this host into the landing zone.

Sampling groups and default intervals (SPEC §2.3, all configurable): CPU total and per state, load,
memory, swap every 1 s; network counters every 1 s; disk I/O every 5 s; disk usage per mount every
30 s. Counters become per-second rates; a counter that goes backwards (reset, wrap, NIC re-created)
yields no sample for that interval rather than a negative rate. The metric catalogue, with units
and meanings, is `CATALOGUE` below and `docs/metrics.md`.

Output: one file per host, minute and agent process,
`host/<YYYY-MM-DD>/<HH>/<host>/<host>-<YYYYMMDDTHHMM>-p<pid>.jsonl`, in the compact format of
`lib/host/compact.py` (format 2: each series named once per file, then one line of values per tick,
about 6 bytes a sample). `--tenant` is written in the file's header: the loader makes it the
`tenant` label of every sample of the file, unless the host source's configuration names the
tenant of this host's landing directory (`lib/host/config.py`, which wins). Files of format 1 (one
JSON object per tick, `host_key` names) written by earlier agents still load.
Each tick is written with a single write(), and fsynced, so a crash leaves at most a partial last
line (the loader skips and counts it). A file is created with O_EXCL and never reopened: an agent
restarted within the same minute, or one whose write failed half-way, starts a new file rather than
append after a torn tail. With an S3 landing zone, files are spooled locally and the finished minute
is uploaded; spool files left by a crash are uploaded at start, and a failed upload is retried the
next minute, so an outage loses nothing.

Cost matters (SPEC §8: <= 0.5 % of a core, <= 60 MB RSS): this module imports only psutil and the
standard library (boto3 only with an S3 landing zone), and does no work between ticks.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from metrics_pipeline.lib.host.compact import MinuteFiles, host_dir, host_key  # noqa: F401 - host_dir, host_key: re-exported
from metrics_pipeline.lib.landing import LocalLanding, open_landing
from metrics_pipeline.lib.tenants import tenant_problem

log = logging.getLogger(__name__)

Sample = tuple[str, float, str, dict[str, str]]

#: metric -> (unit, interval group, meaning). The single source for docs/metrics.md.
CATALOGUE: dict[str, tuple[str, str, str]] = {
    "host_cpu_percent": ("percent", "cpu", "CPU busy time, all cores: 100 - idle - iowait"),
    "host_cpu_state_percent": ("percent", "cpu", "share of CPU time per state (label `state`: user, nice, system, idle, iowait, irq, softirq, steal)"),
    "host_load1": ("count", "cpu", "1-minute load average (runnable + uninterruptible tasks)"),
    "host_load5": ("count", "cpu", "5-minute load average"),
    "host_load15": ("count", "cpu", "15-minute load average"),
    "host_cpu_count": ("count", "cpu", "logical CPUs"),
    "host_memory_percent": ("percent", "cpu", "memory in use: (total - available) / total"),
    "host_memory_used_bytes": ("bytes", "cpu", "memory in use (total - available)"),
    "host_memory_available_bytes": ("bytes", "cpu", "memory available to new processes without swapping"),
    "host_memory_total_bytes": ("bytes", "cpu", "physical memory"),
    "host_swap_percent": ("percent", "cpu", "swap in use"),
    "host_swap_used_bytes": ("bytes", "cpu", "swap in use"),
    "host_swap_total_bytes": ("bytes", "cpu", "swap size"),
    "host_network_receive_bytes_per_second": ("bytes_per_second", "network", "bytes received per second (label `nic`)"),
    "host_network_transmit_bytes_per_second": ("bytes_per_second", "network", "bytes sent per second (label `nic`)"),
    "host_network_receive_packets_per_second": ("count_per_second", "network", "packets received per second (label `nic`)"),
    "host_network_transmit_packets_per_second": ("count_per_second", "network", "packets sent per second (label `nic`)"),
    "host_network_errors_per_second": ("count_per_second", "network", "receive + transmit errors per second (label `nic`)"),
    "host_network_drops_per_second": ("count_per_second", "network", "receive + transmit drops per second (label `nic`)"),
    "host_disk_read_bytes_per_second": ("bytes_per_second", "disk_io", "bytes read per second (label `device`)"),
    "host_disk_write_bytes_per_second": ("bytes_per_second", "disk_io", "bytes written per second (label `device`)"),
    "host_disk_read_ops_per_second": ("count_per_second", "disk_io", "read operations per second (label `device`)"),
    "host_disk_write_ops_per_second": ("count_per_second", "disk_io", "write operations per second (label `device`)"),
    "host_disk_busy_percent": ("percent", "disk_io", "time the device was busy (label `device`; Linux, FreeBSD)"),
    "host_filesystem_used_percent": ("percent", "disk_usage", "space used, as `df` shows it (labels `mount`, `fstype`)"),
    "host_filesystem_used_bytes": ("bytes", "disk_usage", "space used (labels `mount`, `fstype`)"),
    "host_filesystem_free_bytes": ("bytes", "disk_usage", "space available to unprivileged users (labels `mount`, `fstype`)"),
    "host_filesystem_total_bytes": ("bytes", "disk_usage", "filesystem size (labels `mount`, `fstype`)"),
}

_SKIP_DISKS = re.compile(r"^(loop|ram|zram|sr|fd|dm-)\d*")
_SKIP_FS = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "cgroup", "cgroup2", "nsfs", "autofs"}


def _unit(metric: str) -> str:
    return CATALOGUE[metric][0]


class Rates:
    """Per-second rates from monotonically increasing counters; resets give no sample."""

    def __init__(self) -> None:
        self._last: dict[tuple, tuple[float, float]] = {}

    def rate(self, key: tuple, value: float, now: float) -> float | None:
        previous = self._last.get(key)
        self._last[key] = (value, now)
        if previous is None:
            return None
        last_value, last_time = previous
        elapsed = now - last_time
        if elapsed <= 0 or value < last_value:
            return None  # first sample after a reset or wrap: no negative or absurd rate
        return (value - last_value) / elapsed


@dataclasses.dataclass
class Sampler:
    """Reads psutil and turns counters into samples. One instance per agent (it keeps state)."""

    include_loopback: bool = False
    rates: Rates = dataclasses.field(default_factory=Rates)
    _cpu_last: tuple | None = None

    def cpu(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        times = psutil.cpu_times()
        states = {f: getattr(times, f) for f in times._fields if f not in ("guest", "guest_nice")}
        if self._cpu_last is not None:
            deltas = {k: v - self._cpu_last[1].get(k, 0.0) for k, v in states.items()}
            total = sum(deltas.values())
            if total > 0 and all(d >= 0 for d in deltas.values()):
                pct = {k: min(100.0, max(0.0, 100.0 * d / total)) for k, d in deltas.items()}
                busy = 100.0 - pct.get("idle", 0.0) - pct.get("iowait", 0.0)
                out.append(("host_cpu_percent", round(max(0.0, busy), 3), "percent", {}))
                out.extend(("host_cpu_state_percent", round(v, 3), "percent", {"state": k}) for k, v in pct.items())
        self._cpu_last = (now, states)
        try:
            load1, load5, load15 = os.getloadavg()
            # Three decimals like the other gauges (the kernel keeps 11 fractional bits; "1.39208984375" cost 13 bytes).
            out += [("host_load1", round(load1, 3), "count", {}), ("host_load5", round(load5, 3), "count", {}),
                    ("host_load15", round(load15, 3), "count", {})]
        except (AttributeError, OSError):
            pass
        out.append(("host_cpu_count", float(psutil.cpu_count() or 0), "count", {}))
        mem = psutil.virtual_memory()
        used = mem.total - mem.available
        out += [
            ("host_memory_percent", round(100.0 * used / mem.total, 3) if mem.total else 0.0, "percent", {}),
            ("host_memory_used_bytes", float(used), "bytes", {}),
            ("host_memory_available_bytes", float(mem.available), "bytes", {}),
            ("host_memory_total_bytes", float(mem.total), "bytes", {}),
        ]
        swap = psutil.swap_memory()
        out += [
            ("host_swap_percent", float(swap.percent), "percent", {}),
            ("host_swap_used_bytes", float(swap.used), "bytes", {}),
            ("host_swap_total_bytes", float(swap.total), "bytes", {}),
        ]
        return out

    def network(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for nic, c in psutil.net_io_counters(pernic=True).items():
            if nic == "lo" and not self.include_loopback:
                continue
            labels = {"nic": nic}
            for metric, value in (
                ("host_network_receive_bytes_per_second", c.bytes_recv),
                ("host_network_transmit_bytes_per_second", c.bytes_sent),
                ("host_network_receive_packets_per_second", c.packets_recv),
                ("host_network_transmit_packets_per_second", c.packets_sent),
                ("host_network_errors_per_second", c.errin + c.errout),
                ("host_network_drops_per_second", c.dropin + c.dropout),
            ):
                rate = self.rates.rate((metric, nic), float(value), now)
                if rate is not None:
                    out.append((metric, round(rate, 3), _unit(metric), labels))
        return out

    def disk_io(self, now: float) -> list[Sample]:
        out: list[Sample] = []
        for device, c in (psutil.disk_io_counters(perdisk=True) or {}).items():
            if _SKIP_DISKS.match(device):
                continue
            labels = {"device": device}
            counters = [
                ("host_disk_read_bytes_per_second", c.read_bytes),
                ("host_disk_write_bytes_per_second", c.write_bytes),
                ("host_disk_read_ops_per_second", c.read_count),
                ("host_disk_write_ops_per_second", c.write_count),
            ]
            for metric, value in counters:
                rate = self.rates.rate((metric, device), float(value), now)
                if rate is not None:
                    out.append((metric, round(rate, 3), _unit(metric), labels))
            busy_ms = getattr(c, "busy_time", None)
            if busy_ms is not None:
                rate = self.rates.rate(("busy", device), float(busy_ms), now)
                if rate is not None:  # ms busy per second -> percent
                    out.append(("host_disk_busy_percent", round(min(100.0, rate / 10.0), 3), "percent", labels))
        return out

    def disk_usage(self, now: float) -> list[Sample]:  # noqa: ARG002 - same signature as the others
        out: list[Sample] = []
        seen: set[str] = set()
        for part in psutil.disk_partitions(all=False):
            if part.fstype in _SKIP_FS or part.mountpoint in seen:
                continue
            seen.add(part.mountpoint)
            try:
                usage = psutil.disk_usage(part.mountpoint)
            except (PermissionError, OSError):
                continue
            labels = {"mount": part.mountpoint, "fstype": part.fstype}
            out += [
                ("host_filesystem_used_percent", float(usage.percent), "percent", labels),
                ("host_filesystem_used_bytes", float(usage.used), "bytes", labels),
                ("host_filesystem_free_bytes", float(usage.free), "bytes", labels),
                ("host_filesystem_total_bytes", float(usage.total), "bytes", labels),
            ]
        return out


@dataclasses.dataclass
class CollectorConfig:
    landing: str
    host: str = dataclasses.field(default_factory=socket.gethostname)
    cpu_interval: float = 1.0
    network_interval: float = 1.0
    disk_io_interval: float = 5.0
    disk_usage_interval: float = 30.0
    duration: float | None = None
    spool_dir: str | None = None
    endpoint_url: str | None = None
    include_loopback: bool = False
    tenant: str | None = None  # the `tenant` label of every sample (unless the host configuration names one)

    def __post_init__(self) -> None:
        if self.tenant is not None and (problem := tenant_problem(self.tenant)):
            raise ValueError(f"tenant {problem}")
        for name in ("cpu_interval", "network_interval", "disk_io_interval", "disk_usage_interval"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.05 <= value <= 3600):
                raise ValueError(f"{name} must be between 0.05 and 3600 seconds, got {value!r}")
        if self.duration is not None and self.duration <= 0:
            raise ValueError(f"duration must be positive, got {self.duration!r}")


@dataclasses.dataclass
class CollectorStats:
    ticks: int = 0
    samples: int = 0
    lines: int = 0
    bytes: int = 0  # written to landing files, headers and definitions included
    write_failures: int = 0
    uploaded: int = 0
    upload_failures: int = 0
    tick_seconds: list[float] = dataclasses.field(default_factory=list)


class Collector:
    """The agent loop. `run()` returns when the duration is over or `stop()` is called."""

    def __init__(self, config: CollectorConfig):
        self.config = config
        self.sampler = Sampler(include_loopback=config.include_loopback)
        self.stats = CollectorStats()
        self._stop = threading.Event()
        zone = open_landing(config.landing, endpoint_url=config.endpoint_url)
        if isinstance(zone, LocalLanding):
            self.remote = None
            spool = zone.root
        else:
            self.remote = zone
            spool = Path(config.spool_dir or Path.home() / ".metrics_pipeline" / "spool")
        self.files = MinuteFiles(spool, self._upload if self.remote else None, host=config.host,
                                 tenant=config.tenant)
        self.groups = [
            ("cpu", config.cpu_interval, self.sampler.cpu),
            ("network", config.network_interval, self.sampler.network),
            ("disk_io", config.disk_io_interval, self.sampler.disk_io),
            ("disk_usage", config.disk_usage_interval, self.sampler.disk_usage),
        ]

    def stop(self, *_args) -> None:
        self._stop.set()

    def _upload(self, key: str, path: Path) -> None:
        try:
            self.remote.write(key, path.read_bytes())
        except Exception as exc:  # noqa: BLE001 - keep the file, retry at the next minute
            self.stats.upload_failures += 1
            log.warning("upload of %s failed (%s); kept in the spool, retrying later", key, type(exc).__name__)
            return
        path.unlink(missing_ok=True)
        self.stats.uploaded += 1

    def _upload_spool(self) -> None:
        """Upload finished files left in the spool (by a crash or a failed upload)."""
        if self.remote is None or not self.files.spool.exists():
            return
        for path in sorted(self.files.spool.rglob("*.jsonl")):
            key = path.relative_to(self.files.spool).as_posix()
            if key != self.files._key:
                self._upload(key, path)

    def tick(self, now: float, due: list[Callable[[float], list[Sample]]]) -> None:
        samples: list[Sample] = []
        for sample in due:
            samples.extend(sample(now))
        if samples:
            try:
                self.stats.bytes += self.files.append(now, samples)
            except OSError as exc:  # a full or failing disk: this tick is lost, the next starts a new file
                self.stats.write_failures += 1
                log.warning("could not write a tick (%s); the next tick starts a new file", exc)
                return
            self.stats.lines += 1
            self.stats.samples += len(samples)

    def run(self) -> CollectorStats:
        self._upload_spool()
        start = time.time()
        deadline = start + self.config.duration if self.config.duration else None
        # Prime the counters so the first real tick can report rates.
        for _, _, sample in self.groups:
            sample(start)
        # The first tick is at least half an interval after priming, so its deltas mean something.
        next_due = {name: _next_boundary(start + interval / 2, interval) for name, interval, _ in self.groups}
        last_upload_check = start
        while not self._stop.is_set():
            wake = min(next_due.values())
            if deadline is not None and wake > deadline:
                break
            if self._stop.wait(max(0.0, wake - time.time())):
                break
            now = time.time()
            due = [fn for name, interval, fn in self.groups if next_due[name] <= now + 1e-3]
            started = time.perf_counter()
            self.tick(now, due)
            self.stats.tick_seconds.append(time.perf_counter() - started)
            self.stats.ticks += 1
            for name, interval, _ in self.groups:
                if next_due[name] <= now + 1e-3:
                    next_due[name] = _next_boundary(now, interval)
            if self.remote is not None and now - last_upload_check > 60:
                self._upload_spool()
                last_upload_check = now
        self.files.close()
        self._upload_spool()
        return self.stats


def _next_boundary(now: float, interval: float) -> float:
    """Next multiple of `interval` after `now`: samples land on round timestamps."""
    return (int(now / interval) + 1) * interval


def run_collector(config: CollectorConfig, stats_file: str | None = None) -> CollectorStats:
    """Run until the duration ends or SIGTERM/SIGINT, which flush and exit cleanly."""
    collector = Collector(config)
    signal.signal(signal.SIGTERM, collector.stop)
    signal.signal(signal.SIGINT, collector.stop)
    stats = collector.run()
    if stats_file:
        Path(stats_file).write_text(json.dumps(dataclasses.asdict(stats)))
    return stats
