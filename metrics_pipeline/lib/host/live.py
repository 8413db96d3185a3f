"""The hour in progress, loaded as it grows: what is new since the last load, and nothing else.

The agent appends one line a second to the current minute's file (fsync'd). Every live load lists
the host files of the hour in progress (and of the previous hour, whose last files may still be
completing), and for each file reads only the complete lines after the offset recorded in
`live_offsets`, so the work of a load is proportional to what landed since the previous one. The
lines are written with the loader's "append" scope (inserted, or updating a stored value; nothing is
deleted) and the offsets advance in the same transaction: a crash leaves both as they were, and the
next load reads the same lines again (idempotent: the same rows). A file whose version changed (it
was rewritten) is read again from the start. A partial last line is left for the next load.
Tenants are given exactly as the closed-hour run gives them (`files.HostBatch`, the same host
configuration), so both paths write the same series.

The closed-hour run (`files.load_window`) still replaces the whole window with exactly what the
files hold and marks them processed; this path never marks anything processed.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.host.config import HostConfig, load_config
from metrics_pipeline.lib.host.files import SOURCE, HostBatch, files_for_window, hour_of_key
from metrics_pipeline.lib.landing import LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

KIND = "host"
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
        rows = conn.execute(
            f"SELECT key, etag, loaded_bytes FROM {schema}.live_offsets WHERE kind = %s AND hour >= %s",
            (KIND, lo),
        ).fetchall()
    done = {key: loaded for key, _, loaded in rows}
    # A file that grew is read from where the last load stopped; one that shrank (rewritten) again
    # from its start. (A same-size rewrite waits for the closed-hour run, which replaces the window.)
    grown = [(obj, done.get(obj.key, 0) if obj.size > done.get(obj.key, 0) else 0)
             for obj in objects if obj.size != done.get(obj.key, 0)]
    batch = HostBatch(config)
    advanced, new_bytes = [], 0
    for (obj, offset), (_, data) in zip(grown, read_many(zone, [o for o, _ in grown])):
        if isinstance(data, RefusedObject):
            batch.problems["refused_files"] += 1
            continue
        if len(data) < offset:  # shorter than what was loaded: rewritten, read it whole
            offset = 0
        complete = data.rfind(b"\n", offset) + 1  # up to the last complete line
        if complete <= offset:
            continue
        batch.read(data[offset:complete], obj.key)
        advanced.append((obj, complete))
        new_bytes += complete - offset

    def record(conn) -> None:
        for obj, complete in advanced:
            conn.execute(
                f"""INSERT INTO {schema}.live_offsets (kind, key, etag, loaded_bytes, hour) VALUES (%s, %s, %s, %s, %s)
                    ON CONFLICT (kind, key) DO UPDATE SET etag = EXCLUDED.etag, loaded_bytes = EXCLUDED.loaded_bytes,
                        updated_at = now()""",
                (KIND, obj.key, obj.etag, complete, hour_of_key(obj.key) or lo),
            )
        conn.execute(f"DELETE FROM {schema}.live_offsets WHERE kind = %s AND hour < %s", (KIND, lo))

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
