"""The hour in progress, loaded as it grows: what is new since the last load, and nothing else.

The agent appends one line a second to its current minute file (fsync'd). Every live load lists
the host files of the hour in progress (and of the previous hour, whose last files may still be
completing), and for each file reads only the complete lines after the offset recorded in
`live_offsets` (format 2 files: with the header and definitions before that offset), so the work
of a load is proportional to what landed since the previous one. The lines are written with the
loader's "append" scope (inserted, or updating a stored value; nothing is deleted) and the offsets
advance in the same transaction: a crash leaves both as they were, and the next load reads the same
lines again (idempotent: the same rows). A partial last line is left for the next load. Samples
stamped outside their file's hour are dropped (and counted), as the closed-hour run drops them.
Tenants are given exactly as the closed-hour run gives them (`HostBatch`, the same host
configuration), so both paths write the same series.

With each offset go a CRC-32 of the bytes loaded so far and the tenant the configuration gave the
file (`lib/host/offsets.py`, migration 0023). A file whose loaded bytes
changed (rewritten) is read again from its start and its offset marked untrusted. The closed-hour
run (`files.load_window`) uses them to read only what this path did not load when every file of the
hour is unchanged where it was loaded; otherwise it replaces the whole window with exactly what the
files hold. This path never marks anything processed.
"""

from __future__ import annotations

import dataclasses
import zlib
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.host.batch import HostBatch, host_dir_of_key
from metrics_pipeline.lib.host.config import HostConfig, load_config
from metrics_pipeline.lib.host.files import SOURCE, files_for_window
from metrics_pipeline.lib.host.offsets import (  # noqa: F401 - KIND re-exported
    KEEP_OFFSETS,
    KIND,
    Offset,
    file_hour,
    prefix_unchanged,
    read_offsets,
    record_offsets,
)
from metrics_pipeline.lib.landing import LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

#: The previous hour is still read this long after it closed (its last minute file completes).
PREVIOUS_HOUR_GRACE = timedelta(minutes=5)
@dataclasses.dataclass(frozen=True)
class LiveLoad:
    """What one live load did."""

    load: LoadResult | None
    files: int  # files with new complete lines
    new_bytes: int
    batch: HostBatch

    @property
    def first_ts(self) -> datetime | None:
        return self.load.first_ts if self.load else None

    @property
    def last_ts(self) -> datetime | None:
        return self.load.last_ts if self.load else None


def _hours(now: datetime) -> tuple[datetime, datetime]:
    current = now.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    first = current - timedelta(hours=1) if now - current < PREVIOUS_HOUR_GRACE else current
    return first, current + timedelta(hours=1)


def load_new(warehouse: Warehouse, zone: LandingZone, now: datetime | None = None,
             config: HostConfig | None = None) -> LiveLoad:
    """Load the complete lines that landed since the last live load, for the hour in progress.
    `config`: the tenant rules (None: the configured file, `lib.host.config.load_config`)."""
    now = now or datetime.now(timezone.utc)
    config = config if config is not None else load_config()
    lo, hi = _hours(now)
    objects = files_for_window(zone, lo, hi)
    schema = warehouse.schema
    with warehouse.connect() as conn:
        done = read_offsets(conn, schema, since=lo)
    nothing = Offset(0, None, None, None)
    grown = [obj for obj in objects if obj.size != done.get(obj.key, nothing).loaded_bytes]
    batch = HostBatch(config)
    advanced, new_bytes = [], 0
    for obj, (_, data) in zip(grown, read_many(zone, grown)):
        if isinstance(data, RefusedObject):
            batch.problems["refused_files"] += 1
            continue
        before = done.get(obj.key, nothing)
        offset, trusted = before.loaded_bytes, True
        if offset and not prefix_unchanged(data, before):
            # Rewritten (shorter, or different bytes where it was loaded from; rows of this table from
            # before migration 0023 cannot tell): read it again from the start, and leave the window to
            # the closed-hour run, which replaces it (what was loaded from the old bytes stays until then).
            offset, trusted = 0, False
        trusted = trusted and (before.loaded_bytes == 0 or before.prefix_crc is not None)
        complete = data.rfind(b"\n", offset) + 1  # up to the last complete line
        if complete <= offset:
            continue
        batch.read(data, obj.key, start=offset, stop=complete, within=file_hour(obj.key))
        crc = zlib.crc32(memoryview(data)[:complete]) if trusted else None
        directory = host_dir_of_key(obj.key)
        advanced.append((obj, complete, crc, config.tenant_of(directory) if directory is not None else None))
        new_bytes += complete - offset

    def record(conn) -> None:
        record_offsets(conn, schema, advanced)
        conn.execute(f"DELETE FROM {schema}.live_offsets WHERE kind = %s AND hour < %s", (KIND, lo - KEEP_OFFSETS))

    if not advanced:
        with warehouse.connect() as conn:
            record(conn)
        return LiveLoad(None, 0, 0, batch)
    frame = batch.frame()
    if frame.empty:
        with warehouse.connect() as conn, conn.transaction():
            record(conn)
        return LiveLoad(None, len(advanced), new_bytes, batch)
    ts = frame["ts"]
    start = ts.min().to_pydatetime()
    end = ts.max().to_pydatetime() + timedelta(microseconds=1)
    result = load_points(warehouse, frame, source=SOURCE, start=start, end=end, scope="append",
                         out_of_window="drop", in_transaction=record)
    return LiveLoad(result, len(advanced), new_bytes, batch)
