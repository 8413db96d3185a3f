"""What the API reads back: a tenant's pushed measures, through the BI views as that tenant.

Every read runs in a transaction that switches to the API's reader role and names the key's tenant
(`SET LOCAL ROLE <schema>_api_read`, `metrics_pipeline.tenant`, migration 0016): the views' own
tenant filtering does the rest, so no query here carries a tenant condition of its own (SPEC §12).

Paging is by (ts, series_id), the order the rows come in, with an opaque cursor naming the last
row returned: stable however many rows arrive meanwhile, and one index range per page.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from metrics_pipeline.lib.warehouse.bi import api_reader
from metrics_pipeline.lib.warehouse.db import Warehouse

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class BadCursor(ValueError):
    """A `cursor` this API did not hand out."""


@contextmanager
def as_tenant(warehouse: Warehouse, tenant: str) -> Iterator[psycopg.Connection]:
    """A connection inside a read-only transaction that sees exactly `tenant`'s rows of the views, all
    its statements from one snapshot (REPEATABLE READ): an answer read in several statements (a
    summary's rows, sketches and health) never mixes the states before and after a refresh."""
    with warehouse.connect() as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # sent with BEGIN: no extra round trip
        try:
            with conn.transaction():
                # One round trip: SET TRANSACTION READ ONLY, SET LOCAL ROLE and the tenant, all
                # transaction-local (a pooled connection goes back clean; set_config('role') checks
                # membership as SET ROLE does).
                # constraint_exclusion: v_points reads one arm per packed day (migration 0026) and skips
                # the days outside a read's bounds only with it on (the BI logins have it too).
                conn.execute("SELECT set_config('transaction_read_only', 'on', true), set_config('role', %s, true), "
                             "set_config('metrics_pipeline.tenant', %s, true), "
                             "set_config('constraint_exclusion', 'on', true)", (api_reader(warehouse.schema), tenant))
                yield conn
        finally:
            conn.isolation_level = None


def encode_cursor(ts: datetime, row_id) -> str:
    """The opaque cursor naming a page's last row: its ts and its id (series_id, event_id)."""
    raw = json.dumps([ts.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, id_type=int) -> tuple[datetime, object]:
    try:
        ts, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return datetime.fromisoformat(ts), id_type(row_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, AttributeError):
        raise BadCursor("cursor is not one this API returned (pass next_cursor back unchanged)") from None


def parse_time(text: str, what: str) -> datetime:
    """RFC 3339, epoch seconds, or epoch milliseconds (numbers above 1e11, as Grafana sends)."""
    try:
        number = float(text)
    except ValueError:
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(f"{what}: {text[:40]!r} is neither RFC 3339 nor epoch seconds or milliseconds") from None
        if ts.tzinfo is None:
            raise ValueError(f"{what}: {text[:40]!r} needs a UTC offset (Z or +hh:mm)")
        return ts.astimezone(timezone.utc)
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError(f"{what}: not a finite number")
    try:
        return datetime.fromtimestamp(number / 1000 if abs(number) > 1e11 else number, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"{what}: {text[:40]!r} is out of range") from None


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_cursor: str | None


def _page(warehouse: Warehouse, tenant: str, view: str, columns: str, id_column: str, id_type,
          conditions: list[sql.Composable], params: dict, *, labels_column: str, labels: dict[str, str] | None,
          limit: int, cursor: str | None) -> tuple[list[tuple], str | None]:
    """Rows of `view` matching `conditions`, after the cursor, ordered by (ts, id): at most `limit`
    and the next page's cursor. Each row starts with ts and id, then `columns`."""
    params = {**params, "limit": limit + 1}
    if labels:
        conditions.append(sql.SQL("{} @> %(labels)s").format(sql.Identifier(labels_column)))
        params["labels"] = Jsonb(labels)
    if cursor:
        params["after_ts"], params["after_id"] = decode_cursor(cursor, id_type)
        conditions.append(sql.SQL("(ts, {}) > (%(after_ts)s, %(after_id)s)").format(sql.Identifier(id_column)))
    query = sql.SQL("SELECT ts, {id}, {columns} FROM {schema}.{view} WHERE {where} "
                    "ORDER BY ts, {id} LIMIT %(limit)s").format(
        id=sql.Identifier(id_column), columns=sql.SQL(columns), schema=sql.Identifier(warehouse.schema),
        view=sql.Identifier(view), where=sql.SQL(" AND ").join(conditions))
    with as_tenant(warehouse, tenant) as conn:
        rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1][0], rows[-1][1]) if more else None


def _utc(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def measures(warehouse: Warehouse, tenant: str, *, start: datetime, end: datetime, name: str | None = None,
             labels: dict[str, str] | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page:
    """`tenant`'s pushed measures with ts in [start, end), oldest first, at most `limit`."""
    conditions = [sql.SQL("source = 'custom'"), sql.SQL("ts >= %(start)s"), sql.SQL("ts < %(end)s")]
    if name is not None:
        conditions.append(sql.SQL("metric = %(name)s"))
    rows, next_cursor = _page(warehouse, tenant, "v_points", "metric, value, unit, labels", "series_id", int, conditions,
                              {"start": start, "end": end, "name": name}, labels_column="labels", labels=labels,
                              limit=limit, cursor=cursor)
    items = [{"name": metric, "value": value, "ts": _utc(ts), "unit": unit,
              "metadata": {k: v for k, v in (row_labels or {}).items() if k != "tenant"}}
             for ts, _, metric, value, unit, row_labels in rows]
    return Page(items, next_cursor)


def events(warehouse: Warehouse, tenant: str, *, start: datetime, end: datetime, name: str | None = None,
           labels: dict[str, str] | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page:
    """`tenant`'s pushed events with ts in [start, end), oldest first, at most `limit`."""
    conditions = [sql.SQL("ts >= %(start)s"), sql.SQL("ts < %(end)s")]
    if name is not None:
        conditions.append(sql.SQL("name = %(name)s"))
    rows, next_cursor = _page(warehouse, tenant, "v_events", "name, text, metadata", "event_id", uuid.UUID, conditions,
                              {"start": start, "end": end, "name": name}, labels_column="metadata", labels=labels,
                              limit=limit, cursor=cursor)
    items = [{"name": row_name, "ts": _utc(ts), "text": text, "metadata": metadata or {}}
             for ts, _, row_name, text, metadata in rows]
    return Page(items, next_cursor)
