"""Kafka landing files: their keys, their format, the reader, and the write that never overwrites.

Key, by the topic's format, where the format's hourly asset reads: job-log topics for
`ingestion_log_records`, measures and events topics for `custom_points` / `custom_events` (next to the
push API's files, in the directory of the topic's tenant, `lib/custom/files.tenant_dir`):

    ingestion_logs/kafka/<topic>/<YYYY-MM-DD>/<HH>/<topic>-<partition>-<first offset>-<last offset>.kafka
    custom/measures/<YYYY-MM-DD>/<HH>/<tenant dir>/<topic>-<partition>-<first offset>-<last offset>.kafka
    custom/events/<YYYY-MM-DD>/<HH>/<tenant dir>/<topic>-<partition>-<first offset>-<last offset>.kafka

dated by the minute the consumer wrote it (UTC), offsets zero-padded to 19 digits so that keys sort
by offset. The name carries the topic-partition and the offset range, so two consumers never write
the same name with different content, and a message redelivered after a crash lands in a second
file whose range overlaps the first: the loaders keep one copy of each (topic, partition, offset).

Format: the consumer does not parse what it reads (that would cost more than everything else it
does); it frames each message's value as it came, and the loaders judge it. A header line, then per
message a frame line and the value's bytes:

    {"kafka_landing":1,"topic":"job-logs","partition":3,"format":"job_logs","tenant":null,"first":1200,"last":1202,"messages":3}
    {"o":1200,"t":1767618000123,"n":412}
    <the 412 bytes of the value>
    {"o":1201,"t":1767618000125,"n":-1}              <- a null value (a tombstone): nothing follows
    {"o":1202,"t":1767618000200,"n":10000,"size":2500000}
    <the first 10,000 bytes of a value over the size limit>

`t` is the message's timestamp (epoch milliseconds, -1 when it has none). A value can hold any
bytes, newlines included: the frame's length, not a newline, ends it (a newline follows for people
reading the file). The same messages always give the same bytes, so a rewrite would change nothing;
files are still written once (`write_once` refuses to replace a file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from metrics_pipeline.lib.landing import TMP_PREFIX, fsync_dir, make_dirs_durably

VERSION = 1
SUFFIX = ".kafka"
#: where each format's files go: under the prefix its loader lists
PREFIXES = {"job_logs": "ingestion_logs/kafka/", "measures": "custom/measures/", "events": "custom/events/"}
#: bytes of an oversized value kept as its excerpt
EXCERPT_BYTES = 10_000
TMP_FILE_PREFIX = f"{TMP_PREFIX}kafka-"
_FRAME = re.compile(rb'\{"o":(\d+),"t":(-?\d+),"n":(-?\d+)(?:,"size":(\d+))?\}\n')
_NAME = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)-(?P<partition>\d+)-(?P<first>\d{19})-(?P<last>\d{19})(~[0-9a-f]{12})?\.kafka$")


class DamagedFile(ValueError):
    """A Kafka landing file that is not what the consumer writes (truncated or edited by hand)."""


def file_key(fmt: str, topic: str, partition: int, first: int, last: int, written: float,
             tenant: str | None = None) -> str:
    """Landing key of the file holding offsets [first, last] of a topic-partition, written at `written`
    (measures and events: in the directory of the topic's `tenant`)."""
    tm = time.gmtime(written)
    name = f"{topic}-{partition}-{first:019d}-{last:019d}{SUFFIX}"
    if fmt == "job_logs":
        return f"{PREFIXES[fmt]}{topic}/{time.strftime('%Y-%m-%d/%H', tm)}/{name}"
    if tenant is None:
        raise ValueError(f"a {fmt} topic's files go to its tenant's directory: no tenant given")
    from metrics_pipeline.lib.custom.files import tenant_dir  # custom/ imports this module

    return f"{PREFIXES[fmt]}{time.strftime('%Y-%m-%d/%H', tm)}/{tenant_dir(tenant)}/{name}"


def is_kafka_key(key: str) -> bool:
    """Whether a landing key names a Kafka landing file (of any format)."""
    return key.endswith(SUFFIX) and any(key.startswith(p) for p in PREFIXES.values())


def parse_key(key: str) -> tuple[str, int, int, int] | None:
    """(topic, partition, first, last) from a Kafka landing key, None for another key."""
    match = _NAME.match(key.rsplit("/", 1)[-1])
    if not match:
        return None
    return match["topic"], int(match["partition"]), int(match["first"]), int(match["last"])


def header(topic: str, partition: int, fmt: str, tenant: str | None, first: int, last: int, messages: int) -> bytes:
    return (json.dumps({"kafka_landing": VERSION, "topic": topic, "partition": partition, "format": fmt,
                        "tenant": tenant, "first": first, "last": last, "messages": messages},
                       separators=(",", ":")) + "\n").encode()


def frame(offset: int, timestamp_ms: int, value: bytes | None, max_bytes: int) -> bytes:
    """One message's frame line and value (`max_bytes`: larger values keep an excerpt only)."""
    if value is None:
        return b'{"o":%d,"t":%d,"n":-1}\n' % (offset, timestamp_ms)
    size = len(value)
    if size > max_bytes:
        excerpt = value[:EXCERPT_BYTES]
        return b'{"o":%d,"t":%d,"n":%d,"size":%d}\n%s\n' % (offset, timestamp_ms, len(excerpt), size, excerpt)
    return b'{"o":%d,"t":%d,"n":%d}\n%s\n' % (offset, timestamp_ms, size, value)


@dataclasses.dataclass(slots=True)
class Message:
    offset: int
    timestamp_ms: int  # -1: none
    value: bytes | None  # None: a tombstone; an excerpt when `oversized`
    size: int  # the value's size as produced (-1 for a tombstone)
    oversized: bool = False  # over the consumer's size limit: `value` is an excerpt of at most EXCERPT_BYTES

    @property
    def timestamp(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, timezone.utc) if self.timestamp_ms >= 0 else None


@dataclasses.dataclass(frozen=True)
class KafkaFile:
    topic: str
    partition: int
    format: str
    tenant: str | None
    messages: list[Message]

    def address(self, offset: int) -> str:
        """A message's name in the warehouse (`source_file` of its rows and quarantine rows)."""
        return f"kafka:{self.topic}/{self.partition}/{offset}"


def read_file(data: bytes) -> KafkaFile:
    """The messages of a Kafka landing file.

    Raises:
        DamagedFile: the bytes are not a complete file as the consumer writes them.
    """
    end = data.find(b"\n")
    try:
        head = json.loads(data[:end]) if end > 0 else None
    except ValueError:
        head = None
    if not isinstance(head, dict) or head.get("kafka_landing") != VERSION:
        raise DamagedFile("not a Kafka landing file (no header line)")
    try:
        topic, partition, fmt = str(head["topic"]), int(head["partition"]), str(head["format"])
        tenant, count = head.get("tenant"), int(head["messages"])
    except (KeyError, TypeError, ValueError):
        raise DamagedFile("the header line lacks topic, partition, format or messages") from None
    messages = []
    position = end + 1
    match = _FRAME.match
    while position < len(data):
        found = match(data, position)
        if found is None:
            raise DamagedFile(f"no message frame at byte {position} (after {len(messages)} message(s))")
        offset, stamp, length = int(found[1]), int(found[2]), int(found[3])
        position = found.end()
        if length < 0:
            messages.append(Message(offset, stamp, None, -1))
            continue
        value_end = position + length
        if value_end + 1 > len(data) or data[value_end] != 0x0A:
            raise DamagedFile(f"the value of offset {offset} is cut short")
        oversized = found[4] is not None
        messages.append(Message(offset, stamp, data[position:value_end], int(found[4]) if oversized else length,
                                oversized))
        position = value_end + 1
    if len(messages) != count:
        raise DamagedFile(f"{len(messages)} message(s) where the header says {count}")
    offsets = [m.offset for m in messages]
    if offsets != sorted(set(offsets)) or (offsets and (offsets[0], offsets[-1]) != (head.get("first"), head.get("last"))):
        raise DamagedFile("the message offsets disagree with the header's range")
    return KafkaFile(topic, partition, fmt, tenant, messages)


def write_once(root: Path, path: Path, data: bytes) -> Path | None:
    """Make `data` durable at `path` (under `root`), never replacing a file. Returns where it was
    written, or None when a file there holds these very bytes already (a redelivered range).

    The bytes go to a temporary file in the same directory (never listed), are fsync'd, and are
    linked to their name, which fails rather than replace an existing file; then the directory is
    fsync'd, and so is the parent of every directory created on the way, so that neither the file
    nor its directory can vanish in a power cut after the offsets are committed. A file of that
    name with other bytes means the offsets were reused (a topic deleted and created again, a
    broker whose storage was reset): the data goes next to it, under the name tagged `~<digest>`.
    """
    make_dirs_durably(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=TMP_FILE_PREFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        target = path
        for _ in range(2):
            try:
                os.link(tmp, target)
                break
            except FileExistsError:
                if target.read_bytes() == data:
                    return None  # the same offsets of the same partition, written before
                target = path.with_name(f"{path.name.removesuffix(SUFFIX)}~{hashlib.sha256(data).hexdigest()[:12]}{SUFFIX}")
        else:
            return None  # the tagged name holds these bytes too
    finally:
        Path(tmp).unlink(missing_ok=True)
    fsync_dir(path.parent)
    return target


def remove_stale_temporaries(directory: Path, older_than_s: float = 600.0) -> int:
    """Delete the temporary files a killed consumer left under `directory`; returns how many."""
    removed = 0
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    for path in directory.rglob(f"{TMP_FILE_PREFIX}*"):
        try:
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError:
            continue
    return removed
