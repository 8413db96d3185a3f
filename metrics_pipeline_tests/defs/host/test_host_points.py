import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.host.sensors import host_points_sensor
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import open_landing

HOUR = datetime(2026, 2, 3, 10, tzinfo=timezone.utc)


def write_hour(zone, hosts=("web-1", "web-2"), seconds=120, partial=False):
    """Two minutes of 1-second ticks per host, 3 samples per tick; returns the samples written."""
    by_key = {}
    truth = []
    for host in hosts:
        for s in range(seconds):
            ts = HOUR.timestamp() + s
            samples = [
                ["host_cpu_percent", float(s % 100), "percent", {}],
                ["host_cpu_state_percent", 1.5, "percent", {"state": "user"}],
                ["host_filesystem_used_percent", 42.0, "percent", {"mount": "/", "fstype": "ext4"}],
            ]
            truth += [(host, m, ts, v) for m, v, _, _ in samples]
            by_key.setdefault(host_key(host, ts), []).append(json.dumps({"ts": ts, "host": host, "samples": samples}))
    for key, lines in by_key.items():
        data = "\n".join(lines) + "\n"
        if partial:
            data += '{"ts": 1, "host'
        zone.write(key, data.encode())
    return truth


def resources(dsn, url, endpoint=None):
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=url, endpoint_url=endpoint)}


def stored(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.resource, s.metric, extract(epoch FROM p.ts), p.value FROM metrics.points p "
            "JOIN metrics.series s USING (series_id) WHERE s.source = 'host' ORDER BY 1, 2, 3, 4"
        ).fetchall()


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_host_points_loads_every_sample_of_the_hour_and_reruns_are_identical(backend, warehouse_dsn, tmp_path, request):
    if backend == "local":
        url, endpoint = str(tmp_path / "landing"), None
    else:
        url, endpoint = request.getfixturevalue("s3_landing_url"), request.getfixturevalue("moto_endpoint")
    zone = open_landing(url, endpoint_url=endpoint)
    truth = write_hour(zone, partial=True)
    partition = HOUR.strftime("%Y-%m-%d-%H:%M")
    result = dg.materialize([host_points], partition_key=partition, resources=resources(warehouse_dsn, url, endpoint))
    assert result.success
    rows = stored(warehouse_dsn)
    assert [(r[0], r[1], float(r[2]), r[3]) for r in rows] == sorted(truth)
    meta = result.asset_materializations_for_node("host_points")[0].metadata
    assert meta["hosts"].value == 2 and meta["series"].value == 6 and meta["points"].value == len(truth)
    assert meta["partial_lines"].value == 4  # one per minute file
    assert meta["dagster/row_count"].value == len(truth)

    again = dg.materialize([host_points], partition_key=partition, resources=resources(warehouse_dsn, url, endpoint))
    assert stored(warehouse_dsn) == rows
    assert again.asset_materializations_for_node("host_points")[0].metadata["points_changed"].value == 0
    with psycopg.connect(warehouse_dsn) as conn:
        processed = conn.execute(
            "SELECT count(*) FROM metrics.landing_files WHERE kind = 'host' AND processed_at IS NOT NULL"
        ).fetchone()[0]
    assert processed == 4


def test_an_hour_without_files_materialises_empty(warehouse_dsn, tmp_path):
    result = dg.materialize(
        [host_points], partition_key=HOUR.strftime("%Y-%m-%d-%H:%M"),
        resources=resources(warehouse_dsn, str(tmp_path)),
    )
    assert result.success
    assert result.asset_materializations_for_node("host_points")[0].metadata["points"].value == 0


def test_the_sensor_requests_complete_hours_and_keeps_a_cursor(tmp_path):
    zone = open_landing(str(tmp_path))
    now = datetime.now(timezone.utc)
    two_hours_ago = (now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    zone.write(host_key("h", two_hours_ago.timestamp() + 60), b'{"ts": 1, "host": "h", "samples": []}\n')
    landing = LandingZoneResource(url=str(tmp_path))
    context = dg.build_sensor_context(cursor=None, resources={"landing": landing})
    result = host_points_sensor(context)
    assert [r.partition_key for r in result.run_requests] == [two_hours_ago.strftime("%Y-%m-%d-%H:%M")]
    assert result.run_requests[0].tags["metrics_pipeline/reason"] == "complete"
    again = host_points_sensor(dg.build_sensor_context(cursor=result.cursor, resources={"landing": landing}))
    assert again.run_requests == []


def test_a_host_file_name_that_is_not_utf8_stops_neither_host_points_nor_its_sensor(warehouse_dsn, tmp_path):
    """Issue 16: a latin-1 file name among a host's minute files (and a latin-1 host directory) is
    counted as refused; the other files load, the sensor keeps requesting, and retention later
    deletes only what was read."""
    import os

    from metrics_pipeline.lib.warehouse import retention
    from metrics_pipeline.lib.warehouse.db import Warehouse
    from metrics_pipeline_tests.support.faults.landing_data import host_minute

    url = str(tmp_path / "landing")
    zone = open_landing(url)
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    points = 0
    for minute in range(2):
        key, data, n = host_minute("web-1", hour + timedelta(minutes=minute))
        zone.write(key, data)
        points += n
    hour_dir = os.fsencode(zone.root) + hour.strftime("/host/%Y-%m-%d/%H/").encode()
    for name in (b"web-1/web-1-r\xe9sum\xe9.jsonl", b"caf\xe9/caf\xe9-1.jsonl"):
        os.makedirs(os.path.dirname(hour_dir + name), exist_ok=True)
        with open(hour_dir + name, "wb") as fh:
            fh.write(host_minute("x", hour + timedelta(minutes=5))[1])

    landing = LandingZoneResource(url=url)
    tick = host_points_sensor(dg.build_sensor_context(cursor=None, resources={"landing": landing}))
    assert [r.partition_key for r in tick.run_requests] == [hour.strftime("%Y-%m-%d-%H:%M")]
    result = dg.materialize([host_points], partition_key=hour.strftime("%Y-%m-%d-%H:%M"), resources=resources(warehouse_dsn, url))
    assert result.success
    meta = result.asset_materializations_for_node("host_points")[0].metadata
    assert (meta["refused_files"].value, meta["points"].value, meta["hosts"].value) == (2, points, 1)
    with psycopg.connect(warehouse_dsn) as conn:  # only the files read are recorded, and processed
        assert conn.execute("SELECT count(*) FILTER (WHERE processed_at IS NOT NULL), count(*) FROM metrics.landing_files "
                            "WHERE kind = 'host'").fetchone() == (2, 2)
    deleted = retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=retention.RetentionConfig(),
                                      now=hour + timedelta(days=30))
    assert len(deleted) == 2
    assert sorted(o.key for o in zone.list("host/")) == [
        hour.strftime("host/%Y-%m-%d/%H/") + k for k in ("caf\\xe9/caf\\xe9-1.jsonl", "web-1/web-1-r\\xe9sum\\xe9.jsonl")]


def test_the_hour_in_progress_loads_only_what_landed_since_its_last_run(warehouse_dsn, tmp_path):
    """An in-progress refresh reads the new complete lines (the live path's offsets); the closed-hour
    run then replaces the window with exactly what the files hold."""
    open_landing(str(tmp_path))  # the landing zone the resources open
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    key = hour.strftime("%Y-%m-%d-%H:%M")
    first = now - timedelta(seconds=3) if now - hour > timedelta(seconds=3) else hour

    def line(ts):
        return json.dumps({"ts": ts, "host": "web-1", "samples": [["host_cpu_percent", 10.0, "percent", {}]]}) + "\n"

    path = tmp_path / host_key("web-1", first.timestamp())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(line(first.timestamp()))
    refresh = {"metrics_pipeline/reason": "refresh"}  # the host sensor's refresh of the hour in progress
    run = dg.materialize([host_points], partition_key=key, resources=resources(warehouse_dsn, str(tmp_path)), tags=refresh)
    (event,) = run.get_asset_materialization_events()
    metadata = event.materialization.metadata
    assert metadata["status"].value == "in progress: loaded what is new" and metadata["points"].value == 1
    with open(path, "a") as fh:
        fh.write(line(first.timestamp() + 1))
    again = dg.materialize([host_points], partition_key=key, resources=resources(warehouse_dsn, str(tmp_path)), tags=refresh)
    (event,) = again.get_asset_materialization_events()
    assert event.materialization.metadata["new_bytes"].value == len(line(first.timestamp() + 1))
    assert len(stored(warehouse_dsn)) == 2
