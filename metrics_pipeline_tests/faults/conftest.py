"""Fixtures of the fault-injection suite (issue 9, SPEC §9).

Tests that stop or restart PostgreSQL get their own embedded server (`private_pg`), started once for
this folder in a temporary directory, so the session's shared server is never disturbed; each test
gets a fresh migrated database on it. Every other fixture is real too: moto for CloudWatch, the
WhaTap double on 127.0.0.1, local landing zones on disk.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from metrics_pipeline.dev.doubles.whatap import WhatapDouble
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres

_TEMPLATE = "faults_template"


@pytest.fixture(scope="session")
def private_pg() -> Iterator[EmbeddedPostgres]:
    """An embedded PostgreSQL owned by this folder: tests may stop and restart it."""
    root = Path(tempfile.mkdtemp(prefix="mp-faults-pg-"))
    server = EmbeddedPostgres(root / "pg", durable=False).start()
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{_TEMPLATE}"')
    migrate.migrate(Warehouse(server.dsn(_TEMPLATE), "metrics"))
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_dsn(private_pg: EmbeddedPostgres) -> Iterator[str]:
    """A fresh migrated warehouse on the private server, which is running again after the test."""
    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(private_pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{_TEMPLATE}"')
    yield private_pg.dsn(name)
    if not private_pg.is_running():
        private_pg.start()
    with psycopg.connect(private_pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def ram_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory in RAM (/dev/shm) when there is one: creating 20,000 small files on a busy disk
    costs seconds that say nothing about the sensors. Falls back to `tmp_path`."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    path = Path(tempfile.mkdtemp(prefix="mp-faults-", dir=shm))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def whatap_double() -> Iterator[WhatapDouble]:
    server = WhatapDouble()
    server.url = server.start()
    yield server
    server.stop()
