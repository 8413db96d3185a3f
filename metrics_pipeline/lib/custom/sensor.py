"""The custom sensor's plan for one tick: which hours of which kind to load with what is new, and
which closed hours to reload whole once (`defs/custom/sensors.py` turns it into run requests).

Loads: the hours the items of files new or grown since the previous tick touch (and touched before
they grew), hours ahead of now once they begin (`landing_index.uncommitted_hours`), and hours that
a listed file holds unprocessed items of and whose inputs changed since last requested: a run of
one hour indexes files that grew after the tick, so the tick after it may never see them grow, and
the items they hold for other hours would otherwise wait for a re-run (the inputs' digest, kept in
the cursor, says when such an hour was already requested as it is).

Closing reloads (SPEC §12: the closed-hour run replaces the window): an hour loaded incrementally
since its last full replace, closed and without loads for `CLOSE_QUIET`, is reloaded whole once.
That costs one full read of the hour when nothing waits for it, and leaves the hour as a re-run
would whatever happened before.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.custom import loaded
from metrics_pipeline.lib.custom.index import list_hours, sync_index
from metrics_pipeline.lib.custom.items import INDEX_KIND, hour_of
from metrics_pipeline.lib.landing import LandingZone
from metrics_pipeline.lib.warehouse import landing_index
from metrics_pipeline.lib.warehouse.db import Warehouse

#: a closed hour loaded incrementally is reloaded whole once no load touched it for this long
CLOSE_QUIET = timedelta(minutes=5)


@dataclasses.dataclass(frozen=True)
class SensorCursor:
    """The custom sensor's cursor: the hour that was current at its last tick (receipt hours from
    the one before it are listed again, and hours after it had no partition then), and per kind
    the inputs' digest each recently requested hour was requested with."""

    through: datetime | None = None
    requested: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    def encode(self) -> str:
        return json.dumps({"through": self.through.isoformat() if self.through else None,
                           "requested": self.requested})

    @classmethod
    def decode(cls, text: str | None) -> SensorCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(datetime.fromisoformat(raw["through"]) if raw.get("through") else None, raw.get("requested", {}))


@dataclasses.dataclass(frozen=True)
class SensorPlan:
    """One tick: per kind, the hours to load (each with a digest of the files feeding it) and the
    closed hours to reload whole (each with a token naming the record it closes)."""

    hours: dict[str, dict[datetime, str]]
    cursor: SensorCursor
    files: int
    deferred: list[datetime] = dataclasses.field(default_factory=list)
    close: dict[str, dict[datetime, str]] = dataclasses.field(default_factory=dict)


def _unprocessed_hours(conn, schema: str, kind: str, keys: list[str], through: datetime) -> set[datetime]:
    """Hours up to `through` that one of the files `keys` holds items of not committed yet."""
    rows = conn.execute(
        f"""SELECT DISTINCT h FROM {schema}.landing_files f CROSS JOIN LATERAL unnest(f.hours) h
            WHERE f.kind = %s AND f.key = ANY(%s) AND h <= %s AND NOT h = ANY(f.processed_hours)""",
        (kind, keys, through)).fetchall()
    return {h for (h,) in rows}


def plan_sensor_tick(warehouse: Warehouse, zone: LandingZone, cursor: SensorCursor, *,
                     now: datetime | None = None, max_catchup: timedelta = timedelta(days=7)) -> SensorPlan:
    """Index the files received since the previous tick (new, or grown since indexed) and return
    the hours to load and to close, per kind, for the hours that have a partition (up to the
    current one). Hours ahead of now are deferred; like `lib.ingestion_logs.load.plan_sensor_tick`,
    a later tick requests them once they begin, from `landing_index.uncommitted_hours`.

    Receipt hours listed: from the hour before the previous tick's current hour (files finish
    after their hour ends) to the current one; after a downtime at most `max_catchup` back.
    """
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    current = hour_of(now)
    since = cursor.through if cursor.through is not None else current
    first = max(since - timedelta(hours=1), current - max_catchup)
    hours_listed = []
    hour = first
    while hour <= current:
        hours_listed.append(hour)
        hour += timedelta(hours=1)
    plan: dict[str, dict[datetime, str]] = {}
    close: dict[str, dict[datetime, str]] = {}
    requested: dict[str, dict[str, str]] = {}
    files = 0
    deferred: set[datetime] = set()
    with warehouse.connect() as conn:
        for kind in ("measures", "events"):
            index_kind = INDEX_KIND[kind]
            listed = list_hours(zone, kind, hours_listed)
            keys = list(listed)
            before = landing_index.hours_of(conn, warehouse.schema, index_kind, keys)
            parsed = sync_index(conn, warehouse.schema, zone, kind, listed)
            files += len(parsed)
            touched = {h for p in parsed.values() for h in p.hours}
            touched |= {h for key in parsed for h in before.get(key, [])}
            after = cursor.through if cursor.through is not None else current - timedelta(hours=1)
            arrived = landing_index.uncommitted_hours(conn, warehouse.schema, index_kind, after, current) \
                if after < current else []
            unprocessed = _unprocessed_hours(conn, warehouse.schema, index_kind, keys, current)
            due = sorted({h for h in touched if h <= current} | set(arrived) | unprocessed)
            deferred |= {h for h in touched if h > current}
            digests = landing_index.inputs_digest(conn, warehouse.schema, index_kind, due)
            last = cursor.requested.get(kind, {})
            plan[kind] = {h: digests.get(h, "none") for h in due
                          if h in touched or h in arrived or last.get(h.isoformat()) != digests.get(h, "none")}
            # remembered while the hour may still come back as unprocessed
            requested[kind] = {**{k: v for k, v in last.items() if datetime.fromisoformat(k) in unprocessed},
                               **{h.isoformat(): d for h, d in plan[kind].items()}}
            close[kind] = {h: token for h, token in loaded.hours_to_close(conn, warehouse.schema, index_kind, now,
                                                                           CLOSE_QUIET).items()
                           if h not in plan[kind]}
    return SensorPlan(plan, SensorCursor(max(current, cursor.through or current), requested), files,
                      sorted(deferred), close)
