from datetime import datetime, timedelta, timezone

import pandas as pd
import psycopg
import pytest

from metrics_pipeline.lib.warehouse import retention
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import load_points
from metrics_pipeline.lib.warehouse.partitioning import ensure_partitions
from metrics_pipeline.lib.yaml_config import ConfigError

NOW = datetime(2026, 11, 22, 12, tzinfo=timezone.utc)


def point(ts):
    return pd.DataFrame({"metric": ["host_load1"], "resource": ["h"], "labels": [{"host": "h"}], "unit": ["count"],
                         "ts": [pd.Timestamp(ts)], "value": [1.0]})


def partitions(db, table):
    return sorted(r[0] for r in db.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s", (table,)))


def test_only_partitions_entirely_past_retention_are_dropped(warehouse_dsn, db):
    for days in (9, 8, 7, 1):
        ts = NOW - timedelta(days=days)
        load_points(Warehouse(warehouse_dsn), point(ts), source="host", start=ts, end=ts + timedelta(hours=1))
    ensure_partitions(db, "metrics", "rollup_1h", NOW - timedelta(days=800), NOW)
    dry = retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW, dry_run=True)
    assert partitions(db, "points") == ["points_p20261113", "points_p20261114", "points_p20261115", "points_p20261121"]
    dropped = retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW)
    assert dropped == dry
    # 7 days before 2026-11-22 12:00 is 11-15 12:00: the 11-15 partition still holds rows inside the window.
    assert partitions(db, "points") == ["points_p20261115", "points_p20261121"]
    assert {d.partition for d in dropped if d.table == "points"} == {"points_p20261113", "points_p20261114"}
    assert all(d.upper <= NOW - timedelta(days=730) for d in dropped if d.table == "rollup_1h")
    assert db.execute("SELECT count(*) FROM metrics.points").fetchone()[0] == 2
    assert retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW) == []


def test_sketch_partitions_expire_with_their_tier(warehouse_dsn, db):
    """Each rollup tier's sketches (migration 0013) follow the tier's retention, partition for partition."""
    for table, days in (("rollup_5m", 100), ("rollup_1h", 800), ("rollup_1d", 2500)):
        ensure_partitions(db, "metrics", table, NOW - timedelta(days=days), NOW)
    dropped = retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW)
    for tier, keep in (("rollup_5m", 90), ("rollup_1h", 730), ("rollup_1d", 1825)):
        ours = {d.partition.removeprefix(f"{tier}_sketch_") for d in dropped if d.table == f"{tier}_sketch"}
        assert ours and ours == {d.partition.removeprefix(f"{tier}_") for d in dropped if d.table == tier}
        assert all(d.upper <= NOW - timedelta(days=keep) for d in dropped if d.table == f"{tier}_sketch")
        left = [p.removeprefix(f"{tier}_") for p in partitions(db, tier)]
        assert left and left == [p.removeprefix(f"{tier}_sketch_") for p in partitions(db, f"{tier}_sketch")]


def test_series_intervals_go_with_the_raw_points_they_describe(warehouse_dsn, db):
    """The nominal interval of a series per day (alert gap tolerance) is kept as long as raw points."""
    for days in (9, 1):
        ts = NOW - timedelta(days=days)
        frame = pd.concat([point(ts), point(ts + timedelta(seconds=10))])
        load_points(Warehouse(warehouse_dsn), frame, source="host", start=ts, end=ts + timedelta(hours=1))
    assert db.execute("SELECT count(*) FROM metrics.series_intervals").fetchone() == (2,)
    retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW, dry_run=True)
    assert db.execute("SELECT count(*) FROM metrics.series_intervals").fetchone() == (2,)
    retention.apply(Warehouse(warehouse_dsn), config=retention.RetentionConfig(), now=NOW)
    assert db.execute("SELECT day, interval_s FROM metrics.series_intervals").fetchall() == [
        ((NOW - timedelta(days=1)).date(), 10.0)]


def test_retention_is_configurable_and_validated(tmp_path):
    path = tmp_path / "retention.yaml"
    path.write_text("points: 48h\nrollup_5m: 30d\n")
    config = retention.load_config(path)
    assert config.points == timedelta(hours=48) and config.rollup_5m == timedelta(days=30)
    assert config.rollup_1d == timedelta(days=1825)
    path.write_text("points: forever\nrollups: 3d\n")
    with pytest.raises(ConfigError) as exc:
        retention.load_config(path)
    assert "points: 'forever' is not a duration like 30s, 5m, 1h or 7d" in str(exc.value) and "rollups: unknown key" in str(exc.value)


def test_the_retention_job_reports_what_it_dropped(warehouse_dsn, tmp_path):
    from metrics_pipeline.defs.maintenance.retention import retention_job
    from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource

    old = datetime.now(timezone.utc) - timedelta(days=30)
    load_points(Warehouse(warehouse_dsn), point(old), source="host", start=old, end=old + timedelta(hours=1))
    result = retention_job.execute_in_process(resources={
        "warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=str(tmp_path / "landing"))})
    assert result.success
    outputs = {e.step_key: e.event_specific_data.metadata for e in result.all_events if e.event_type_value == "STEP_OUTPUT"}
    metadata = outputs["drop_expired_partitions"]
    assert metadata["dropped"].value >= 1 and "points_p" in metadata["partitions"].value
    assert outputs["delete_expired_landing_files"]["deleted_files"].value == 0


def test_the_cli_dry_run_lists_and_keeps(warehouse_dsn):
    import os
    import subprocess
    import sys

    old = datetime.now(timezone.utc) - timedelta(days=30)
    load_points(Warehouse(warehouse_dsn), point(old), source="host", start=old, end=old + timedelta(hours=1))
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn}
    run = subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "retention", "--dry-run"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"would drop points_p{old:%Y%m%d}" in run.stdout
    again = subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "retention", "--dry-run"],
                           env=env, capture_output=True, text=True, timeout=120)
    assert f"would drop points_p{old:%Y%m%d}" in again.stdout  # a dry run dropped nothing


def test_committed_landing_files_past_retention_are_deleted_and_nothing_else(warehouse_dsn, db, tmp_path):
    """Real loads mark files processed; retention deletes only committed files whose hours are all
    older than the landing retention, and re-running an old ingestion hour afterwards keeps its rows."""
    import dagster as dg

    from metrics_pipeline.defs.host.assets import host_points
    from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
    from metrics_pipeline.dev.demo_sources import host_minute_lines
    from metrics_pipeline.dev.simulate_logs import simulate
    from metrics_pipeline.lib.host.agent import host_key
    from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
    from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
    from metrics_pipeline.lib.landing import open_landing

    now = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    old, recent = now - timedelta(days=20), now - timedelta(days=2)
    zone = open_landing(str(tmp_path / "landing"))
    for hour in (old, recent):
        zone.write(host_key("web-1", hour.timestamp()), host_minute_lines("web-1", 1, int(hour.timestamp())).encode())
        dg.materialize([host_points], partition_key=hour.strftime("%Y-%m-%d-%H:%M"), resources={
            "warehouse": WarehouseResource(dsn=warehouse_dsn), "landing": LandingZoneResource(url=str(tmp_path / "landing"))})
    simulate(zone, old, old + timedelta(hours=1), jobs_per_hour=20)
    loaded = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, old, old + timedelta(hours=1), ParseOptions())
    zone.write("host/never-loaded/web-9/web-9-20200101T0000.jsonl", b"{}\n")  # not committed: kept at any age
    runs_before = db.execute("SELECT count(*) FROM metrics.ingestion_runs").fetchone()[0]
    assert runs_before == loaded.loaded > 0

    config = retention.RetentionConfig()
    dry = retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=config, now=now, dry_run=True)
    old_keys = {o.key for o in zone.list() if o.key != "host/never-loaded/web-9/web-9-20200101T0000.jsonl"
                and recent.strftime("%Y-%m-%d") not in o.key}
    assert {f.key for f in dry} == old_keys and all(f.newest_hour < now - timedelta(days=14) for f in dry)
    deleted = retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=config, now=now)
    assert {f.key for f in deleted} == old_keys
    left = {o.key for o in zone.list()}
    assert left and not left & old_keys and "host/never-loaded/web-9/web-9-20200101T0000.jsonl" in left
    assert db.execute("SELECT count(*) FROM metrics.landing_files WHERE key = ANY(%s)", (list(old_keys),)).fetchone() == (0,)
    # Re-running the old ingestion hour with its files gone touches none of its rows.
    ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, old, old + timedelta(hours=1), ParseOptions())
    assert db.execute("SELECT count(*) FROM metrics.ingestion_runs").fetchone()[0] == runs_before
    assert retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=config, now=now) == []


def test_landing_retention_shorter_than_points_is_refused_and_follows_a_longer_points_retention():
    assert retention.RetentionConfig(points="30d").landing_files == timedelta(days=30)
    assert retention.RetentionConfig().landing_files == timedelta(days=14)
    with pytest.raises(ValueError, match="landing .* must be at least points"):
        retention.RetentionConfig(points="30d", landing="7d")


# -- landing retention and odd files (issue 16) --------------------------------------------------------

def test_empty_landing_files_are_committed_with_their_hour_and_deleted_in_time(warehouse_dsn, db, tmp_path):
    import json
    import os

    from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
    from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
    from metrics_pipeline.lib.landing import LocalLanding
    from metrics_pipeline_tests.support.ingestion_logs import at

    hour = NOW.replace(minute=0) - timedelta(days=20)
    zone = LocalLanding(tmp_path)
    zone.write("ingestion_logs/jobs.jsonl", (json.dumps(at(hour, 5)) + "\n").encode())
    for key, data in (("ingestion_logs/empty.jsonl", b""), ("ingestion_logs/none.json", b"[]")):
        zone.write(key, data)  # a job that ran nothing, or created its file and died
    for o in zone.list():
        os.utime(zone.path(o.key), ((hour + timedelta(minutes=50)).timestamp(),) * 2)
    options = ParseOptions(now=NOW)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:  # the sensor indexes them
        assert ingestion_load.plan_requests(conn, "metrics", zone, ingestion_load.Cursor(), options)[0] == [hour]
    ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, hour, hour + timedelta(hours=1), options)
    deleted = retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=retention.RetentionConfig(), now=NOW)
    assert sorted(f.key for f in deleted) == ["ingestion_logs/empty.jsonl", "ingestion_logs/jobs.jsonl", "ingestion_logs/none.json"]
    assert zone.list() == [] and db.execute("SELECT count(*) FROM metrics.landing_files").fetchone() == (0,)


def test_a_landing_file_retention_cannot_delete_never_stops_the_others(warehouse_dsn, db, tmp_path):
    """Keys the zone refuses to touch (a backslash, a name it lists escaped) are left in place and
    dropped from the index; a delete that fails is reported after every other file is deleted."""
    import os

    from metrics_pipeline.lib.landing import LandingError, LandingObject, LocalLanding
    from metrics_pipeline.lib.warehouse import landing_index

    zone = LocalLanding(tmp_path)
    old = NOW.replace(minute=0) - timedelta(days=30)
    (tmp_path / "host" / "d").mkdir(parents=True)
    (tmp_path / "host" / "d" / "a\\b.jsonl").write_bytes(b"{}\n")  # refused: a backslash
    with open(os.fsencode(tmp_path) + b"/host/d/r\xe9sum\xe9.jsonl", "wb") as fh:
        fh.write(b"{}\n")
    (tmp_path / "host" / "d" / "stuck.jsonl").mkdir()  # unlink fails: a directory where a file was
    for i in range(3):
        zone.write(f"host/d/ok-{i}.jsonl", b"{}\n")
    keys = ["host/d/a\\b.jsonl", "host/d/r\\xe9sum\\xe9.jsonl", "host/d/stuck.jsonl"] + [f"host/d/ok-{i}.jsonl" for i in range(3)]
    objects = [LandingObject(0.0, key, 3, f"e{n}") for n, key in enumerate(keys)]
    with db.transaction():  # as a load leaves them: committed, a month old
        landing_index.mark_processed(db, "metrics", "host", [(o, [old]) for o in objects], old, old + timedelta(hours=1))

    with pytest.raises(LandingError, match=r"could not delete 1 file\(s\) \(deleted 3 of 6 expired\): 'host/d/stuck.jsonl'"):
        retention.apply_landing(Warehouse(warehouse_dsn, "metrics"), zone, config=retention.RetentionConfig(), now=NOW)
    assert sorted(o.key for o in zone.list()) == ["host/d/a\\b.jsonl", "host/d/r\\xe9sum\\xe9.jsonl"]
    # The refused keys leave the index (nothing retries them daily); the failed one stays for the next run.
    assert [k for (k,) in db.execute("SELECT key FROM metrics.landing_files ORDER BY key")] == ["host/d/stuck.jsonl"]
