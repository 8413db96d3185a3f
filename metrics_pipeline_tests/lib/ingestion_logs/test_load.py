import json
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline.dev.simulate_logs import simulate
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.landing import Cursor, LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.ingestion_logs import at

H13 = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
OPTIONS = ParseOptions(now=datetime(2026, 1, 6, tzinfo=timezone.utc))


def load(dsn, zone, start=H13, hours=1):
    return ingestion_load.load_window(Warehouse(dsn, "metrics"), zone, start, start + timedelta(hours=hours), OPTIONS)


def runs(dsn, start=H13, hours=1):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT company, object_id, sequence_no, status, started_at, duration_s, source_file, source_position "
            "FROM metrics.ingestion_runs WHERE started_at >= %s AND started_at < %s ORDER BY 2, 3",
            (start, start + timedelta(hours=hours)),
        ).fetchall()


def quarantine(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT source_file, position, reason, record_hour FROM metrics.quarantine ORDER BY 1, 2").fetchall()


@pytest.fixture
def zone(tmp_path):
    return LocalLanding(tmp_path)


def test_a_window_loads_its_hours_records_from_every_file_and_quarantines_the_bad_ones(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5), at(H13, 10, Etat="??"), at(H13 + timedelta(hours=1), 2)]).encode())
    zone.write("ingestion_logs/b.jsonl", (json.dumps(at(H13, 20, Objet_Id=7)) + "\n{torn").encode())
    result = load(warehouse_dsn, zone)
    assert (result.files, result.read, result.loaded, result.quarantined, result.rows) == (2, 4, 2, 2, 2)
    assert result.read == result.loaded + result.quarantined
    assert [(r[1], r[6], r[7]) for r in runs(warehouse_dsn)] == [("42", "ingestion_logs/a.json", 0), ("7", "ingestion_logs/b.jsonl", 1)]
    bad = quarantine(warehouse_dsn)
    assert [(q[0], q[1]) for q in bad] == [("ingestion_logs/a.json", 1), ("ingestion_logs/b.jsonl", 2)]
    assert all(q[3] == H13 for q in bad)
    # The next hour is its own partition.
    assert load(warehouse_dsn, zone, H13 + timedelta(hours=1)).rows == 1


def test_reloading_a_window_is_idempotent(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, m) for m in range(0, 60, 7)] + [{"x": 1}]).encode())
    load(warehouse_dsn, zone)
    before, bad_before = runs(warehouse_dsn), quarantine(warehouse_dsn)
    again = load(warehouse_dsn, zone)
    assert runs(warehouse_dsn) == before and quarantine(warehouse_dsn) == bad_before
    assert again.rows == len(before)


def test_the_same_run_in_two_files_is_stored_once(warehouse_dsn, zone):
    record = at(H13, 5)
    zone.write("ingestion_logs/a.json", json.dumps([record]).encode())
    zone.write("ingestion_logs/copy-of-a.jsonl", (json.dumps(record) + "\n").encode())
    result = load(warehouse_dsn, zone)
    assert (result.loaded, result.duplicates, result.rows) == (2, 1, 1)
    assert len(runs(warehouse_dsn)) == 1


def test_a_rewritten_file_replaces_its_rows_and_quarantine(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5), at(H13, 6), at(H13, 7, Etat="?")]).encode())
    load(warehouse_dsn, zone)
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5, Etat="FAILED")]).encode())
    load(warehouse_dsn, zone)
    assert [(r[2], r[3]) for r in runs(warehouse_dsn)] == [("2026-01-05-13-05", "FAILED")]
    assert quarantine(warehouse_dsn) == []


def test_rows_of_files_gone_from_the_landing_zone_are_kept(warehouse_dsn, zone):
    zone.write("ingestion_logs/old.json", json.dumps([at(H13, 5)]).encode())
    load(warehouse_dsn, zone)
    zone.delete("ingestion_logs/old.json")
    result = load(warehouse_dsn, zone)
    assert result.missing_files == 1 and len(runs(warehouse_dsn)) == 1


def test_files_are_marked_processed_once_all_their_hours_are_committed(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5), at(H13 + timedelta(hours=1), 5)]).encode())

    def processed():
        with psycopg.connect(warehouse_dsn) as conn:
            return conn.execute("SELECT processed_at IS NOT NULL, cardinality(processed_hours) FROM metrics.landing_files").fetchone()

    load(warehouse_dsn, zone)
    assert processed() == (False, 1)
    load(warehouse_dsn, zone, H13 + timedelta(hours=1))
    assert processed() == (True, 2)


def test_the_sensor_plan_walks_new_files_and_returns_the_hours_they_touch(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5), at(H13 + timedelta(hours=2), 1)]).encode())
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        hours, cursor, files = ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS)
        assert (hours, files) == ([H13, H13 + timedelta(hours=2)], 1)
        assert ingestion_load.plan_requests(conn, "metrics", zone, cursor, OPTIONS)[0] == []
        zone.write("ingestion_logs/b.jsonl", (json.dumps(at(H13, 30)) + "\n").encode())
        hours, cursor, files = ingestion_load.plan_requests(conn, "metrics", zone, cursor, OPTIONS)
        assert (hours, files) == ([H13], 1)


def test_simulated_logs_load_with_read_equal_to_loaded_plus_quarantined(warehouse_dsn, zone):
    stats = simulate(zone, H13, H13 + timedelta(hours=3), jobs_per_hour=150, seed=3, bad_rate=0.05)
    total = ingestion_load.IngestionLoadResult()
    for h in range(4):  # a broken record's start can fall just after the simulated period
        r = load(warehouse_dsn, zone, H13 + timedelta(hours=h))
        assert r.read == r.loaded + r.quarantined
        total.read += r.read
        total.quarantined += r.quarantined
        total.failures += r.failures
    assert total.read == stats.records
    assert total.quarantined == stats.bad_records
    assert 0 < total.failures < stats.records
    assert len(quarantine(warehouse_dsn)) == stats.bad_records


def test_simulation_is_deterministic_for_a_seed(tmp_path):
    a, b = LocalLanding(tmp_path / "a"), LocalLanding(tmp_path / "b")
    simulate(a, H13, H13 + timedelta(hours=2), seed=11)
    simulate(b, H13, H13 + timedelta(hours=2), seed=11)
    assert [(o.key, a.read(o.key)) for o in a.list()] == [(o.key, b.read(o.key)) for o in b.list()]


def test_thousands_of_files_are_indexed_across_ticks_each_exactly_once(warehouse_dsn, zone):
    import time

    for i in range(3000):
        zone.write(f"ingestion_logs/burst/{i:05d}.jsonl", (json.dumps(at(H13, i % 60, Objet_Id=i)) + "\n").encode())
    seen, cursor, ticks = 0, Cursor(), 0
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        while True:
            started = time.monotonic()
            hours, cursor, files = ingestion_load.plan_requests(conn, "metrics", zone, cursor, OPTIONS, max_files=1000)
            assert time.monotonic() - started < 40  # well inside Dagster's 60 s sensor limit
            if not files:
                break
            ticks += 1
            seen += files
            assert hours == [H13]
        indexed = conn.execute("SELECT count(*) FROM metrics.landing_files WHERE key LIKE 'ingestion_logs/burst/%'").fetchone()[0]
    assert (ticks, seen, indexed) == (3, 3000, 3000)
    assert load(warehouse_dsn, zone).rows == 3000


def test_a_tick_out_of_time_stops_early_and_the_next_continues(warehouse_dsn, zone):
    for i in range(10):
        zone.write(f"ingestion_logs/{i:02d}.jsonl", (json.dumps(at(H13, i)) + "\n").encode())
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        _, cursor, files = ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS, budget_s=0)
        assert 1 <= files < 10
        _, cursor, rest = ingestion_load.plan_requests(conn, "metrics", zone, cursor, OPTIONS)
        assert files + rest == 10


def test_a_file_rewritten_into_another_hour_leaves_no_stale_run_behind(warehouse_dsn, zone):
    zone.write("ingestion_logs/a.json", json.dumps([at(H13, 5)]).encode())
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        hours, cursor, _ = ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS)
        for hour in hours:
            load(warehouse_dsn, zone, hour)
        import time

        time.sleep(0.01)
        zone.write("ingestion_logs/a.json", json.dumps([at(H13 + timedelta(hours=1), 5)]).encode())
        hours, cursor, _ = ingestion_load.plan_requests(conn, "metrics", zone, cursor, OPTIONS)
    assert hours == [H13, H13 + timedelta(hours=1)]  # the old hour is recomputed too
    for hour in hours:
        load(warehouse_dsn, zone, hour)
    assert [r[4] for r in runs(warehouse_dsn, H13, hours=2)] == [H13 + timedelta(hours=1, minutes=5)]


def test_quarantine_rows_of_files_gone_from_the_landing_zone_are_kept(warehouse_dsn, zone):
    zone.write("ingestion_logs/old.json", json.dumps([at(H13, 5, Etat="?"), at(H13, 6)]).encode())
    load(warehouse_dsn, zone)
    zone.delete("ingestion_logs/old.json")
    load(warehouse_dsn, zone)
    assert len(quarantine(warehouse_dsn)) == 1 and len(runs(warehouse_dsn)) == 1


# -- issue 16 ------------------------------------------------------------------------------------------

def _plant(zone, name: bytes, data: bytes) -> None:
    """A file under raw bytes for a name (a producer with a latin-1 locale), beside the zone's API."""
    import os

    path = os.fsencode(zone.root) + b"/" + name
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _landing_rows(dsn):
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute("SELECT key, processed_at IS NOT NULL FROM metrics.landing_files").fetchall())


def test_a_file_name_that_is_not_utf8_is_quarantined_under_its_escaped_name_and_the_rest_loads(warehouse_dsn, zone):
    zone.write("ingestion_logs/good.jsonl", (json.dumps(at(H13, 5)) + "\n" + json.dumps(at(H13, 6, Objet_Id=7)) + "\n").encode())
    _plant(zone, b"ingestion_logs/r\xe9sultats.jsonl", (json.dumps(at(H13, 9, Objet_Id=9)) + "\n").encode())
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:  # the sensor's side: it indexes every file
        hours, _, files = ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS)
    assert files == 2 and H13 in hours
    for _ in range(2):  # and a re-run is idempotent
        result = load(warehouse_dsn, zone, H13, hours=int((OPTIONS.now - H13).total_seconds() // 3600) + 1)
        assert (result.loaded, result.quarantined, result.refused_files, result.read) == (2, 1, 1, 3)
        assert [q[:2] for q in quarantine(warehouse_dsn)] == [("ingestion_logs/r\\xe9sultats.jsonl", -1)]
        assert "file name is not valid UTF-8" in quarantine(warehouse_dsn)[0][2]
    # Its content was never read: it is never marked processed, so retention will not delete it.
    assert _landing_rows(warehouse_dsn) == {"ingestion_logs/good.jsonl": True, "ingestion_logs/r\\xe9sultats.jsonl": False}


def test_a_path_too_long_for_the_warehouse_index_is_quarantined_and_the_rest_loads(warehouse_dsn, zone):
    deep = "/".join(["d" * 250] * 12)  # 3,000 bytes: over PostgreSQL's btree entry limit of about 2,700
    zone.write(f"ingestion_logs/{deep}/jobs.jsonl", (json.dumps(at(H13, 9, Objet_Id=9)) + "\n").encode())
    zone.write("ingestion_logs/good.jsonl", (json.dumps(at(H13, 5)) + "\n").encode())
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        assert ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS)[2] == 2
    result = load(warehouse_dsn, zone, H13, hours=int((OPTIONS.now - H13).total_seconds() // 3600) + 1)
    assert (result.loaded, result.quarantined, result.refused_files) == (1, 1, 1)
    (key, position, reason, _), = quarantine(warehouse_dsn)
    assert position == -1 and len(key.encode()) <= 1024 and "more than the 1024 allowed" in reason


def test_an_empty_file_belongs_to_its_arrival_hour_and_is_marked_processed(warehouse_dsn, zone):
    import os

    zone.write("ingestion_logs/good.jsonl", (json.dumps(at(H13, 5)) + "\n").encode())
    for name, data in (("empty.jsonl", b""), ("blank.json", b"\xef\xbb\xbf \n"), ("nothing.json", b"[]")):
        zone.write(f"ingestion_logs/{name}", data)
        os.utime(zone.path(f"ingestion_logs/{name}"), ((H13 + timedelta(minutes=40)).timestamp(),) * 2)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        hours, _, _ = ingestion_load.plan_requests(conn, "metrics", zone, Cursor(), OPTIONS)
    assert hours == [H13]  # the sensor requests the hour that owns them
    result = load(warehouse_dsn, zone)
    assert (result.files, result.empty_files, result.read, result.loaded) == (4, 3, 1, 1)
    assert set(_landing_rows(warehouse_dsn).values()) == {True}


def test_records_are_judged_against_the_files_arrival_so_a_rerun_days_later_changes_nothing(warehouse_dsn, zone):
    """A record up to a day ahead of its file's arrival is kept for its own hour; one further ahead
    is quarantined, and stays so when the hour is re-run after the clock has passed its start."""
    import dataclasses
    import os

    arrived = H13 + timedelta(minutes=20)
    zone.write("ingestion_logs/skewed.jsonl", "".join(json.dumps(r) + "\n" for r in (
        at(H13, 5, Objet_Id=1),
        at(H13 + timedelta(hours=2), 10, Objet_Id=2),  # 1 h 50 ahead: a clock or time-zone slip
        at(H13 + timedelta(hours=30), 30, Objet_Id=3),  # 30 h 10 ahead: no slip explains it
    )).encode())
    os.utime(zone.path("ingestion_logs/skewed.jsonl"), (arrived.timestamp(),) * 2)

    def run(now):
        options = dataclasses.replace(OPTIONS, now=now)
        result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, H13, H13 + timedelta(hours=1), options)
        return result, runs(warehouse_dsn, H13, hours=40), quarantine(warehouse_dsn)

    first = run(arrived + timedelta(minutes=1))
    later = run(arrived + timedelta(days=3))  # a re-run once the clock is past every start
    assert later[1:] == first[1:] and later[0] == first[0]
    assert [r[1] for r in first[1]] == ["1"] and (first[0].loaded, first[0].quarantined) == (1, 1)
    (_, position, reason, hour), = first[2]
    assert (position, hour) == (3, H13)
    assert reason.startswith(f"start {(H13 + timedelta(hours=30, minutes=30)).isoformat()} is in the future: 30.2 h after "
                             f"the file arrived ({arrived.isoformat()}), more than the 24 h")
