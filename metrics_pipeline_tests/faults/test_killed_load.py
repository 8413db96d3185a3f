"""A load or rollup process killed with SIGKILL in the middle of its transaction (SPEC §9).

The victim is a real subprocess calling the same library functions the assets call
(`loader.load_points`, `rollups.refresh`); the test watches it through `pg_stat_activity` /
`pg_stat_progress_copy` and kills it while its COPY or its rewrite of the window is in flight.
The window must then hold its previous state byte for byte, and the next run must complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.faults.dump import dump_tables
from metrics_pipeline_tests.support.killed_load import END, SERIES, T, frame

ROOT = Path(__file__).resolve().parents[2]
APP = "faults-victim"

VICTIM = """
import sys
from datetime import datetime, timedelta
from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.killed_load import frame
what, dsn, start, series = sys.argv[1], sys.argv[2], datetime.fromisoformat(sys.argv[3]), int(sys.argv[4])
if what == "load":
    loader.load_points(Warehouse(dsn), frame(1.0, series), source="host", start=start, end=start + timedelta(hours=1))
else:
    rollups.refresh(Warehouse(dsn, "metrics"), ["rollup_5m", "rollup_1h"], start, start + timedelta(hours=1))
"""


def start_victim(what: str, dsn: str, series: int = SERIES) -> subprocess.Popen:
    """A process loading `frame(1.0, series)` ("load") or refreshing the rollups ("rollup") of [T, END)."""
    return subprocess.Popen(
        [sys.executable, "-c", VICTIM, what, make_conninfo(dsn, application_name=APP), T.isoformat(), str(series)],
        cwd=ROOT, stderr=subprocess.PIPE, text=True)


def victim_backend(conn: psycopg.Connection) -> dict | None:
    row = conn.execute(
        """SELECT a.pid, a.state, a.xact_start, a.wait_event_type, a.wait_event, a.query, p.tuples_processed
           FROM pg_stat_activity a LEFT JOIN pg_stat_progress_copy p USING (pid)
           WHERE a.application_name = %s""", (APP,)).fetchone()
    keys = ("pid", "state", "xact_start", "wait_event_type", "wait_event", "query", "tuples")
    return dict(zip(keys, row)) if row else None


def wait_until(conn: psycopg.Connection, proc: subprocess.Popen, condition, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        backend = victim_backend(conn)
        if backend is not None and condition(backend):
            return backend
        assert proc.poll() is None, f"the victim ended before it could be killed: {proc.stderr.read()[-2000:]}"
        time.sleep(0.002)
    raise AssertionError(f"the victim never reached the expected state; last seen {victim_backend(conn)}")


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def wait_gone(conn: psycopg.Connection, timeout: float = 60.0) -> None:
    """Until the server has noticed the dead client and rolled its transaction back."""
    deadline = time.monotonic() + timeout
    while victim_backend(conn) is not None:
        assert time.monotonic() < deadline, f"the killed client's backend lingers: {victim_backend(conn)}"
        time.sleep(0.02)


def dumps(conn, tables) -> dict[str, bytes]:
    return dump_tables(conn, tables, T, END)


def test_sigkill_during_the_copy_of_a_reload_leaves_the_window_byte_identical(warehouse_dsn, db):
    loader.load_points(Warehouse(warehouse_dsn), frame(0.0, 10), source="host", start=T, end=END)
    before = dumps(db, ["points", "series"])

    proc = start_victim("load", warehouse_dsn)
    seen = wait_until(db, proc, lambda b: (b["query"] or "").lstrip().startswith("COPY") and (b["tuples"] or 0) > 0)
    kill(proc)
    assert seen["xact_start"] is not None and 0 < seen["tuples"] < SERIES * 3600  # mid-COPY, in a transaction
    wait_gone(db)
    assert dumps(db, ["points", "series"]) == before

    result = loader.load_points(Warehouse(warehouse_dsn), frame(1.0), source="host", start=T, end=END)
    assert (result.points, result.updated, result.inserted, result.deleted) == (
        SERIES * 3600, 10 * 3600, (SERIES - 10) * 3600, 0)
    assert db.execute("SELECT count(*), sum(value) FROM metrics.points").fetchone() == (
        SERIES * 3600, float(frame(1.0)["value"].sum()))


# The Nth row written to the table waits for a lock the test holds: the victim is caught, with its
# transaction open, after it has already deleted or rewritten part of the window.
_GATE = """
CREATE FUNCTION metrics.faults_gate() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n integer := coalesce(nullif(current_setting('faults.rows', true), ''), '0')::integer + 1;
BEGIN
    PERFORM set_config('faults.rows', n::text, true);
    IF n = TG_ARGV[0]::integer THEN PERFORM pg_advisory_xact_lock_shared(TG_ARGV[1]::bigint); END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER faults_gate BEFORE INSERT OR UPDATE ON metrics.{table}
    FOR EACH ROW EXECUTE FUNCTION metrics.faults_gate({nth}, {key});
"""
GATE_KEY = 4242


@pytest.mark.parametrize(("what", "table", "tables", "statement"), [
    # the merge: the vanished series' rows deleted, values being updated
    ("load", "points", ["points", "series"], "UPDATE metrics.points"),
    # the window's rows deleted, new ones being inserted (pg_stat_activity shows the statement's
    # first kilobyte: the head of from_points.sql)
    ("rollup", "rollup_5m", ["rollup_5m", "rollup_1h", "rollup_5m_sketch", "rollup_1h_sketch"],
     "each 5-minute bucket, from the raw points"),
], ids=["load-merge", "rollup-refresh"])
def test_sigkill_while_the_window_is_being_rewritten_leaves_it_byte_identical(
        warehouse_dsn, db, what, table, tables, statement):
    small = 10  # the gate makes timing irrelevant: a small window is enough
    loader.load_points(Warehouse(warehouse_dsn), frame(0.0, small), source="host", start=T, end=END)
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], T, END)
    if what == "load":
        # One vanished series, so the merge has deleted rows before it is stopped.
        loader.load_points(Warehouse(warehouse_dsn), frame(0.0, small + 1), source="host", start=T, end=END)
    else:
        loader.load_points(Warehouse(warehouse_dsn), frame(1.0, small), source="host", start=T, end=END)  # rollups now stale
    before = dumps(db, tables)
    db.execute(_GATE.format(table=table, nth=50, key=GATE_KEY))
    db.execute("SELECT pg_advisory_lock(%s)", (GATE_KEY,))
    proc = start_victim(what, warehouse_dsn, small)
    try:
        seen = wait_until(db, proc, lambda b: b["wait_event"] == "advisory")
        assert seen["xact_start"] is not None and statement in seen["query"]
        kill(proc)
        assert dumps(db, tables) == before  # the half-done rewrite is invisible even before the rollback
    finally:
        db.execute("SELECT pg_advisory_unlock(%s)", (GATE_KEY,))
        if proc.poll() is None:
            proc.kill()
    wait_gone(db)
    assert dumps(db, tables) == before
    db.execute(f"DROP TRIGGER faults_gate ON metrics.{table}")

    if what == "load":
        assert loader.load_points(Warehouse(warehouse_dsn), frame(1.0, small), source="host", start=T, end=END).points == small * 3600
        assert db.execute("SELECT count(*) FROM metrics.points").fetchone()[0] == small * 3600
    else:
        (five, hour) = rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], T, END)
        assert (five.rows, five.deleted, hour.rows) == (small * 12, small * 12, small)
        # The rollups now follow the re-loaded points (every value +1).
        assert db.execute("SELECT sum(sum) FROM metrics.rollup_1h").fetchone()[0] == pytest.approx(
            float(frame(1.0, small)["value"].sum()))
