"""Fixtures: one real PostgreSQL for the whole session, a fresh database per test.

The server is the project's own embedded PostgreSQL (non-durable: fsync off, it is thrown away),
unless `METRICS_PIPELINE_TEST_ADMIN_DSN` names an existing server where the suite may create and
drop databases. Each test gets its own database cloned from a migrated template, which costs a
few tens of milliseconds and keeps tests independent.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from psycopg.conninfo import make_conninfo

# Helpers that tests import from metrics_pipeline_tests.support get pytest's assertion messages too,
# as they did when they lived in test modules and conftests.
pytest.register_assert_rewrite("metrics_pipeline_tests.support")

from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres
from metrics_pipeline_tests.support.system_packages import require_system_package

#: fixtures shared by several folders, registered here once (pytest_plugins only works in this conftest)
pytest_plugins = ["metrics_pipeline_tests.support.cloudwatch"]

ROOT = Path(__file__).resolve().parents[1]

ADMIN_DSN_ENV = "METRICS_PIPELINE_TEST_ADMIN_DSN"
TEMPLATE_DB = "mp_test_template"


class PgServer:
    """A server the tests may create databases on."""

    def __init__(self, admin_dsn: str, embedded: EmbeddedPostgres | None = None):
        self.admin_dsn = admin_dsn
        self.embedded = embedded

    def dsn(self, database: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=database)

    def create_database(self, template: str | None = None) -> str:
        name = f"mp_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            clause = f' TEMPLATE "{template}"' if template else ""
            conn.execute(f'CREATE DATABASE "{name}"{clause}')
        return name

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    admin = os.environ.get(ADMIN_DSN_ENV)
    if admin:
        yield PgServer(admin)
        return
    data_dir = Path(tempfile.mkdtemp(prefix="mp-test-pg-"))
    server = EmbeddedPostgres(data_dir / "pg", durable=False)
    server.start()
    try:
        yield PgServer(server.dsn("postgres"), server)
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def migrated_template(pg_server: PgServer) -> Iterator[str]:
    pg_server.drop_database(TEMPLATE_DB)
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    migrate.migrate(Warehouse(pg_server.dsn(TEMPLATE_DB), "metrics"))
    yield TEMPLATE_DB
    pg_server.drop_database(TEMPLATE_DB)


@pytest.fixture
def warehouse_dsn(pg_server: PgServer, migrated_template: str) -> Iterator[str]:
    """DSN of a fresh, migrated warehouse database (schema `metrics`)."""
    name = pg_server.create_database(template=migrated_template)
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


@pytest.fixture
def empty_dsn(pg_server: PgServer) -> Iterator[str]:
    """DSN of a fresh database with no migrations applied."""
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


@pytest.fixture
def db(warehouse_dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def pg_dump(pg_server: PgServer) -> str:
    from metrics_pipeline.lib.warehouse.embedded_pg import find_binaries

    path = shutil.which("pg_dump", path=str(find_binaries()))
    if path is None:
        pytest.skip("pg_dump not found next to the PostgreSQL binaries")
    return path


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/CloudWatch server on 127.0.0.1 (a real HTTP server, not patched clients)."""
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        os.environ.setdefault(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_landing_url(moto_endpoint: str) -> str:
    """A fresh bucket on the moto server; returns the s3:// URL of a prefix in it."""
    import boto3

    bucket = f"landing-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/zone"


def _alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path):
    """A real Alertmanager on 127.0.0.1 with the shipped sample configuration; stopped afterwards."""
    binary = require_system_package(_alertmanager_binary(), "prometheus-alertmanager")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [binary, f"--config.file={ROOT / 'alertmanager.example.yml'}", f"--storage.path={tmp_path / 'am'}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Alertmanager did not start: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
