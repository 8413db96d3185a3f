"""Cost of the host agent at 1-second sampling (SPEC §8 "Collector").

    python benchmarks/collector.py [--seconds 60]

Runs `metrics-pipeline collect` for the given time at the default intervals (1 s CPU/memory/network,
5 s disk I/O, 30 s disk usage) into a temporary landing directory, and, at the same time, a reference:
a bare Python loop making the same psutil reads once a second and writing nothing (the floor any
psutil agent pays). Reports for both: CPU % of one core in steady state (after a 5 s warm-up, as an
agent that runs for months sees it) and over the whole run including start-up, peak RSS; for the
agent also the per-tick latency p50/p99 (sampling + JSON + write + fsync). Targets: <= 0.5 % of a
core, <= 60 MB RSS, p99 < 100 ms. Appends a row to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from common import ROOT, append_result

REFERENCE = """
import os, time, psutil
end = time.time() + float(os.environ["SECONDS_TO_RUN"])
while time.time() < end:
    psutil.cpu_times(); os.getloadavg(); psutil.virtual_memory(); psutil.swap_memory()
    psutil.net_io_counters(pernic=True)
    time.sleep(1 - time.time() % 1)
"""

WARMUP = 5.0


def measure(command: list[str], seconds: float, env: dict[str, str]) -> dict[str, float]:
    started = time.time()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    handle = psutil.Process(proc.pid)
    time.sleep(WARMUP)
    warm = handle.cpu_times()
    warm_at = time.time()
    time.sleep(max(0.0, seconds - WARMUP - 1.0))
    late = handle.cpu_times()
    late_at = time.time()
    peak_mb = _peak_rss_mb(handle)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - started
    steady = (late.user + late.system - warm.user - warm.system) / (late_at - warm_at) * 100
    total = (usage.ru_utime + usage.ru_stime) / wall * 100
    return {"steady_cpu_pct": steady, "total_cpu_pct": total, "peak_rss_mb": peak_mb, "exit": status}


def _peak_rss_mb(handle: psutil.Process) -> float:
    """The process's own high-water RSS (VmHWM). Not ru_maxrss: on Linux that also counts the forking
    parent's memory from before exec, so it would measure this benchmark, not the agent."""
    try:
        for line in open(f"/proc/{handle.pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return handle.memory_info().rss / 1024 / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stats_file = Path(tmp) / "stats.json"
        agent = [
            sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(Path(tmp) / "landing"),
            "--duration", str(args.seconds), "--stats-file", str(stats_file), "--host-name", "bench",
        ]
        reference = [sys.executable, "-c", REFERENCE]
        env = {**os.environ, "SECONDS_TO_RUN": str(args.seconds), "PYTHONPATH": str(ROOT)}
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:
            agent_future = pool.submit(measure, agent, args.seconds, env)
            ref_future = pool.submit(measure, reference, args.seconds, env)
            ours, ref = agent_future.result(), ref_future.result()
        stats = json.loads(stats_file.read_text())

    ticks = sorted(stats["tick_seconds"])
    p50 = ticks[len(ticks) // 2] * 1000
    p99 = ticks[min(len(ticks) - 1, int(len(ticks) * 0.99))] * 1000
    print(f"agent    : {ours['steady_cpu_pct']:.2f} % of a core steady ({ours['total_cpu_pct']:.2f} % with start-up), "
          f"peak RSS {ours['peak_rss_mb']:.1f} MB, {stats['ticks']} ticks, {stats['samples']} samples, "
          f"tick latency p50 {p50:.2f} ms p99 {p99:.2f} ms")
    print(f"reference: {ref['steady_cpu_pct']:.2f} % of a core steady ({ref['total_cpu_pct']:.2f} % with start-up), "
          f"peak RSS {ref['peak_rss_mb']:.1f} MB (bare psutil reads, nothing written)")
    if not args.no_write:
        append_result(
            "collector", f"{args.seconds:.0f} s at 1 s sampling, {stats['samples'] / max(stats['ticks'], 1):.0f} samples/tick",
            f"{ours['steady_cpu_pct']:.2f} % core steady ({ours['total_cpu_pct']:.2f} % incl. start-up), "
            f"{ours['peak_rss_mb']:.1f} MB RSS, tick p50 {p50:.1f} ms / p99 {p99:.1f} ms",
            f"bare psutil loop {ref['steady_cpu_pct']:.2f} % core, {ref['peak_rss_mb']:.1f} MB",
            f"{ours['steady_cpu_pct'] / max(ref['steady_cpu_pct'], 1e-9):.1f} x CPU",
        )


if __name__ == "__main__":
    main()
