import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg

from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records
from metrics_pipeline.defs.ingestion_logs.sensors import ingestion_logs_sensor
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.dev.simulate_logs import simulate
from metrics_pipeline.lib.ingestion_logs.load import SensorCursor
from metrics_pipeline.lib.landing import LocalLanding

H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)


def resources(dsn, root):
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=str(root))}


def test_materialising_an_hour_loads_runs_and_quarantine_with_metadata(warehouse_dsn, tmp_path):
    stats = simulate(LocalLanding(tmp_path), H, H + timedelta(hours=1), jobs_per_hour=80, seed=5, bad_rate=0.1)
    metas = []
    for key in ("2026-01-05-13:00", "2026-01-05-14:00"):  # a broken record's start may fall in the next hour
        result = dg.materialize([ingestion_log_records], partition_key=key, resources=resources(warehouse_dsn, tmp_path))
        assert result.success
        metas.append(result.asset_materializations_for_node("ingestion_log_records")[0].metadata)
    total = {k: sum(m[k].value for m in metas) for k in ("read", "loaded", "quarantined", "rows")}
    assert total["read"] == stats.records
    assert total["quarantined"] == stats.bad_records > 0
    assert all(m["read"].value == m["loaded"].value + m["quarantined"].value for m in metas)
    assert "| reason | records |" in metas[0]["quarantine_reasons"].value
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM metrics.ingestion_runs").fetchone()[0] == total["rows"]
        assert conn.execute("SELECT count(*) FROM metrics.quarantine").fetchone()[0] == stats.bad_records


def test_the_sensor_requests_the_partitions_new_files_touch_and_advances_its_cursor(warehouse_dsn, tmp_path):
    zone = LocalLanding(tmp_path)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    simulate(zone, now - timedelta(hours=3), now - timedelta(hours=1), jobs_per_hour=20, seed=1, bad_rate=0)
    context = dg.build_sensor_context(cursor=None, resources=resources(warehouse_dsn, tmp_path))
    result = ingestion_logs_sensor(context)
    expected = [(now - timedelta(hours=h)).strftime("%Y-%m-%d-%H:%M") for h in (3, 2)]
    assert sorted(r.partition_key for r in result.run_requests) == expected
    assert len({r.run_key for r in result.run_requests}) == 2
    again = ingestion_logs_sensor(dg.build_sensor_context(cursor=result.cursor, resources=resources(warehouse_dsn, tmp_path)))
    assert again.run_requests == [] and SensorCursor.decode(again.cursor).walk == SensorCursor.decode(result.cursor).walk
    zone.write("ingestion_logs/late.jsonl", (json.dumps({"broken": True}) + "\n").encode())
    third = ingestion_logs_sensor(dg.build_sensor_context(cursor=result.cursor, resources=resources(warehouse_dsn, tmp_path)))
    assert len(third.run_requests) == 1  # the file's arrival hour owns its quarantined record


# -- issue 16 ------------------------------------------------------------------------------------------

def _materialize(dsn, root, hour):
    result = dg.materialize([ingestion_log_records], partition_key=hour.strftime("%Y-%m-%d-%H:%M"),
                            resources=resources(dsn, root))
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("ingestion_log_records")[0].metadata.items()}


def _line(start, object_id):
    from metrics_pipeline_tests.support.faults.landing_data import record

    return json.dumps(record(start, Objet_Id=object_id)) + "\n"


def test_records_stamped_ahead_of_now_load_once_their_hour_begins_and_far_ahead_ones_are_quarantined(
        warehouse_dsn, tmp_path, monkeypatch):
    import os

    from metrics_pipeline.defs.ingestion_logs import sensors

    zone = LocalLanding(tmp_path)
    arrived = H + timedelta(minutes=20)
    zone.write("ingestion_logs/skewed.jsonl", (
        _line(H + timedelta(minutes=5), 1)
        + _line(H + timedelta(hours=2, minutes=10), 2)  # a job host 2 h ahead (or local times read as UTC)
        + _line(arrived + timedelta(hours=30), 3)  # more than a day ahead: quarantined now, visibly
    ).encode())
    os.utime(zone.path("ingestion_logs/skewed.jsonl"), (arrived.timestamp(),) * 2)

    def tick(cursor, now):
        """A tick at `now`: the sensor's clock and Dagster's (which partitions exist) both say so."""
        monkeypatch.setattr(sensors, "utc_now", lambda: now, raising=False)
        with dg.partition_loading_context(effective_dt=now):
            result = ingestion_logs_sensor(dg.build_sensor_context(cursor=cursor, resources=resources(warehouse_dsn, tmp_path)))
        return [r.partition_key for r in result.run_requests], result.cursor

    requested, cursor = tick(None, arrived + timedelta(minutes=1))
    assert requested == ["2026-01-05-13:00"]  # 15:00 has no partition yet: deferred
    requested, at_13 = tick(cursor, arrived + timedelta(minutes=2))
    assert requested == []
    requested, cursor = tick(at_13, H + timedelta(hours=1, seconds=30))
    assert requested == []  # 14:00 holds nothing
    requested, cursor = tick(cursor, H + timedelta(hours=2, seconds=30))
    assert requested == ["2026-01-05-15:00"]  # its partition exists now
    # A sensor that was stopped from 13:22 to 18:00 comes back for it too.
    assert tick(at_13, H + timedelta(hours=5))[0] == ["2026-01-05-15:00"]

    meta = _materialize(warehouse_dsn, tmp_path, H)
    assert (meta["read"], meta["loaded"], meta["quarantined"]) == (2, 1, 1)
    meta = _materialize(warehouse_dsn, tmp_path, H + timedelta(hours=2))
    assert (meta["read"], meta["loaded"], meta["quarantined"]) == (1, 1, 0)
    assert tick(cursor, H + timedelta(hours=2, minutes=1))[0] == []
    assert tick(at_13, H + timedelta(hours=5))[0] == []  # committed since: not requested again
    with psycopg.connect(warehouse_dsn) as conn:
        assert [r[0] for r in conn.execute("SELECT object_id FROM metrics.ingestion_runs ORDER BY 1")] == ["1", "2"]
        (position, reason, hour), = conn.execute("SELECT position, reason, record_hour FROM metrics.quarantine").fetchall()
    assert (position, hour) == (3, H)  # the 30-h record, in its file's hour
    assert "is in the future" in reason and "more than the 24 h" in reason


def test_a_file_name_that_is_not_utf8_neither_stops_the_sensor_nor_fails_the_run(warehouse_dsn, tmp_path):
    import os

    zone = LocalLanding(tmp_path)
    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    zone.write("ingestion_logs/good.jsonl", (_line(now + timedelta(minutes=5), 1) + _line(now + timedelta(minutes=6), 2)).encode())
    bad = os.fsencode(zone.root) + b"/ingestion_logs/r\xe9sultats.jsonl"
    with open(bad, "wb") as fh:
        fh.write(_line(now + timedelta(minutes=7), 3).encode())
    os.utime(bad, ((now + timedelta(minutes=30)).timestamp(),) * 2)

    first = ingestion_logs_sensor(dg.build_sensor_context(cursor=None, resources=resources(warehouse_dsn, tmp_path)))
    assert [r.partition_key for r in first.run_requests] == [now.strftime("%Y-%m-%d-%H:%M")]
    again = ingestion_logs_sensor(dg.build_sensor_context(cursor=first.cursor, resources=resources(warehouse_dsn, tmp_path)))
    assert again.run_requests == []
    meta = _materialize(warehouse_dsn, tmp_path, now)
    assert (meta["loaded"], meta["quarantined"], meta["refused_files"]) == (2, 1, 1)
    assert "file name is not valid UTF-8" in meta["quarantine_reasons"]
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT source_file, position FROM metrics.quarantine").fetchall() == [
            ("ingestion_logs/r\\xe9sultats.jsonl", -1)]
