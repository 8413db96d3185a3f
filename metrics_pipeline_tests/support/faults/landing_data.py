"""Cheap, known landing-zone content for the fault tests: host minute files and ingestion-log records."""

from __future__ import annotations

import gzip
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LandingZone
from metrics_pipeline_tests.support.ingestion_logs import good


def tick(host: str, ts: float, value: float) -> bytes:
    """One collector line: three samples of `host` at `ts`."""
    samples = [
        ["host_cpu_percent", value, "percent", {}],
        ["host_memory_percent", 50.0, "percent", {}],
        ["host_filesystem_used_percent", 42.0, "percent", {"mount": "/", "fstype": "ext4"}],
    ]
    return json.dumps({"ts": ts, "host": host, "samples": samples}, separators=(",", ":")).encode() + b"\n"


def host_minute(host: str, minute: datetime, seconds: int = 60, step: int = 1) -> tuple[str, bytes, int]:
    """(landing key, bytes, points) of one host's minute file, one tick every `step` seconds."""
    data = b"".join(tick(host, minute.timestamp() + s, float(s % 100)) for s in range(0, seconds, step))
    return host_key(host, minute.timestamp()), data, 3 * len(range(0, seconds, step))


def write_host_hour(zone: LandingZone, hour: datetime, hosts=("web-1", "web-2"), minutes: int = 3,
                    step: int = 1) -> int:
    """Write `minutes` minute files per host for `hour`; returns the points they hold."""
    points = 0
    for host in hosts:
        for m in range(minutes):
            key, data, n = host_minute(host, hour + timedelta(minutes=m), step=step)
            zone.write(key, data)
            points += n
    return points


def record(start: datetime, seconds: int = 60, **changes) -> dict:
    """A valid ingestion-log record (the jobs' French field names) starting at `start`."""
    return good(**{
        "No_Sequence": start.strftime("%Y-%m-%d-%H-%M"), "Date_Sequence": start.strftime("%Y-%m-%d"),
        "Heure_Sequence": start.strftime("%H"), "Minute_Sequence": start.strftime("%M"),
        "Debut": start.strftime("%Y-%m-%d %H:%M:%S"),
        "Fin": (start + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S"),
        "Duree secondes": seconds, **changes,
    })


def jsonl(records: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def write_plain(path: Path, data: bytes) -> None:
    """A producer that just writes (no temp file, no fsync): the cheap way to make thousands of files."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)
