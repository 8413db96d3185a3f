"""Fixtures of the security suite (issue 9): distinctive secret values, the Dagster event log of a run
as text, a BI login, and small local HTTP servers that misbehave on purpose.

Every secret is a recognisable string (`...-SECRET-...`) so that a single substring search over
everything a run leaves behind (event log records, run record, captured logs, exceptions) proves it
is absent. The secrets reach the code the way production gives them: environment variables, read
through `dg.EnvVar` or the configuration's `*_env` names. The values and helpers (which the tests
import too) are in `metrics_pipeline_tests/support/security.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.security import SECRETS, EchoServer, connect_as


@pytest.fixture
def instance() -> dg.DagsterInstance:
    """An in-memory instance: the runs' event logs stay readable after `materialize` returns."""
    return dg.DagsterInstance.ephemeral()


@pytest.fixture
def secret_dsn(warehouse_dsn: str, monkeypatch) -> str:
    """The test warehouse's DSN carrying a password, exported as the variable `SEC_TEST_DSN`.

    The test server authenticates local connections by trust, so the password is sent and ignored:
    the point is that the value travels everywhere a production password would.
    """
    dsn = make_conninfo(warehouse_dsn, password=SECRETS["db_password"])
    monkeypatch.setenv("SEC_TEST_DSN", dsn)
    return dsn


@pytest.fixture
def unreachable_dsn(monkeypatch) -> str:
    """A DSN with a password pointing at a port nothing listens on, exported as `SEC_DEAD_DSN`."""
    import socket

    with socket.socket() as s:  # a free port, closed again: connections are refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = make_conninfo(host="127.0.0.1", port=str(port), user="metrics", dbname="warehouse",
                        password=SECRETS["db_password"], connect_timeout="3")
    monkeypatch.setenv("SEC_DEAD_DSN", dsn)
    return dsn


@pytest.fixture
def bi_login(warehouse_dsn: str) -> Iterator:
    """`bi_login(tenants=None)`: a new read-only BI login on the test warehouse (as `metrics-pipeline
    bi-role` makes it), returned as an open connection; the roles are dropped afterwards (roles are
    cluster-wide, they would outlive the test database)."""
    made: list[str] = []

    def make(tenants: list[str] | None = None) -> psycopg.Connection:
        role, password = f"sec_bi_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        bi.ensure_role(Warehouse(warehouse_dsn, "metrics"), role, password=password, tenants=tenants)
        made.append(role)
        return connect_as(warehouse_dsn, role, password)

    yield make
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        for role in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()
