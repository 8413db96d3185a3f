"""Load an hour of host landing files, and decide which hours to load (the host sensor's plan).

Reading a file into columns is `lib/host/batch.py` (`HostBatch`, both landing formats, and what is
counted as damaged); this module lists an hour's files, reads them into one batch and loads it.

`load_window` replaces the window's host points with what the files hold and marks those files
processed in the same transaction, so landing retention never deletes a file whose samples are not
committed.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import zlib
from datetime import datetime, timedelta, timezone
from queue import Full, Queue

from metrics_pipeline.lib.host import offsets as offsets_
from metrics_pipeline.lib.host.batch import MAX_LINE_BYTES, HostBatch, host_dir_of_key, hour_of_key  # noqa: F401 - re-exported
from metrics_pipeline.lib.host.config import HostConfig, load_config
from metrics_pipeline.lib.landing import LandingObject, LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.warehouse import landing_index
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

SOURCE = "host"
HOST_PREFIX = "host/"


def hour_prefix(hour: datetime) -> str:
    """Landing prefix of every host's files for the hour starting at `hour` (UTC)."""
    hour = hour.astimezone(timezone.utc)
    return f"{HOST_PREFIX}{hour:%Y-%m-%d}/{hour:%H}/"


def files_for_window(zone: LandingZone, start: datetime, end: datetime) -> list[LandingObject]:
    """Every host file of every hour in [start, end)."""
    found = []
    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    while hour < end:
        found.extend(zone.list(hour_prefix(hour)))
        hour += timedelta(hours=1)
    return found


def read_window(zone: LandingZone, start: datetime, end: datetime,
                config: HostConfig | None = None) -> tuple[HostBatch, list[LandingObject]]:
    """Read every host file of [start, end) into one batch; returns it and the files read. A file
    the zone refuses is counted, not returned: it is never marked processed, so landing retention
    never deletes samples nobody read. `config`: the tenant rules (None: the configured file)."""
    batch = HostBatch(config if config is not None else load_config())
    objects = files_for_window(zone, start, end)
    read = []
    for obj, (_, data) in zip(objects, read_many(zone, objects)):
        if isinstance(data, RefusedObject):  # a name leaving the zone or not UTF-8, too large, unreadable
            batch.problems["refused_files"] += 1
        else:
            batch.read(data, obj.key)
            read.append(obj)
    return batch, read


@dataclasses.dataclass(frozen=True)
class HostLoad:
    """What loading a window of host files did. `live_points`: in "tail" mode, the points the live
    path had loaded from the same files (the window holds those and `load.points`)."""

    load: LoadResult
    batch: HostBatch
    files: int
    mode: str = "replace"  # replace: the window now holds exactly the files; tail: what the live path had not
    live_points: int = 0

    def as_metadata(self) -> dict:
        problems = self.batch.problems
        meta = {
            **self.load.as_metadata(),
            "hosts": len(self.batch.hosts),
            "tenants": len(self.batch.tenants),
            # lines naming a tenant other than the one the host configuration gives their file
            "tenant_overrides": self.batch.tenant_overrides,
            "files": self.files,
            "lines": self.batch.lines,
            "partial_lines": problems.get("partial_lines", 0),
            "corrupt_lines": problems.get("corrupt_lines", 0),
            "invalid_samples": problems.get("invalid_samples", 0),
            # Files the landing zone would not read (a key leaving the zone, over the size limit).
            "refused_files": problems.get("refused_files", 0),
            "load_mode": self.mode,
        }
        if self.mode == "tail":
            total = self.load.points + self.live_points
            meta.update({"dagster/row_count": total, "points": total, "points_loaded_live": self.live_points,
                         "out_of_window_points": meta["out_of_window_points"] + problems.get("out_of_hour_samples", 0)})
        return meta


def load_window(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime,
                config: HostConfig | None = None) -> HostLoad:
    """Make `points` hold exactly what the host files of [start, end) say; mark the files processed
    in the same commit. Samples stamped outside the window (a broken clock) are dropped and
    counted. `config`: the tenant rules (None: the configured file, `lib.host.config.load_config`).

    When the live path loaded the hour as it grew and every file is unchanged where it was loaded
    (`_trusted_offsets`), only what it did not load is read and added ("tail" mode: a few minutes of
    data instead of the hour, and no merge of the whole window); otherwise the window is replaced."""
    config = config if config is not None else load_config()
    objects = files_for_window(zone, start, end)
    offsets = _trusted_offsets(warehouse, objects, start, end, config)
    if offsets:
        done = _load_tail(warehouse, zone, objects, offsets, start, end, config)
        if done is not None:
            return done
    summary, read = HostBatch(config), []

    def commit(conn) -> None:
        offsets_.used_by_closed_run(conn, warehouse.schema, start, end)
        landing_index.mark_processed(conn, warehouse.schema, SOURCE, [(o, [hour_of_key(o.key)]) for o in read],
                                     start, end)

    if objects:
        try:  # a group of hosts at a time, read while the database writes the previous group
            result = load_points(warehouse, _prefetched(_frames_by_hosts(zone, objects, config, summary, read)),
                                 source=SOURCE, start=start, end=end, out_of_window="drop", in_transaction=commit)
            return HostLoad(result, summary, len(read))
        except _SharedHosts:  # files of two groups name the same host: load the window as one frame
            summary, read = HostBatch(config), []
    batch, read = read_window(zone, start, end, config)
    result = load_points(warehouse, batch.frame(), source=SOURCE, start=start, end=end, out_of_window="drop",
                         in_transaction=commit)
    return HostLoad(result, batch, len(read))


#: Bytes of landing files read into one frame by the closed-hour run (about 2 million samples of
#: format 2): the memory a run needs stays bounded whatever the size of the fleet.
GROUP_BYTES = 16 * 1024 * 1024


class _SharedHosts(Exception):
    """Two groups of files hold samples of the same host, so their frames would share series."""


def _frames_by_hosts(zone: LandingZone, objects: list[LandingObject], config: HostConfig, summary: HostBatch,
                     read: list[LandingObject]):
    """Frames of the window, one per group of host directories (of about GROUP_BYTES); every group's
    counts go to `summary` and its files to `read`."""
    seen: set[str] = set()
    group: list[LandingObject] = []
    # A host's files of every hour together (a window of several hours), in key order within.
    objects = sorted(objects, key=lambda o: (host_dir_of_key(o.key) or "", o.key))
    for i, obj in enumerate(objects):
        group.append(obj)
        last = i + 1 == len(objects)
        if not last and (sum(o.size for o in group) < GROUP_BYTES
                         or host_dir_of_key(objects[i + 1].key) == host_dir_of_key(obj.key)):
            continue
        batch = HostBatch(config)
        for item, (_, data) in zip(group, read_many(zone, group)):
            if isinstance(data, RefusedObject):
                batch.problems["refused_files"] += 1
            else:
                batch.read(data, item.key)
                read.append(item)
        if seen & batch.hosts:
            raise _SharedHosts
        seen |= batch.hosts
        summary.absorb(batch)
        group = []
        yield batch.frame()


def _prefetched(frames, depth: int = 1):
    """`frames`, each built in a thread while the caller consumes the one before (the loader's COPY
    mostly waits on the database: the next group is parsed meanwhile)."""
    done = object()
    queue: Queue = Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():  # never blocks for good: the consumer may have stopped
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in frames:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
            return
        put(done)

    worker = threading.Thread(target=produce, name="host-files-reader", daemon=True)
    worker.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _trusted_offsets(warehouse: Warehouse, objects: list[LandingObject], start: datetime, end: datetime,
                     config: HostConfig) -> dict[str, offsets_.Offset] | None:
    """The live path's offsets of the window's files, when the window holds exactly what it loaded
    from them and nothing else: every file it loaded (and every file a previous run of the window
    processed) is still there, each with a checksum, and the host configuration gives each the
    tenant it gave then. None otherwise (the window is replaced)."""
    schema = warehouse.schema
    with warehouse.connect() as conn:
        rows = offsets_.read_offsets(conn, schema, since=start)
        touched = landing_index.files_touching(conn, schema, SOURCE, start, end)
    rows = {key: row for key, row in rows.items() if start <= row.hour < end}
    listed = {o.key for o in objects}
    if not rows or not listed.issuperset(rows) or not listed.issuperset(touched):
        return None
    for key, row in rows.items():
        directory = host_dir_of_key(key)
        tenant = (config.tenant_of(directory) if directory is not None else None) or ""
        if row.prefix_crc is None or row.config_tenant != tenant:
            return None
    return rows


def _load_tail(warehouse: Warehouse, zone: LandingZone, objects: list[LandingObject],
               offsets: dict[str, offsets_.Offset], start: datetime, end: datetime, config: HostConfig) -> HostLoad | None:
    """Load what each file holds after its live offset (a file the live path never saw, whole) into
    the window; what is before the offset is parsed for the run's metadata only (lines, problems,
    hosts, samples), not loaded. None when a file changed where it was loaded (the caller then
    replaces the window)."""
    batch = HostBatch(config)
    read, advanced = [], []
    nothing = offsets_.Offset(0, None, None, None)
    for obj, (_, data) in zip(objects, read_many(zone, objects)):
        if isinstance(data, RefusedObject):
            batch.problems["refused_files"] += 1
            continue
        before = offsets.get(obj.key, nothing)
        if before.loaded_bytes and not offsets_.prefix_unchanged(data, before):
            return None
        within = offsets_.file_hour(obj.key)
        if before.loaded_bytes:
            batch.read(data, obj.key, stop=before.loaded_bytes, within=within, count_only=True)
            batch.files -= 1  # one file, read in two parts
        batch.read(data, obj.key, start=before.loaded_bytes, within=within)
        read.append(obj)
        complete = data.rfind(b"\n") + 1
        if complete > before.loaded_bytes:
            directory = host_dir_of_key(obj.key)
            advanced.append((obj, complete, zlib.crc32(memoryview(data)[:complete]),
                             config.tenant_of(directory) if directory is not None else None))
    files = [(o, [hour_of_key(o.key)]) for o in read]

    def commit(conn) -> None:
        offsets_.record_offsets(conn, warehouse.schema, advanced)
        offsets_.used_by_closed_run(conn, warehouse.schema, start, end)
        landing_index.mark_processed(conn, warehouse.schema, SOURCE, files, start, end)

    result = load_points(warehouse, batch.frame(), source=SOURCE, start=start, end=end, scope="append",
                         out_of_window="drop", in_transaction=commit)
    return HostLoad(result, batch, len(read), "tail", batch.counted)


@dataclasses.dataclass
class HostSensorState:
    """The host sensor's cursor: what it has seen and requested so far."""

    watermark: tuple[float, str] = (0.0, "")  # newest (mtime, key) seen
    completed_through: datetime | None = None  # every hour up to this one was requested as complete
    refresh_slot: int = -1  # last in-progress refresh slot requested

    def encode(self) -> str:
        return json.dumps({
            "w": list(self.watermark),
            "done": self.completed_through.isoformat() if self.completed_through else None,
            "slot": self.refresh_slot,
        })

    @classmethod
    def decode(cls, text: str | None) -> HostSensorState:
        if not text:
            return cls()
        raw = json.loads(text)
        done = datetime.fromisoformat(raw["done"]) if raw.get("done") else None
        return cls((float(raw["w"][0]), str(raw["w"][1])), done, int(raw.get("slot", -1)))


@dataclasses.dataclass(frozen=True)
class HourRequest:
    hour: datetime
    reason: str  # complete | late | refresh
    run_key: str


def plan_host_requests(
    zone: LandingZone,
    state: HostSensorState,
    now: datetime,
    *,
    grace: timedelta = timedelta(minutes=2),
    refresh_every: timedelta = timedelta(minutes=5),
    lookback: timedelta = timedelta(hours=24),
    max_catchup: timedelta = timedelta(days=7),
) -> tuple[list[HourRequest], HostSensorState]:
    """Which host hours to (re)load now (SPEC §4), and the next cursor.

    * complete: an hour with files, once `grace` after its end (its last minute file is closed);
    * late: files that appeared for an hour already requested as complete (a host uploading late);
    * refresh: the in-progress hour, once per `refresh_every` slot, so dashboards stay fresh.
    Each tick lists the last `lookback` hours (one listing per hour prefix) for late files, and,
    after a downtime, every hour since the last one completed, up to `max_catchup`; older hours
    need a backfill. The cost does not grow with the landing zone's history.
    """
    now = now.astimezone(timezone.utc)
    current = now.replace(minute=0, second=0, microsecond=0)
    last_complete = (now - grace).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    oldest = current - lookback
    if state.completed_through is not None:
        oldest = min(oldest, state.completed_through + timedelta(hours=1))  # catch up after a downtime
    oldest = max(oldest, current - max_catchup)
    objects: list[LandingObject] = []
    hour = oldest
    while hour <= current:
        objects.extend(zone.list(hour_prefix(hour)))
        hour += timedelta(hours=1)

    by_hour: dict[datetime, list[LandingObject]] = {}
    for obj in objects:
        hour = hour_of_key(obj.key)
        if hour is not None:
            by_hour.setdefault(hour, []).append(obj)
    newest = max([(o.mtime, o.key) for o in objects] + [state.watermark])
    requests: list[HourRequest] = []
    for hour in sorted(by_hour):
        if hour > last_complete:
            continue
        if state.completed_through is None or hour > state.completed_through:
            requests.append(HourRequest(hour, "complete", f"host:{hour.isoformat()}:complete"))
        elif any((o.mtime, o.key) > state.watermark for o in by_hour[hour]):
            requests.append(HourRequest(hour, "late", f"host:{hour.isoformat()}:late:{newest[0]!r}"))
    slot = int(now.timestamp() // refresh_every.total_seconds())
    refreshed = state.refresh_slot
    if slot != state.refresh_slot and current in by_hour:
        requests.append(HourRequest(current, "refresh", f"host:{current.isoformat()}:refresh:{slot}"))
        refreshed = slot
    done = max(filter(None, [state.completed_through, last_complete]))
    return requests, HostSensorState(newest, done, refreshed)
