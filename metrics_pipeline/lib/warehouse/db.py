"""Warehouse connections that fail with an error saying so.

psycopg's own message for a server that is down names a socket or a host and port ("connection to
server on socket ... failed: No such file or directory"); it does not say that the *warehouse* is
unreachable, nor which database. A server restarted under an open transaction surfaces as
"terminating connection due to administrator command" or "server closed the connection
unexpectedly". Both become `WarehouseUnavailable`, naming the database, user, host and port, and
saying that the interrupted transaction was rolled back (loads are atomic: a re-run is safe). The
DSN is parsed and only those fields are shown: a password never reaches a message (libpq's own text
does not include it either). It subclasses `psycopg.OperationalError`, so existing handlers still
catch it.

`Warehouse` is the one way code reaches the database: a DSN and a schema, validated once, with
`connect()`. Every library entry point that touches the warehouse takes one; the Dagster resource
hands it out (`WarehouseResource.warehouse`), so assets, sensors, the CLI and tests all pass the same
value instead of a DSN and a schema side by side.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from metrics_pipeline.lib.settings import DEFAULT_SCHEMA, validate_identifier


class WarehouseUnavailable(psycopg.OperationalError):
    """The warehouse database cannot be reached, or the connection to it was lost mid-work."""


def describe(dsn: str) -> str:
    """`"metrics" (user postgres on host:port)`: where a DSN points, without its password."""
    try:
        info = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparseable DSN)"
    where = f"{info.get('host') or 'localhost'}:{info.get('port') or 5432}"
    return f'"{info.get("dbname") or "?"}" (user {info.get("user") or "?"} on {where})'


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500]


@contextmanager
def connect(dsn: str, **kwargs) -> Iterator[psycopg.Connection]:
    """`psycopg.connect(dsn, **kwargs)` as a context manager, with clear connection errors.

    Raises:
        WarehouseUnavailable: the server cannot be reached, or the connection broke while in use
            (the open transaction, if any, was rolled back by the server).
    """
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        raise WarehouseUnavailable(
            f"warehouse database {describe(dsn)} is unreachable: {_reason(exc)}"
        ) from None
    with conn:
        try:
            yield conn
        except psycopg.OperationalError as exc:
            if not conn.broken or isinstance(exc, WarehouseUnavailable):
                raise
            raise WarehouseUnavailable(
                f"the connection to warehouse database {describe(dsn)} was lost ({_reason(exc)}); "
                "the server rolled back any transaction in progress: re-run once it is back"
            ) from None


@dataclasses.dataclass(frozen=True)
class Warehouse:
    """Where the warehouse is: a libpq DSN (a secret: kept out of `repr`) and the project schema."""

    dsn: str = dataclasses.field(repr=False)
    schema: str = DEFAULT_SCHEMA

    def __post_init__(self) -> None:
        validate_identifier(self.schema, what="schema")

    @contextmanager
    def connect(self, **kwargs) -> Iterator[psycopg.Connection]:
        """An autocommit connection (`connect`'s clear errors); use `conn.transaction()` for atomic work."""
        with connect(self.dsn, autocommit=True, **kwargs) as conn:
            yield conn

    def describe(self) -> str:
        """Where it points, without the password (for messages)."""
        return f"{describe(self.dsn)} schema {self.schema}"


#: A pooled connection idle longer than this is checked (a round trip) before it is lent again.
IDLE_CHECK_S = 10.0


def _returned(conn: psycopg.Connection) -> None:
    conn._mp_returned_at = time.monotonic()


def _check_if_idle(conn: psycopg.Connection) -> None:
    """Check a connection at checkout only when it has been idle a while: one that was in use a moment
    ago is alive (a check on every checkout was a round trip per API read, ~0.2 ms of a 1 ms one). A
    connection the server dropped meanwhile fails its request (503), and the pool replaces it on
    return. PgBouncer checks its server connections the same way (`server_check_delay`)."""
    from psycopg_pool import ConnectionPool

    if time.monotonic() - getattr(conn, "_mp_returned_at", -math.inf) > IDLE_CHECK_S:
        ConnectionPool.check_connection(conn)


class ReadPool:
    """A warehouse whose `connect()` lends pooled connections: for a server answering many short reads
    (the HTTP API), where opening a connection per request costs more than the query (~10 ms of a
    TLS-less local login against ~1 ms for a small read, docs/benchmarks.md "API reads").

    Same interface as `Warehouse` (`dsn`, `schema`, `connect()`, `describe()`): connections are
    autocommit, and work that changes session state must keep it transaction-local (`SET LOCAL`,
    `set_config(..., true)`) so that the next borrower gets a clean connection. Opened lazily, at
    the first `connect()`, so a server starts while the warehouse is down; a connection the server
    closed is replaced at checkout.
    """

    def __init__(self, warehouse: Warehouse, *, max_size: int = 8, timeout_s: float = 5.0):
        from psycopg_pool import ConnectionPool

        self.warehouse, self.schema, self._timeout = warehouse, warehouse.schema, timeout_s
        self._pool = ConnectionPool(warehouse.dsn, min_size=1, max_size=max_size, open=False, timeout=timeout_s,
                                    kwargs={"autocommit": True}, check=_check_if_idle, reset=_returned,
                                    name="warehouse-reads")
        self._opened = False
        self._lock = threading.Lock()

    @property
    def dsn(self) -> str:
        return self.warehouse.dsn

    def describe(self) -> str:
        return self.warehouse.describe()

    @contextmanager
    def connect(self, **kwargs) -> Iterator[psycopg.Connection]:
        """A pooled autocommit connection; `WarehouseUnavailable` when none can be had within the timeout."""
        from psycopg_pool import PoolTimeout

        if not self._opened:
            with self._lock:
                if not self._opened:
                    self._pool.open(wait=False)
                    self._opened = True
        try:
            borrowed = self._pool.connection()
            conn = borrowed.__enter__()
        except PoolTimeout:
            raise WarehouseUnavailable(f"warehouse database {describe(self.dsn)} gave no connection within "
                                       f"{self._timeout:g} s") from None
        try:
            yield conn
        except BaseException as exc:
            borrowed.__exit__(type(exc), exc, exc.__traceback__)
            if isinstance(exc, psycopg.OperationalError) and conn.broken and not isinstance(exc, WarehouseUnavailable):
                raise WarehouseUnavailable(f"the connection to warehouse database {describe(self.dsn)} was lost "
                                           f"({_reason(exc)})") from None
            raise
        else:
            borrowed.__exit__(None, None, None)

    def close(self) -> None:
        with self._lock:
            if self._opened:
                self._pool.close()
                self._opened = False
