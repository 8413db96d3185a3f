import os
import shutil
import tempfile
from pathlib import Path

import psycopg
import pytest

from metrics_pipeline.lib.warehouse import embedded_pg
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres, PostgresUnavailable


@pytest.fixture
def data_dir():
    root = Path(tempfile.mkdtemp(prefix="mp-embedded-"))
    yield root / "pg"
    server = EmbeddedPostgres(root / "pg")
    if (root / "pg" / "PG_VERSION").exists():
        server.stop()
    shutil.rmtree(root, ignore_errors=True)


def _backend_pid(dsn):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT pg_backend_pid(), current_setting('data_directory')").fetchone()


def test_start_is_idempotent_and_stop_is_clean(data_dir):
    server = EmbeddedPostgres(data_dir, durable=False).start()
    pid = (data_dir / "postmaster.pid").read_text().split()[0]
    again = EmbeddedPostgres(data_dir, durable=False).start()  # attaches, does not start a second server
    assert (data_dir / "postmaster.pid").read_text().split()[0] == pid
    assert _backend_pid(again.dsn())[1] == str(data_dir)
    with psycopg.connect(server.dsn("postgres")) as conn:
        databases = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
    assert {"metrics", "dagster"} <= databases
    server.stop()
    assert not server.is_running()
    assert not (data_dir / "postmaster.pid").exists()
    server.stop()  # stopping a stopped server is a no-op


def test_a_restarted_server_keeps_its_data(data_dir):
    server = EmbeddedPostgres(data_dir, durable=False).start()
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (7)")
    server.stop()
    server.start()
    with psycopg.connect(server.dsn()) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone() == (7,)


def test_a_configured_dsn_is_used_and_nothing_is_started(monkeypatch, tmp_path):
    monkeypatch.setenv("METRICS_PIPELINE_DSN", "postgresql://u@db.example:5432/metrics")
    assert embedded_pg.resolve_dsn(data_dir=tmp_path / "pg") == "postgresql://u@db.example:5432/metrics"
    assert not (tmp_path / "pg").exists()


def test_without_binaries_the_error_says_how_to_provide_postgresql(monkeypatch, tmp_path):
    monkeypatch.setenv(embedded_pg.BIN_ENV, str(tmp_path))
    with pytest.raises(PostgresUnavailable, match="does not contain initdb"):
        embedded_pg.find_binaries()
    assert "METRICS_PIPELINE_DSN" in embedded_pg.HOW_TO_PROVIDE and "apt-get install" in embedded_pg.HOW_TO_PROVIDE


SYSTEM_BIN = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


@pytest.mark.skipif(not SYSTEM_BIN, reason="the machine has no PostgreSQL binaries of its own")
def test_the_machines_own_binaries_work_when_pgserver_is_absent(monkeypatch, data_dir):
    monkeypatch.setenv(embedded_pg.BIN_ENV, str(SYSTEM_BIN[-1]))
    server = EmbeddedPostgres(data_dir, durable=False).start()
    with psycopg.connect(server.dsn()) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()[0]
    assert version.startswith(SYSTEM_BIN[-1].parent.name)
    server.stop()


def test_long_data_directories_get_a_short_socket_directory(tmp_path):
    server = EmbeddedPostgres(tmp_path / ("d" * 120))
    assert len(str(server.socket_dir)) < 100
    assert "host=" in server.dsn() and server.sqlalchemy_url().startswith("postgresql+psycopg2://")


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs an unprivileged server user")
def test_as_root_the_server_runs_as_an_unprivileged_user(data_dir):
    server = EmbeddedPostgres(data_dir, durable=False).start()
    owner = (data_dir / "PG_VERSION").stat().st_uid
    assert owner != 0
    server.stop()
