"""Load: a landing zone of 20,000 files, walked by the real sensors tick after tick (SPEC §2.4, §4).

Each sensor is evaluated with `build_sensor_context` on a real (test) instance, feeding every
tick the cursor the previous one returned, as the daemon does. Each tick must stay inside its time
budget, and the ticks together must cover every file exactly once: each file is indexed by exactly
one tick, and that tick requests the partition the file belongs to.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.host.sensors import host_points_sensor
from metrics_pipeline.defs.ingestion_logs import sensors as ingestion_sensors
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.ingestion_logs.load import SensorCursor
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline_tests.support.faults.landing_data import jsonl, record, write_plain

FILES = 20_000
#: Dagster abandons a sensor evaluation after 60 s (DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS default).
DAGSTER_SENSOR_LIMIT_S = 60.0
DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)


def partition(hour: datetime) -> str:
    return hour.strftime("%Y-%m-%d-%H:%M")


@pytest.mark.slow
def test_20000_ingestion_files_are_indexed_across_ticks_each_once_within_the_budget(warehouse_dsn, ram_dir):
    # The sensor as deployed: 5,000 files at most per tick, and a 40 s budget (the lib tests shrink it).
    zone = LocalLanding(ram_dir)
    hour_of = {}
    for i in range(FILES):
        hour = DAY + timedelta(hours=i % 10)
        key = f"ingestion_logs/{hour:%Y%m%d%H}/job-{i:05d}.jsonl"
        write_plain(ram_dir / key, jsonl([record(hour + timedelta(minutes=i % 60), Objet_Id=i)]))
        hour_of[key] = partition(hour)
    listing = sorted(zone.list("ingestion_logs/"))  # the (mtime, key) order the sensor walks
    assert len(listing) == FILES

    res = {"warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=zone.url)}
    cursor, position, seen, run_keys, durations = None, 0, {}, [], []
    with dg.instance_for_test() as instance:
        while True:
            started = time.monotonic()
            result = ingestion_sensors.ingestion_logs_sensor(
                dg.build_sensor_context(instance=instance, cursor=cursor, resources=res))
            durations.append(time.monotonic() - started)
            if not result.run_requests:
                # Nothing new: the walk stays (the cursor also notes the current hour, which may turn).
                assert SensorCursor.decode(result.cursor).walk == SensorCursor.decode(cursor).walk
                break
            # The files this tick indexed: those after the previous cursor, up to the new one.
            new = SensorCursor.decode(result.cursor).walk
            done = [o for o in listing[position:] if (o.mtime, o.key) <= (new.mtime, new.key)]
            assert done, "a tick with requests must have indexed files"
            position += len(done)
            for o in done:
                seen[o.key] = seen.get(o.key, 0) + 1
            assert {r.partition_key for r in result.run_requests} == {hour_of[o.key] for o in done}
            run_keys += [r.run_key for r in result.run_requests]
            cursor = result.cursor
            assert len(durations) < 200, "the walk does not end"

    assert position == FILES and set(seen) == set(hour_of) and set(seen.values()) == {1}
    assert len(run_keys) == len(set(run_keys))  # no run request deduplicated away by a reused key
    assert len(durations) >= 5  # four ticks of work at most 5,000 files each, then a quiet one
    assert max(durations) < ingestion_sensors.BUDGET_SECONDS < DAGSTER_SENSOR_LIMIT_S
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM metrics.landing_files").fetchone()[0] == FILES


@pytest.mark.slow
def test_20000_host_files_request_each_hour_once_and_late_files_once_more(ram_dir):
    zone = LocalLanding(ram_dir)
    now = datetime.now(timezone.utc)
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=22)
    hours = [first + timedelta(hours=h) for h in range(20)]  # all closed, all inside the sensor's lookback
    per_hour = FILES // len(hours)
    for hour in hours:
        for n in range(per_hour):
            host, minute = f"h{n // 50:02d}", hour + timedelta(minutes=n % 50)
            write_plain(ram_dir / host_key(host, minute.timestamp()), b'{"ts": 0, "host": "x", "samples": []}\n')
    assert sum(len(names) for _, _, names in os.walk(ram_dir / "host")) == FILES

    res = {"landing": LandingZoneResource(url=zone.url)}
    requested: dict[tuple[str, str], int] = {}
    cursor = None
    for tick in range(2):
        started = time.monotonic()
        result = host_points_sensor(dg.build_sensor_context(cursor=cursor, resources=res))
        assert time.monotonic() - started < DAGSTER_SENSOR_LIMIT_S / 4
        for r in result.run_requests:
            reason = r.tags["metrics_pipeline/reason"]
            requested[(r.partition_key, reason)] = requested.get((r.partition_key, reason), 0) + 1
        cursor = result.cursor
        if tick == 0:
            # Late uploads for two hours already requested: each is requested once more, nothing else is.
            time.sleep(0.01)
            for hour in hours[3:5]:
                write_plain(ram_dir / host_key("late-host", hour.timestamp()), b"\n")
    assert {k: v for k, v in requested.items() if k[1] == "complete"} == {(partition(h), "complete"): 1 for h in hours}
    assert {k: v for k, v in requested.items() if k[1] == "late"} == {(partition(h), "late"): 1 for h in hours[3:5]}
