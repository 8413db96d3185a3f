"""Custom landing files: their keys, their line format, and the reader the loaders use.

Key: `custom/<kind>/<YYYY-MM-DD>/<HH>/<tenant dir>/<tenant dir>-<YYYYmmddTHHMM>-<writer>-<seq>.jsonl`
by receipt time (UTC). A batch is one JSON line per item then `{"committed":N}`; whatever follows
the last commit line is a torn tail (a writer died mid-batch) and is never read. The writer, and
why the format is so, are in `landing.py`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from metrics_pipeline.lib.custom.validate import Event, Measure

Kind = Literal["measures", "events"]
KINDS = ("measures", "events")
PREFIX = "custom/"
#: the characters a tenant directory (and a writer id) keeps as they are
SAFE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_MAX_DIR_CHARS = 100
_COMMIT = b'{"committed":%d}\n'


class CorruptLanding(ValueError):
    """A landing file holds complete lines that are not ours (never written by PushWriter)."""


# -- keys ------------------------------------------------------------------------------------------

def tenant_dir(tenant: str) -> str:
    """The directory (and file-name prefix) of `tenant`'s files: letters, digits and `._-` kept,
    every other byte `%XX`, a leading dot escaped; past 100 characters cut and tagged `~<digest>`."""
    encoded = "".join(c if c in SAFE_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in tenant)
    if encoded.startswith("."):
        encoded = "%2E" + encoded[1:]  # `.`, `..`, `.tmp-`: never a hidden or special name
    if len(encoded) > _MAX_DIR_CHARS:
        cut = 80
        while "%" in encoded[cut - 2:cut]:  # never inside a %XX
            cut -= 1
        encoded = f"{encoded[:cut]}~{hashlib.sha256(tenant.encode('utf-8')).hexdigest()[:16]}"
    return encoded


def file_key(kind: Kind, tenant: str, received: float, writer: str, seq: int) -> str:
    """Landing key of the file for a batch of `tenant`'s `kind` received at `received` (epoch s)."""
    tm = time.gmtime(received)
    directory = tenant_dir(tenant)
    return (f"{PREFIX}{kind}/{time.strftime('%Y-%m-%d/%H', tm)}/{directory}/"
            f"{directory}-{time.strftime('%Y%m%dT%H%M', tm)}-{writer}-{seq:06d}.jsonl")


def hour_prefix(kind: Kind, hour: datetime) -> str:
    """Prefix of every `kind` file received in the hour starting at `hour`."""
    return f"{PREFIX}{kind}/{hour.astimezone(timezone.utc):%Y-%m-%d/%H}/"


def hour_of_key(key: str) -> datetime | None:
    """The UTC hour of receipt of a custom landing file, from its key (None for a foreign key)."""
    parts = key.split("/")
    if len(parts) != 6 or parts[0] != "custom" or parts[1] not in KINDS:
        return None
    try:
        return datetime.strptime(f"{parts[2]} {parts[3]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def writer_of(path: Path) -> str | None:
    """The writer id in a spool file's name (`<dir>-<minute>-<writer>-<seq>.jsonl`)."""
    name = path.name.removesuffix(".jsonl")
    head = f"{path.parent.name}-"
    if not name.startswith(head) or len(name) < len(head) + 15:
        return None
    writer, _, seq = name[len(head) + 14:].rpartition("-")
    return writer if writer and seq.isdigit() else None


# -- lines -----------------------------------------------------------------------------------------

def rfc3339(ts: datetime) -> str:
    """`2026-01-05T13:00:00.123456Z`: UTC, always six fraction digits."""
    if ts.tzinfo is not timezone.utc:
        ts = ts.astimezone(timezone.utc)
    return ts.isoformat(timespec="microseconds")[:-6] + "Z"


#: one encoder, built once: json.dumps(..., separators=...) would build one per call
_encode = json.JSONEncoder(separators=(",", ":")).encode


def encode_batch(tenant: str, kind: Kind, items: Sequence[Measure] | Sequence[Event], received_at: datetime) -> bytes:
    """The bytes of one batch: a JSON line per item, then the commit line.

    Names, metadata maps and units repeat within a batch: each distinct one is encoded once."""
    head = '{"tenant":' + _encode(tenant) + ',"name":'
    tail = ',"received_at":"' + rfc3339(received_at) + '"}\n'
    names: dict[str, str] = {}
    maps: dict[tuple, str] = {}
    lines = []
    for item in items:
        name = names.get(item.name)
        if name is None:
            name = names[item.name] = _encode(item.name)
        shape = tuple(item.metadata.items())
        metadata = maps.get(shape)
        if metadata is None:
            metadata = maps[shape] = _encode(item.metadata)
        if kind == "measures":
            unit = names.get(item.unit)
            if unit is None:
                unit = names[item.unit] = _encode(item.unit)
            lines.append(f'{head}{name},"value":{float(item.value)!r},"ts":"{rfc3339(item.ts)}",'
                         f'"metadata":{metadata},"unit":{unit}{tail}')
        else:
            lines.append(f'{head}{name},"ts":"{rfc3339(item.ts)}","metadata":{metadata},"text":{_encode(item.text)}{tail}')
    return "".join(lines).encode("utf-8") + _COMMIT % len(lines)


@dataclasses.dataclass
class LandingRead:
    """What a custom landing file (or the part of it from some offset) holds."""

    items: list[dict]
    #: bytes after the last commit line were skipped: a half line, or lines of an unfinished batch
    torn: bool
    #: complete lines skipped inside the file (not JSON objects, or a batch its commit line disowns)
    corrupt_lines: int
    #: offset just after the last commit line: where an incremental load resumes
    end: int


def read_landing(data: bytes) -> LandingRead:
    """The items of every committed batch in `data`; a torn tail is skipped, corrupt lines counted."""
    items: list[dict] = []
    pending: list[dict] = []
    broken = 0  # lines of the pending batch that did not parse
    corrupt = 0
    start = end = 0
    while (newline := data.find(b"\n", start)) >= 0:
        line = data[start:newline]
        start = newline + 1
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            broken += 1
        elif "committed" in record and "name" not in record:
            if record["committed"] == len(pending) and not broken:
                items += pending
            else:
                corrupt += len(pending) + broken
            pending, broken, end = [], 0, start
        else:
            pending.append(record)
    return LandingRead(items, torn=end < len(data), corrupt_lines=corrupt, end=end)


def read_items(data: bytes) -> tuple[list[dict], bool]:
    """The items of the complete (committed) batches in `data`, and whether a torn tail was skipped.

    Raises CorruptLanding when complete lines inside the file are not ours; `read_landing` counts them instead.
    """
    read = read_landing(data)
    if read.corrupt_lines:
        raise CorruptLanding(f"{read.corrupt_lines} complete line(s) are not committed custom items")
    return read.items, read.torn
