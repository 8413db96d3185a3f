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
