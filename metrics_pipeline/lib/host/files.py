"""Read the host agent's minute files back into points, and load an hour of them.

A file is JSON Lines written by the agent (`lib/host/agent.py`). Reading is forgiving where a crash or a bad disk
can leave damage, and strict about counting it:
* the last line without a trailing newline that does not parse is a `partial_line` (the agent died
  mid-write): skipped and counted;
* any other line that is not a valid tick object is a `corrupt_line`: skipped and counted;
* a sample entry that is malformed inside a good line is an `invalid_sample`: skipped and counted;
* a line longer than `MAX_LINE_BYTES` is not parsed at all (a real tick is a few kB; a hostile one
  could cost gigabytes and minutes to parse): it counts as corrupt (partial when it is the last);
* a file the landing zone refuses (a name leaving the zone, over the size limit) is a `refused_file`;
* a line whose `tenant` the warehouse cannot store (empty, not a string, NUL, too long) is corrupt.
Nothing raises for bad content: one bad file must not block every host's hour. Files are read line
by line from their bytes, never copied or decoded whole.

Tenants: every sample of a line gets the label `tenant` of its file's host directory when the host
configuration names one (`lib/host/config.py`, which wins), else of the line's own `tenant` (the
agent's `--tenant`), else none. Old files, written before agents knew tenants, load as before: a
`tenant` among a sample's own labels (a writer of our format could set one) is kept when neither the
configuration nor the line names one, and replaced when either does.

`load_window` replaces the window's host points with what the files hold and marks those files
processed in the same transaction, so landing retention never deletes a file whose samples are not
committed.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import datetime, timedelta, timezone

import pandas as pd

from metrics_pipeline.lib.host.config import HostConfig, load_config
from metrics_pipeline.lib.landing import LandingObject, LandingZone, RefusedObject, read_many
from metrics_pipeline.lib.points import MAX_NAME_BYTES, canonical_labels, text_problem
from metrics_pipeline.lib.warehouse import landing_index
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import LoadResult, load_points

SOURCE = "host"
HOST_PREFIX = "host/"
_TS_MIN, _TS_MAX = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01: anything else is a broken clock
MAX_LINE_BYTES = 1_000_000


def hour_prefix(hour: datetime) -> str:
    """Landing prefix of every host's files for the hour starting at `hour` (UTC)."""
    hour = hour.astimezone(timezone.utc)
    return f"{HOST_PREFIX}{hour:%Y-%m-%d}/{hour:%H}/"


def hour_of_key(key: str) -> datetime | None:
    """The UTC hour a host file belongs to, from its key (None for a foreign file)."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != "host":
        return None
    try:
        return datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def host_dir_of_key(key: str) -> str | None:
    """The host directory a host file lies in (`host/<date>/<HH>/<dir>/...`), None for a foreign key."""
    parts = key.split("/")
    return parts[3] if len(parts) >= 5 and parts[0] == "host" else None


@dataclasses.dataclass
class HostBatch:
    """Samples read from a set of host files, ready for the loader.

    `config` holds the tenant rules (None: none, every tenant comes from the lines themselves)."""

    config: HostConfig | None = None
    metric: list[str] = dataclasses.field(default_factory=list)
    resource: list[str] = dataclasses.field(default_factory=list)
    labels: list[str] = dataclasses.field(default_factory=list)
    unit: list[str] = dataclasses.field(default_factory=list)
    ts: list[float] = dataclasses.field(default_factory=list)
    value: list[float] = dataclasses.field(default_factory=list)
    problems: Counter = dataclasses.field(default_factory=Counter)
    hosts: set[str] = dataclasses.field(default_factory=set)
    tenants: set[str] = dataclasses.field(default_factory=set)
    lines: int = 0
    files: int = 0
    #: lines whose own tenant differs from the one the configuration gives their file (which won)
    tenant_overrides: int = 0
    _labels_cache: dict = dataclasses.field(default_factory=dict, repr=False)
    _file_tenant: str | None = dataclasses.field(default=None, repr=False)

    def read(self, data: bytes, key: str | None = None) -> None:
        """Add the samples of one file's bytes; `key`, the file's landing key, selects the tenant
        rule of its host directory."""
        self.files += 1
        directory = host_dir_of_key(key) if key is not None and self.config is not None else None
        self._file_tenant = self.config.tenant_of(directory) if directory is not None else None
        start = 0
        while start < len(data):
            end = data.find(b"\n", start)
            last = end < 0  # no newline after it: the agent may have died mid-write
            end = len(data) if last else end
            if end - start > MAX_LINE_BYTES:
                self.problems["partial_lines" if last else "corrupt_lines"] += 1
            else:
                self._line(data[start:end].decode("utf-8", errors="replace"), last)
            start = end + 1

    def _line(self, line: str, last: bool) -> None:
        if not line.strip():
            return
        try:
            tick = json.loads(line)
            ts = float(tick["ts"])
            host = tick["host"]
            samples = tick["samples"]
            own_tenant = tick.get("tenant")
            if not isinstance(host, str) or not host or not isinstance(samples, list) or not _TS_MIN <= ts < _TS_MAX:
                raise ValueError("not a tick")
            if text_problem(host):
                raise ValueError("host name PostgreSQL cannot store")
            if own_tenant is not None and (not isinstance(own_tenant, str) or not own_tenant
                                           or text_problem(own_tenant, max_bytes=MAX_NAME_BYTES)):
                raise ValueError("tenant the warehouse cannot store")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            self.problems["partial_lines" if last else "corrupt_lines"] += 1
            return
        tenant = self._file_tenant or own_tenant
        if self._file_tenant is not None and own_tenant is not None and own_tenant != self._file_tenant:
            self.tenant_overrides += 1
        self.lines += 1
        self.hosts.add(host)
        if tenant is not None:
            self.tenants.add(tenant)
        for entry in samples:
            self._add(host, tenant, ts, entry)

    def _add(self, host: str, tenant: str | None, ts: float, entry) -> None:
        try:
            metric, value, unit, labels = entry
            if not (isinstance(metric, str) and metric and isinstance(unit, str) and unit):
                raise ValueError
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError
            value = float(value)
            # One sample the loader would refuse must not make it refuse every host's hour.
            if text_problem(metric, max_bytes=MAX_NAME_BYTES) or text_problem(unit):
                raise ValueError
            cache_key = (host, tenant, json.dumps(labels, sort_keys=True) if labels else "")
            text = self._labels_cache.get(cache_key)
            if text is None:
                if labels is not None and not isinstance(labels, dict):
                    raise ValueError
                merged = {**(labels or {}), "host": host}
                if tenant is not None:  # the line's (or the configuration's) tenant replaces a sample's own
                    merged["tenant"] = tenant
                text = canonical_labels(merged)
                self._labels_cache[cache_key] = text
        except (ValueError, TypeError, OverflowError, RecursionError):
            self.problems["invalid_samples"] += 1
            return
        self.metric.append(metric)
        self.resource.append(host)
        self.labels.append(text)
        self.unit.append(unit)
        self.ts.append(ts)
        self.value.append(value)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "metric": pd.Categorical(self.metric),
                "resource": pd.Categorical(self.resource),
                "labels": pd.Categorical(self.labels),
                "unit": pd.Categorical(self.unit),
                "ts": pd.to_datetime(pd.Series(self.ts, dtype="float64") * 1e6, unit="us", utc=True),
                "value": pd.Series(self.value, dtype="float64"),
            }
        )


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
    """What loading a window of host files did."""

    load: LoadResult
    batch: HostBatch
    files: int

    def as_metadata(self) -> dict:
        problems = self.batch.problems
        return {
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
        }


def load_window(warehouse: Warehouse, zone: LandingZone, start: datetime, end: datetime,
                config: HostConfig | None = None) -> HostLoad:
    """Make `points` hold exactly what the host files of [start, end) say; mark the files processed
    in the same commit. Samples stamped outside their file's hour (a broken clock) are dropped and
    counted. `config`: the tenant rules (None: the configured file, `lib.host.config.load_config`)."""
    batch, objects = read_window(zone, start, end, config)
    files = [(o, [hour_of_key(o.key)]) for o in objects]
    result = load_points(
        warehouse, batch.frame(), source=SOURCE, start=start, end=end, out_of_window="drop",
        in_transaction=lambda conn: landing_index.mark_processed(conn, warehouse.schema, SOURCE, files, start, end),
    )
    return HostLoad(result, batch, len(objects))


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
