"""Helpers of the security suite (issue 9): distinctive secret values and the search for them, the
Dagster event log of a run as text, BI logins, the catalog of a schema, and a local HTTP server that
misbehaves on purpose. The fixtures built on them are in security/conftest.py.

Every secret is a recognisable string (`...-SECRET-...`) so that a single substring search over
everything a run leaves behind (event log records, run record, captured logs, exceptions) proves it
is absent.
"""

from __future__ import annotations

import json
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import psycopg
from dagster._serdes import serialize_value
from psycopg.conninfo import conninfo_to_dict, make_conninfo

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


def exception_text(exc: BaseException) -> str:
    """An exception as a log handler or a crash report would show it: message, repr, chained causes."""
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args)


def connect_as(dsn: str, role: str, password: str, **kwargs) -> psycopg.Connection:
    """A connection to the database of `dsn` logged in as `role` with `password`."""
    params = conninfo_to_dict(dsn)
    params.update(user=role, password=password)
    return psycopg.connect(make_conninfo(**params), autocommit=True, **kwargs)


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
