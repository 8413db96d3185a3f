"""What `make dev` adds so alerts can be seen: a busy host, and a local Alertmanager.

* `demo-busy-1` is a simulated host whose samples land in the landing zone like an agent's (one
  file per minute, 1-second samples). Every hour its CPU climbs past 80 % at :10 for 8 minutes and
  past 95 % at :16 for 2 minutes, then recovers, so the host checks fail (warning, then critical)
  and the alerts table fills, then resolves, every hour (SPEC §6's scenario).
* Every demo host, like the agent `make dev` starts (`collect --tenant demo`), belongs to the demo
  tenant `DEMO_TENANT`, which also owns the local CloudWatch account (SPEC §12): a BI login or API
  key restricted to it sees the demo's data.
* If Alertmanager is installed (`prometheus-alertmanager`), one runs on 127.0.0.1:9093 with
  `alertmanager.example.yml`, and the delivery sensor sends to it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from metrics_pipeline.lib import settings
from metrics_pipeline.lib.host.agent import host_key

log = logging.getLogger(__name__)
BUSY_HOST = "demo-busy-1"
#: The tenant of the demo hosts and the demo CloudWatch account.
DEMO_TENANT = "demo"


def busy_cpu(ts: float) -> float:
    """CPU percent of the busy host at `ts`: quiet, then > 80 % from :10 to :18, > 95 % at :16-:17."""
    minute = (ts % 3600) / 60
    if 16 <= minute < 18:
        return 97.0 + math.sin(ts / 7)
    if 10 <= minute < 23:
        return 86.0 + 3 * math.sin(ts / 11)
    return 35.0 + 10 * math.sin(ts / 97)


def demo_cpu(host_index: int, ts: float) -> float:
    """CPU percent of demo host number `host_index` at `ts`; host 0 is the busy one."""
    if host_index == 0:
        return busy_cpu(ts)
    return 30.0 + 15 * math.sin(ts / (400 + 97 * host_index)) + host_index


def host_minute_lines(host: str, host_index: int, minute_start: int, tenant: str | None = DEMO_TENANT) -> str:
    """One minute of agent lines (JSON Lines, 1 s ticks: CPU, memory, one filesystem) of a demo host,
    written as by an agent started with `--tenant <tenant>` (None: without)."""
    lines = []
    for ts in range(minute_start, minute_start + 60):
        samples = [
            ["host_cpu_percent", round(demo_cpu(host_index, ts), 2), "percent", {}],
            ["host_memory_percent", round(62.0 + 2 * math.sin(ts / 300) + host_index, 2), "percent", {}],
            ["host_filesystem_used_percent", 55.0 + host_index, "percent", {"mount": "/", "fstype": "ext4"}],
        ]
        tick = {"ts": float(ts), "host": host, **({"tenant": tenant} if tenant else {}), "samples": samples}
        lines.append(json.dumps(tick))
    return "\n".join(lines) + "\n"


def busy_minute_lines(minute_start: int) -> str:
    """The agent-format lines (JSON Lines) of one minute of the busy host."""
    return host_minute_lines(BUSY_HOST, 0, minute_start)


class BusyHost(threading.Thread):
    """Writes the busy host's minute files like the agent does: the last `hours_back` at start, then
    the current minute's file growing every second (the live alert loop reads what is new)."""

    def __init__(self, url: str, hours_back: float = 2.0):
        super().__init__(name="demo-busy-host", daemon=True)
        self.url, self.hours_back = url, hours_back
        self.stopped = threading.Event()

    def run(self) -> None:
        from metrics_pipeline.lib.landing import open_landing

        zone = open_landing(self.url, endpoint_url=os.environ.get(settings.S3_ENDPOINT_ENV))
        minute = int((time.time() - self.hours_back * 3600) // 60 * 60)
        while not self.stopped.is_set():
            now = time.time()
            try:
                while minute + 60 <= now:  # finished minutes, whole
                    zone.write(host_key(BUSY_HOST, minute), busy_minute_lines(minute).encode())
                    minute += 60
                # The minute in progress: every second so far (the file grows as the agent's does).
                seconds = int(now) - minute
                if seconds > 0:
                    lines = busy_minute_lines(minute).splitlines(keepends=True)[:seconds]
                    zone.write(host_key(BUSY_HOST, minute), "".join(lines).encode())
            except Exception as exc:  # noqa: BLE001 - the demo goes on; the next second retries
                log.warning("busy host samples could not be written: %s", exc)
            self.stopped.wait(1)


def start_alertmanager(state: Path, port: int = 9093) -> subprocess.Popen | None:
    """A local Alertmanager for the demo, or None when it is not installed."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if binary is None:
        return None
    storage = state / "alertmanager"
    storage.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [binary, f"--config.file={settings.project_root() / 'alertmanager.example.yml'}", f"--storage.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
