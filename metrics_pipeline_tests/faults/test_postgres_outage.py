"""PostgreSQL down before a run, and restarted in the middle of a load (SPEC §9).

Both run against this folder's own embedded server (`private_pg`), which the tests stop and start.
What must hold: the run fails with an error that says the warehouse database is unreachable (and
never shows the password), no landing file is lost or marked processed, and the re-run leaves
exactly the warehouse a run without any fault leaves (compared byte for byte with a control
database on the session's server).
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.ingestion_logs.assets import ingestion_log_records
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline_tests.support.faults.dump import dump_tables
from metrics_pipeline_tests.support.faults.landing_data import jsonl, record, write_host_hour
from metrics_pipeline_tests.support.runs import failure_messages

H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
KEY = H.strftime("%Y-%m-%d-%H:%M")
PASSWORD = "Tr1cky-p4ss-never-shown"
TABLES = ["points", "series", "ingestion_runs", "quarantine", "landing_files"]


@pytest.fixture
def zone(tmp_path) -> LocalLanding:
    """An hour of two hosts' samples and two ingestion-log files (one with a bad record)."""
    zone = LocalLanding(tmp_path / "landing")
    write_host_hour(zone, H, minutes=5)
    zone.write("ingestion_logs/a.jsonl", jsonl([record(H + timedelta(minutes=m), Objet_Id=m) for m in range(0, 60, 3)]))
    zone.write("ingestion_logs/b.jsonl", jsonl([record(H + timedelta(minutes=7), Objet_Id=900),
                                                record(H + timedelta(minutes=8), Etat="MAYBE")]))
    return zone


def resources(dsn: str, zone: LocalLanding) -> dict:
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=zone.url)}


def snapshot(zone: LocalLanding) -> dict[str, bytes]:
    return {o.key: zone.read(o.key) for o in zone.list()}


def dumps(dsn: str) -> dict[str, bytes]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dump_tables(conn, TABLES, H, H + timedelta(hours=1))


@pytest.fixture
def expected(warehouse_dsn, zone) -> dict[str, bytes]:
    """What the warehouse holds after the same runs without any fault (session server, fresh database)."""
    assert dg.materialize([host_points, ingestion_log_records], partition_key=KEY,
                          resources=resources(warehouse_dsn, zone)).success
    return dumps(warehouse_dsn)




def processed_files(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM metrics.landing_files WHERE processed_at IS NOT NULL").fetchone()[0]


def test_a_run_while_postgres_is_down_fails_naming_the_warehouse_and_the_rerun_loads_everything(
        private_pg, private_dsn, zone, expected, caplog, capfd):
    dsn = make_conninfo(private_dsn, password=PASSWORD)  # trust auth ignores it; it must never be shown
    files = snapshot(zone)
    private_pg.stop()

    result = dg.materialize([host_points, ingestion_log_records], partition_key=KEY, resources=resources(dsn, zone),
                            raise_on_error=False)
    assert not result.success
    messages = failure_messages(result)
    database = psycopg.conninfo.conninfo_to_dict(private_dsn)["dbname"]
    # The warehouse resource cannot be set up (it migrates first), so no step writes anything.
    assert not result.get_asset_materialization_events()
    assert any(f'warehouse database "{database}"' in m and "unreachable" in m for m in messages), messages
    captured = capfd.readouterr()
    assert PASSWORD not in str(result.all_events) + caplog.text + captured.out + captured.err

    private_pg.start()
    assert snapshot(zone) == files  # nothing deleted, nothing rewritten
    assert processed_files(private_dsn) == 0  # nothing claims to be committed

    rerun = dg.materialize([host_points, ingestion_log_records], partition_key=KEY, resources=resources(dsn, zone))
    assert rerun.success
    assert dumps(private_dsn) == expected
    assert processed_files(private_dsn) == len(files)


# A real server-side stall in the middle of the write: the Nth row inserted into the table sleeps,
# so the test can restart PostgreSQL while the COPY and its transaction are open.
_STALL = """
CREATE FUNCTION metrics.faults_stall() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n integer := coalesce(nullif(current_setting('faults.rows', true), ''), '0')::integer + 1;
BEGIN
    PERFORM set_config('faults.rows', n::text, true);
    IF n = TG_ARGV[0]::integer THEN PERFORM pg_sleep(120); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER faults_stall BEFORE INSERT ON metrics.{table} FOR EACH ROW EXECUTE FUNCTION metrics.faults_stall({nth});
"""


def wait_for_stalled_copy(private_pg, database: str, timeout: float = 60.0) -> int:
    """Rows the stalled COPY had already written when it was seen sleeping in the trigger."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(private_pg.dsn("postgres"), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                """SELECT p.tuples_processed, a.query FROM pg_stat_activity a
                   LEFT JOIN pg_stat_progress_copy p USING (pid)
                   WHERE a.datname = %s AND a.wait_event = 'PgSleep'""", (database,)).fetchone()
            if row is not None:
                assert row[1].lstrip().upper().startswith("COPY"), row[1]
                return row[0] or 0
            time.sleep(0.02)
    raise AssertionError("the load never reached the stalled row")


@pytest.mark.parametrize(("asset", "table", "nth"),
                         [(host_points, "points", 1000), (ingestion_log_records, "ingestion_runs", 10)],
                         ids=["host_points", "ingestion_log_records"])
def test_a_restart_in_the_middle_of_a_load_rolls_it_back_and_the_rerun_completes(
        private_pg, private_dsn, zone, expected, asset, table, nth):
    database = psycopg.conninfo.conninfo_to_dict(private_dsn)["dbname"]
    with psycopg.connect(private_dsn, autocommit=True) as conn:
        conn.execute(_STALL.format(table=table, nth=nth))
    files = snapshot(zone)
    outcome = {}
    runner = threading.Thread(target=lambda: outcome.update(result=dg.materialize(
        [asset], partition_key=KEY, resources=resources(private_dsn, zone), raise_on_error=False)))
    runner.start()
    try:
        assert wait_for_stalled_copy(private_pg, database) == nth - 1  # mid-COPY, rows already sent
    finally:
        private_pg.stop()  # fast shutdown: open transactions are rolled back
        private_pg.start()
        runner.join(60)
    result = outcome["result"]
    assert not result.success
    messages = failure_messages(result)
    assert any(f'warehouse database "{database}"' in m and "was lost" in m and "rolled back" in m for m in messages), messages

    with psycopg.connect(private_dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM metrics.{table}").fetchone()[0] == 0  # rolled back
        conn.execute(f"DROP TRIGGER faults_stall ON metrics.{table}")
    assert snapshot(zone) == files and processed_files(private_dsn) == 0

    assert dg.materialize([host_points, ingestion_log_records], partition_key=KEY,
                          resources=resources(private_dsn, zone)).success
    assert dumps(private_dsn) == expected


def test_an_unreachable_server_is_named_without_the_password_of_its_dsn():
    from metrics_pipeline.lib.warehouse.db import WarehouseUnavailable, connect

    with pytest.raises(WarehouseUnavailable) as caught:
        with connect(f"postgresql://loader:{PASSWORD}@127.0.0.1:1/metrics?connect_timeout=3"):
            pass
    message = str(caught.value)
    assert message.startswith('warehouse database "metrics" (user loader on 127.0.0.1:1) is unreachable: ')
    assert "Connection refused" in message and PASSWORD not in message and caught.value.__cause__ is None
    assert isinstance(caught.value, psycopg.OperationalError)  # callers catching psycopg errors still do
