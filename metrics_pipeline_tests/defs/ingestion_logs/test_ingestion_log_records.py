import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg

from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records
from metrics_pipeline.defs.ingestion_logs.sensors import ingestion_logs_sensor
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.dev.simulate_logs import simulate
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
    assert again.run_requests == [] and again.cursor == result.cursor
    zone.write("ingestion_logs/late.jsonl", (json.dumps({"broken": True}) + "\n").encode())
    third = ingestion_logs_sensor(dg.build_sensor_context(cursor=result.cursor, resources=resources(warehouse_dsn, tmp_path)))
    assert len(third.run_requests) == 1  # the file's arrival hour owns its quarantined record
