import os
import signal
import subprocess
import sys
import time
import urllib.request

import psutil
import psycopg
import pytest

from metrics_pipeline import cli
from metrics_pipeline.dev.devserver import sqlalchemy_url


def run_cli(*args, env):
    return subprocess.run(
        [sys.executable, "-m", "metrics_pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_migrate_command_is_idempotent(warehouse_dsn):
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn}
    first = run_cli("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert "up to date" in first.stdout


def test_migrate_command_reports_a_bad_schema_name_clearly(warehouse_dsn):
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn, "METRICS_PIPELINE_SCHEMA": "Bad-Name"}
    result = run_cli("migrate", env=env)
    assert result.returncode == 2 and "METRICS_PIPELINE_SCHEMA must be a lower-case SQL identifier" in result.stderr


def test_an_unreachable_warehouse_is_one_line_naming_it_not_a_traceback_or_the_password():
    env = {**os.environ, "METRICS_PIPELINE_DSN": "postgresql://metrics:pw-SECRET-1@127.0.0.1:1/metrics"}
    result = run_cli("migrate", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("metrics-pipeline: database error") and '"metrics"' in result.stderr
    assert "pw-SECRET-1" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("dsn", "url"),
    [
        ("postgresql://postgres@/dagster?host=/tmp/pg&port=5432",
         "postgresql+psycopg2://postgres@/dagster?host=/tmp/pg&port=5432"),
        ("host=db.internal port=6432 user=dagster password=s3cr%t dbname=dagster",
         "postgresql+psycopg2://dagster:s3cr%25t@db.internal:6432/dagster"),
    ],
)
def test_dagster_postgres_urls_name_psycopg2(dsn, url):
    assert sqlalchemy_url(dsn) == url


def test_cli_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert all(cmd in out for cmd in ("db", "migrate", "dev"))


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dev_serves_the_ui_feeds_the_landing_zone_and_ctrl_c_stops_everything(tmp_path):
    import tempfile

    home = tempfile.mkdtemp(prefix="mp-dev-")  # under /tmp: reachable by the unprivileged server user
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("METRICS_PIPELINE_", "DAGSTER_"))}
    env["METRICS_PIPELINE_HOME"] = home
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrics_pipeline.cli", "dev", "--port", str(port)],
        env=env, stdout=open(tmp_path / "dev.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        info = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                info = urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        assert info and b"dagster_webserver_version" in info, (tmp_path / "dev.log").read_text()[-3000:]
        # The demo feeds the landing zone: a host collector and simulated ingestion logs.
        deadline = time.monotonic() + 30
        landing = f"{home}/landing"
        while time.monotonic() < deadline and not (
            os.path.isdir(f"{landing}/host") and os.path.isdir(f"{landing}/ingestion_logs")
        ):
            time.sleep(0.5)
        assert os.listdir(f"{landing}/host") and os.listdir(f"{landing}/ingestion_logs")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert any("collect" in " ".join(p.cmdline()) for p in children)
        # Dagster's own storage is PostgreSQL: its run tables exist in the `dagster` database.
        from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres

        with psycopg.connect(EmbeddedPostgres(f"{home}/pg").dsn("dagster")) as conn:
            assert conn.execute("SELECT to_regclass('public.runs')").fetchone()[0] is not None
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
        assert not os.path.exists(f"{home}/pg/postmaster.pid")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "db", "stop", "--data-dir", f"{home}/pg"])
        import shutil

        shutil.rmtree(home, ignore_errors=True)
