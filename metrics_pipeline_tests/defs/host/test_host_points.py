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
