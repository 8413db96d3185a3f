"""The compact landing format of host samples (format 2): each series named once per file, then values.

The agent (`lib/host/agent.py`) writes one file per host, minute and writer process. Every record is
one line of JSON, so the file is JSON Lines and a torn write can only damage its last line:

    {"format":"mp-host/2","host":"web-1","tenant":"acme","t0":1767258000}     header (tenant optional)
    ["s",0,"host_cpu_percent","percent",{}]                                     series 0: metric, unit, labels
    ["s",1,"host_cpu_state_percent","percent",{"state":"user"}]
    ["l",0,[0,1]]                                                               layout 0: series 0 and 1, in order
    [0,1002,63.131,25.253]                                                      tick: layout 0, t0 + 1.002 s, values

A tick names its layout (the ordered series its samples belong to: the 1-second groups, plus disk
I/O every 5 s, plus disk usage every 30 s, are three layouts) and its time in milliseconds after
`t0` (the file's minute), then only values: a sample costs its digits and a comma (about 6 bytes,
against 65 in format 1, `{"ts":..., "host":..., "samples": [[metric, value, unit, {labels}], ...]}`).
Integral values are written without ".0". Series and layouts are defined on the line before their
first use, so a definition always precedes the ticks that need it.

Crash safety (SPEC §2.3, §12): the agent writes each tick (its new definitions and its value line)
with one write() and fsyncs it; a reader stops at the last newline, so a torn file loses at most its
last tick. A writer never appends to a file it did not create itself (files are opened with
O_EXCL, and a write that fails half-way makes the writer start a new file), so a restarted agent
never continues after a torn tail. Incremental reads (the hour in progress, `lib/host/live.py`) take
the complete lines after a byte offset; the definitions those lines use are found before the offset
by a byte search for lines starting `["` (ticks start with a digit), without decoding the ticks.

This module is the writer's half (`Encoder`, and `MinuteFiles`, the agent's files) and imports only the
standard library: the agent stays small. The reader is `lib/host/batch.py`.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from metrics_pipeline.lib.landing import fsync_dir

FORMAT = "mp-host/2"
#: Every format-2 file starts with these bytes (the header's first key); format 1 starts with `{"ts"`.
MAGIC = b'{"format":"mp-host/2"'
_DUMPS = json.JSONEncoder(separators=(",", ":")).encode  # ASCII: any string survives, lone surrogates too
_HOST_SAFE = re.compile(r"[^A-Za-z0-9._-]")
#: Integral values below this are written as integers (exact in a double, and in orjson's int64).
_INT_LIMIT = 2.0 ** 53


def _number(value):
    if type(value) is float and value.is_integer() and -_INT_LIMIT < value < _INT_LIMIT:
        return int(value)
    return value


class Encoder:
    """Encodes the ticks of one file: `header()` once, then `tick()` per tick, in time order.

    Args:
        host: the host name every sample of the file belongs to.
        t0: the file's base time, whole epoch seconds (the agent uses the minute's start).
        tenant: the agent's `--tenant`, or None.
    """

    def __init__(self, host: str, t0: int, tenant: str | None = None):
        self.host, self.t0, self.tenant = host, int(t0), tenant
        self._series: dict[tuple, int] = {}
        self._layouts: dict[tuple[int, ...], int] = {}

    def header(self) -> bytes:
        head = {"format": FORMAT, "host": self.host}
        if self.tenant is not None:
            head["tenant"] = self.tenant
        head["t0"] = self.t0
        return _DUMPS(head).encode() + b"\n"

    def tick(self, ts: float, samples) -> bytes:
        """The lines of one tick: definitions of what is new in it, then its value line.

        Args:
            ts: epoch seconds; kept to the millisecond.
            samples: (metric, value, unit, labels) tuples, as `agent.Sampler` returns them.
        """
        out = []
        ids = []
        values = []
        for metric, value, unit, labels in samples:
            key = (metric, unit, tuple(sorted(labels.items())) if labels else ())
            sid = self._series.get(key)
            if sid is None:
                sid = self._series[key] = len(self._series)
                out.append(_DUMPS(["s", sid, metric, unit, labels or {}]))
            ids.append(sid)
            values.append(_number(value))
        layout = tuple(ids)
        lid = self._layouts.get(layout)
        if lid is None:
            lid = self._layouts[layout] = len(self._layouts)
            out.append(_DUMPS(["l", lid, ids]))
        offset = round((ts - self.t0) * 1000) if math.isfinite(ts) else 0
        out.append(_DUMPS([lid, offset, *values]))
        out.append("")
        return "\n".join(out).encode()


def encode_file(host: str, t0: int, ticks, tenant: str | None = None) -> bytes:
    """A whole format-2 file of `ticks` ((ts, samples) pairs): what the agent would have written."""
    encoder = Encoder(host, t0, tenant)
    return encoder.header() + b"".join(encoder.tick(ts, samples) for ts, samples in ticks)


def host_dir(host: str) -> str:
    """The landing directory of `host`'s files: its name with every character outside
    `A-Za-z0-9._-` written as `_`. Tenant rules of the host configuration match this name."""
    return _HOST_SAFE.sub("_", host) or "unknown"


def host_key(host: str, ts: float, writer: str | None = None) -> str:
    """Landing key of the minute file holding a sample taken at `ts` (UTC). Without `writer`, the
    name of format 1 (older agents, other writers of that format); the agent names its writer."""
    tm = time.gmtime(ts)
    safe = host_dir(host)
    suffix = f"-{writer}" if writer else ""
    return (
        f"host/{time.strftime('%Y-%m-%d', tm)}/{time.strftime('%H', tm)}/{safe}/"
        f"{safe}-{time.strftime('%Y%m%dT%H%M', tm)}{suffix}.jsonl"
    )


class MinuteFiles:
    """Writes ticks to this process's file of the current minute; hands finished files to `on_closed`.

    A file is created with O_EXCL (never opened if it exists: a predecessor with the same pid may
    have left a torn tail there) and written only by this object; a write that fails or is short
    closes it, and the next tick starts a new file (`.1`, `.2`, ... after the writer's name)."""

    def __init__(self, spool: Path, on_closed: Callable[[str, Path], None] | None = None, *,
                 host: str = "", tenant: str | None = None, writer: str | None = None, fsync: bool = True):
        self.spool = spool
        self.fsync = fsync  # off only where durability does not matter (benchmarks making many hosts' files)
        self.on_closed = on_closed
        self.host, self.tenant = host, tenant
        self.writer = writer or f"p{os.getpid()}"
        self._key: str | None = None
        self._minute: int | None = None
        self._fd: int | None = None
        self._encoder: Encoder | None = None

    def _open(self, ts: float) -> None:
        minute = int(ts // 60) * 60
        for attempt in range(1000):
            writer = self.writer if attempt == 0 else f"{self.writer}.{attempt}"
            key = host_key(self.host, ts, writer)
            path = self.spool / key
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileExistsError:
                continue
            if self.fsync:
                fsync_dir(path.parent)
            self._key, self._minute = key, minute
            self._encoder = Encoder(self.host, minute, self.tenant)
            return
        raise OSError(f"no free file name for {self.host} at {ts}")

    def _write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self.close()  # a torn tail is never appended to: the next tick starts a new file
            raise

    def append(self, ts: float, samples) -> int:
        """Write one tick (fsync'd), with the file's header when it is the first; returns the bytes written."""
        header = b""
        if self._fd is None or int(ts // 60) * 60 != self._minute:
            self.close()
            self._open(ts)
            header = self._encoder.header()
        data = header + self._encoder.tick(ts, samples)
        self._write(data)
        return len(data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            if self.on_closed is not None:
                self.on_closed(self._key, self.spool / self._key)
        self._fd, self._key, self._minute, self._encoder = None, None, None, None
