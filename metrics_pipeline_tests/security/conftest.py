"""Fixtures of the security suite (issue 9): distinctive secret values, the Dagster event log of a run
as text, a BI login, and small local HTTP servers that misbehave on purpose.

Every secret is a recognisable string (`...-SECRET-...`) so that a single substring search over
everything a run leaves behind (event log records, run record, captured logs, exceptions) proves it
is absent. The secrets reach the code the way production gives them: environment variables, read
through `dg.EnvVar` or the configuration's `*_env` names.
"""

from __future__ import annotations

import json
import threading
import traceback
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import psycopg
import pytest
from dagster._serdes import serialize_value
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline_tests.lib.cloudwatch.conftest import cw_config, double, seeded  # noqa: F401

SECRETS = {
    "whatap_account": "acct-SECRET-4f9a1c7e2b",
    "whatap_project": "tok-SECRET-4f9a0d1e55",
    "whatap_wrong": "tok-SECRET-wrong-77c1aa",
    "aws_secret_key": "aws-SECRET-k3yJ9xQ2vB8nL5mT0pR7sW4zY1",
    "aws_session_token": "sess-SECRET-Fw0GZXIvYXdzEJr",
    "db_password": "pg-SECRET-p4ssw0rd-91ab",
    "webhook_path": "/services/T0SECRET/B0SECRET/hook-SECRET-9c2f",
}


def assert_no_secret(text: str, *secrets: str) -> None:
    """Fail naming the secret and showing where it appeared (the context, not the whole text)."""
    for secret in secrets or SECRETS.values():
        at = text.find(secret)
        assert at < 0, f"secret {secret[:8]}... leaked: ...{text[max(0, at - 200):at + len(secret) + 50]}..."


def run_text(instance: dg.DagsterInstance, result) -> str:
    """Everything Dagster stored about a run, serialised: every event log record (messages, metadata,
    error info with causes and stack traces), the run record (config, tags) and its step stats."""
    run_id = result.run_id
    parts = [serialize_value(entry) for entry in instance.all_logs(run_id)]
    parts.append(serialize_value(instance.get_run_by_id(run_id)))
    parts += [repr(stat) for stat in instance.get_run_step_stats(run_id)]
    parts.append(str(result.all_events))
    return "\n".join(parts)


def failure_messages(result) -> list[str]:
    """The error messages (with their causes) of the failed steps and checks of a run."""
    out = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error is not None:
                out.append(error.message)
                error = error.cause or error.context
    return out


def exception_text(exc: BaseException) -> str:
    """An exception as a log handler or a crash report would show it: message, repr, chained causes."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)


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


def connect_as(dsn: str, role: str, password: str, **kwargs) -> psycopg.Connection:
    """A connection to the database of `dsn` logged in as `role` with `password`."""
    params = conninfo_to_dict(dsn)
    params.update(user=role, password=password)
    return psycopg.connect(make_conninfo(**params), autocommit=True, **kwargs)


@pytest.fixture
def bi_login(warehouse_dsn: str) -> Iterator:
    """`bi_login(tenants=None)`: a new read-only BI login on the test warehouse (as `metrics-pipeline
    bi-role` makes it), returned as an open connection; the roles are dropped afterwards (roles are
    cluster-wide, they would outlive the test database)."""
    made: list[str] = []

    def make(tenants: list[str] | None = None) -> psycopg.Connection:
        role, password = f"sec_bi_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
        bi.ensure_role(warehouse_dsn, "metrics", role, password=password, tenants=tenants)
        made.append(role)
        return connect_as(warehouse_dsn, role, password)

    yield make
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        for role in made:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


class EchoServer:
    """A local HTTP server that answers every request with `status` and a body echoing what it got
    (path and headers), like many real services' error pages ("Cannot POST /hooks/...")."""

    def __init__(self, status: int = 404):
        self.status = status
        self.requests: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests.append((self.command, self.path))
                extra = ", ".join(f"{k}={v}" for k, v in self.headers.items() if k.lower().startswith("x-"))
                body = json.dumps({"message": f"Cannot {self.command} {self.path} ({extra or 'no x- headers'})"})
                data = body.encode()
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def echo_server() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


def _relations(conn: psycopg.Connection, schema: str, kinds: list[str]) -> list[str]:
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relkind = ANY(%s::\"char\"[]) ORDER BY 1", (schema, kinds)
    ).fetchall()
    return [name for (name,) in rows]


def base_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every table of the schema from pg_catalog (plain and partitioned, partitions included)."""
    return _relations(conn, schema, ["r", "p"])


def catalog_views(conn: psycopg.Connection, schema: str) -> list[str]:
    """Every view of the schema from pg_catalog (not only the v_* the code grants)."""
    return _relations(conn, schema, ["v", "m"])
