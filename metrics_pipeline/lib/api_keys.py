"""Tenants and API keys of the HTTP API: storage, management, and the key ring that verifies requests.

A key is the token `mpk_<key_id>_<secret>`: `key_id` is 12 random hex characters, public (it is how
`keys list` and `keys revoke` name a key, and how a request's key is found); `secret` is
`secrets.token_urlsafe(32)`, 256 random bits. Only sha256(secret) is stored. A password needs a slow
hash (bcrypt, scrypt) because people choose guessable ones; a uniformly random 256-bit secret has
nothing to guess, so one sha256 is as strong and lets every request be verified in microseconds. The
token exists once, in `create_key`'s return value: it is never stored, logged or put in an
exception message, and `NewKey` keeps it out of its `repr`.

The API does not read the database per request. `KeyRing` holds a snapshot of every active key,
reloaded by a daemon thread every `refresh_s` seconds (2 s by default; at most 4 s, so that a revoked
key is refused within 5 s by every running server, SPEC §12). When the warehouse is down the ring
keeps its last snapshot and the API keeps authenticating (ingestion lands in the landing zone, not
the warehouse); the failure is logged, without secrets, and the refresh retried. The flip side:
a key revoked while a server cannot reach the warehouse is refused by that server only once it can.

Tenant names follow the rules of the series label `tenant` (1-200 characters PostgreSQL can store),
so a tenant created here is the tenant that BI row filtering (`tenant_access`) already knows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Self

import psycopg
from psycopg import errors, sql

from metrics_pipeline.lib.tenants import MAX_TENANT_CHARS, tenant_problem
from metrics_pipeline.lib.warehouse.db import Warehouse

logger = logging.getLogger(__name__)

SCOPES = ("write", "read")
DEFAULT_SCOPES = ("write",)
TOKEN_PREFIX = "mpk_"
MAX_NOTE_CHARS = 500
#: The slowest refresh that still refuses a revoked key within 5 s (SPEC §12), with time for the query.
MAX_REFRESH_S = 4.0

_KEY_ID = re.compile(r"[0-9a-f]{12}")
# token_urlsafe(32) is 43 characters of the URL-safe base64 alphabet; nothing else is a token.
_TOKEN = re.compile(r"mpk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_MAX_TOKEN_CHARS = 64
# Compared against when a token names no known key, so both answers cost the same.
_NO_DIGEST = bytes(32)


class UnknownTenant(ValueError):
    """The tenant does not exist (create it with `metrics-pipeline tenants create`)."""


class UnknownKey(ValueError):
    """No API key has this id."""


@dataclasses.dataclass(frozen=True)
class TenantInfo:
    name: str
    created_at: datetime
    active_keys: int


@dataclasses.dataclass(frozen=True)
class NewKey:
    """A key just created. `token` is shown to its owner once and exists nowhere else."""

    key_id: str
    token: str = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its secret, nor the secret's hash."""

    key_id: str
    tenant: str
    scopes: tuple[str, ...]
    note: str | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclasses.dataclass(frozen=True)
class Principal:
    """Who a verified request comes from."""

    key_id: str
    tenant: str
    scopes: frozenset[str]


def validate_tenant(name: object) -> str:
    """`name` if it can name a tenant, else ValueError naming the rule."""
    problem = tenant_problem(name)
    if problem:
        shown = repr(name[:100]) if isinstance(name, str) else type(name).__name__
        raise ValueError(f"tenant name {shown} {problem} (a tenant is 1-{MAX_TENANT_CHARS} characters "
                         "PostgreSQL can store, as the series label `tenant`)")
    return name


def validate_scopes(scopes: str | Iterable[str]) -> tuple[str, ...]:
    """The scopes as a sorted tuple without duplicates; ValueError unless a non-empty subset of SCOPES.

    Args:
        scopes: scope names, or one comma-separated string of them (`"write,read"`).
    """
    if isinstance(scopes, str):
        scopes = scopes.split(",")
    names = [s.strip() if isinstance(s, str) else s for s in scopes]
    unknown = [s for s in names if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}: scopes are {', '.join(SCOPES)}")
    if not names:
        raise ValueError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return tuple(sorted(set(names)))


def _validate_note(note: str | None) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS or any(not c.isprintable() for c in note):
        raise ValueError(f"a key's note must be one line of printable text, at most {MAX_NOTE_CHARS} characters")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a key's note must not contain unpaired UTF-16 surrogates") from None
    return note


def validate_key_id(key_id: object) -> str:
    """`key_id` if it has the shape of one; the message never repeats the argument (it may be a token)."""
    if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
        raise ValueError("a key id is 12 lower-case hexadecimal characters, as `metrics-pipeline keys list` shows "
                         "(the part after `mpk_` in a token; never pass the token itself)")
    return key_id


def _secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _table(warehouse: Warehouse, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(warehouse.schema), sql.Identifier(name))


def _tenant_exists(conn: psycopg.Connection, warehouse: Warehouse, tenant: str) -> bool:
    query = sql.SQL("SELECT 1 FROM {} WHERE name = %s").format(_table(warehouse, "tenants"))
    return conn.execute(query, (tenant,)).fetchone() is not None


def _unknown_tenant(tenant: str) -> UnknownTenant:
    return UnknownTenant(f"tenant {tenant[:100]!r} does not exist: create it with "
                         "`metrics-pipeline tenants create NAME`")


def create_tenant(warehouse: Warehouse, name: str) -> bool:
    """Create tenant `name`. Returns False if it existed already.

    Raises:
        ValueError: `name` breaks the tenant rule (the message names it).
    """
    validate_tenant(name)
    with warehouse.connect() as conn:
        row = conn.execute(
            sql.SQL("INSERT INTO {} (name) VALUES (%s) ON CONFLICT (name) DO NOTHING RETURNING 1")
            .format(_table(warehouse, "tenants")), (name,)).fetchone()
    return row is not None


def list_tenants(warehouse: Warehouse) -> list[TenantInfo]:
    """Every tenant, by name, with its number of active (unrevoked) keys."""
    query = sql.SQL(
        "SELECT t.name, t.created_at, count(k.key_id) FROM {} t "
        "LEFT JOIN {} k ON k.tenant = t.name AND k.revoked_at IS NULL "
        "GROUP BY t.name, t.created_at ORDER BY t.name"
    ).format(_table(warehouse, "tenants"), _table(warehouse, "api_keys"))
    with warehouse.connect() as conn:
        return [TenantInfo(*row) for row in conn.execute(query).fetchall()]


def create_key(warehouse: Warehouse, tenant: str, scopes: str | Iterable[str] = DEFAULT_SCOPES,
               note: str | None = None) -> NewKey:
    """Create an API key for `tenant`; the returned token is its only copy.

    Args:
        warehouse: the warehouse (migrated).
        tenant: an existing tenant.
        scopes: a non-empty subset of `SCOPES` (default write only).
        note: what the key is for, shown by `keys list`.

    Raises:
        UnknownTenant: `tenant` does not exist.
        ValueError: bad scopes, tenant name or note.
    """
    validate_tenant(tenant)
    scopes = validate_scopes(scopes)
    note = _validate_note(note)
    insert = sql.SQL("INSERT INTO {} (key_id, tenant, secret_sha256, scopes, note) VALUES (%s, %s, %s, %s, %s) "
                     "ON CONFLICT (key_id) DO NOTHING RETURNING 1").format(_table(warehouse, "api_keys"))
    with warehouse.connect() as conn, conn.transaction():
        if not _tenant_exists(conn, warehouse, tenant):
            raise _unknown_tenant(tenant)
        for _ in range(5):  # 48 random bits: a collision is unlikely, but cheap to survive
            key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
            try:
                inserted = conn.execute(insert, (key_id, tenant, _secret_digest(secret), list(scopes), note)).fetchone()
            except errors.ForeignKeyViolation:  # a tenant can't be deleted today; kept for when it can
                raise _unknown_tenant(tenant) from None
            if inserted:
                return NewKey(key_id, f"{TOKEN_PREFIX}{key_id}_{secret}")
    raise RuntimeError("could not draw an unused key id in 5 attempts")


def list_keys(warehouse: Warehouse, tenant: str | None = None) -> list[KeyInfo]:
    """Keys (active and revoked) of `tenant`, or of every tenant, by tenant then creation time.

    Raises:
        UnknownTenant: `tenant` is given and does not exist.
    """
    where = sql.SQL("WHERE tenant = %s" if tenant is not None else "")
    query = sql.SQL("SELECT key_id, tenant, scopes, note, created_at, revoked_at FROM {} {} "
                    "ORDER BY tenant, created_at, key_id").format(_table(warehouse, "api_keys"), where)
    with warehouse.connect() as conn:
        if tenant is not None and not _tenant_exists(conn, warehouse, validate_tenant(tenant)):
            raise _unknown_tenant(tenant)
        rows = conn.execute(query, (tenant,) if tenant is not None else ()).fetchall()
    return [KeyInfo(key_id, owner, tuple(scopes), note, created, revoked)
            for key_id, owner, scopes, note, created, revoked in rows]


def revoke_key(warehouse: Warehouse, key_id: str) -> bool:
    """Revoke key `key_id`. Returns False if it was revoked already (the first revocation time stays).

    Raises:
        UnknownKey: no key has this id.
        ValueError: `key_id` does not have the shape of a key id (the message does not repeat it).
    """
    validate_key_id(key_id)
    table = _table(warehouse, "api_keys")
    with warehouse.connect() as conn, conn.transaction():
        revoked = conn.execute(sql.SQL("UPDATE {} SET revoked_at = now() WHERE key_id = %s AND revoked_at IS NULL "
                                       "RETURNING 1").format(table), (key_id,)).fetchone()
        if revoked:
            return True
        if conn.execute(sql.SQL("SELECT 1 FROM {} WHERE key_id = %s").format(table), (key_id,)).fetchone() is None:
            raise UnknownKey(f"no API key has id {key_id!r} (`metrics-pipeline keys list` shows them)")
    return False


@dataclasses.dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: Principal


class KeyRing:
    """Verifies API tokens against an in-memory snapshot of the active keys, refreshed in the background.

    `start()` loads a first snapshot (a failure is logged and retried, the server still starts) and
    starts the refresh thread; `stop()` ends it. `ready` is True once a snapshot was loaded; until then
    `verify` refuses every token. Use as a context manager to start and stop it.
    """

    def __init__(self, warehouse: Warehouse, refresh_s: float = 2.0):
        if not 0 < refresh_s <= MAX_REFRESH_S:
            raise ValueError(f"refresh_s must be in (0, {MAX_REFRESH_S}] seconds so that a revoked key is "
                             f"refused within 5 s (SPEC §12), got {refresh_s!r}")
        self.warehouse = warehouse
        self.refresh_s = refresh_s
        self._keys: dict[str, _Entry] = {}
        self._loaded_at: float | None = None  # time.monotonic() of the last successful refresh
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # one refresh at a time (the thread, or a caller's refresh())

    @property
    def ready(self) -> bool:
        """True once a snapshot was loaded (it stays True while later refreshes fail)."""
        return self._loaded_at is not None

    @property
    def age_s(self) -> float | None:
        """Seconds since the snapshot in use was loaded (None before the first): health detail."""
        return None if self._loaded_at is None else time.monotonic() - self._loaded_at

    def __len__(self) -> int:
        return len(self._keys)

    def verify(self, token: str | None) -> Principal | None:
        """The principal of `token`, or None for a missing, malformed, unknown or revoked token."""
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_CHARS:
            return None
        match = _TOKEN.fullmatch(token)
        if match is None:
            return None
        key_id, secret = match.groups()
        entry = self._keys.get(key_id)  # one read of the current snapshot: refreshes swap the whole dict
        expected = entry.digest if entry is not None else _NO_DIGEST
        if hmac.compare_digest(_secret_digest(secret), expected) and entry is not None:
            return entry.principal
        return None

    def refresh(self) -> int:
        """Load the active keys now. Returns how many there are.

        Raises:
            psycopg.Error: the warehouse could not be read (the previous snapshot stays in use).
        """
        query = sql.SQL("SELECT key_id, tenant, secret_sha256, scopes FROM {} WHERE revoked_at IS NULL") \
            .format(_table(self.warehouse, "api_keys"))
        # A connection per refresh (a few ms every few seconds) rather than one held open: nothing to
        # repair after a restart of the server, no backend held per API process. Bounded waits, so a
        # refresh never hangs on a dead server while the snapshot ages.
        timeout_s = max(2, round(self.refresh_s) + 1)
        with self._lock, self.warehouse.connect(connect_timeout=timeout_s) as conn:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(timeout_s * 1000)))
            rows = conn.execute(query).fetchall()
            self._keys = {key_id: _Entry(bytes(digest), Principal(key_id, tenant, frozenset(scopes)))
                          for key_id, tenant, digest, scopes in rows}
            self._loaded_at = time.monotonic()
        return len(rows)

    def _refresh_logged(self) -> None:
        try:
            count = self.refresh()
        except Exception as exc:  # noqa: BLE001 - any failure: keep the snapshot, warn, retry
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since, self._last_warning = now, now - 60
            if now - self._last_warning < 60:  # warn when an outage starts, then once a minute
                return
            self._last_warning = now
            kept = ("no snapshot yet: every token is refused" if self._loaded_at is None
                    else f"verifying with the snapshot of {self.age_s:.0f} s ago ({len(self)} active keys)")
            # Type and first line only. No token is stored anywhere, so none can be in a message;
            # connection failures are WarehouseUnavailable, which names the database without a password.
            reason = " ".join(str(exc).split("\n", 1)[0].split())[:300]
            logger.warning("API key refresh (schema %s) failing for %.0f s: %s: %s; %s; retrying every %g s",
                           self.warehouse.schema, now - self._failing_since, type(exc).__name__, reason, kept,
                           self.refresh_s)
        else:
            if self._failing_since is not None:
                logger.info("API key refresh (schema %s) works again: %d active keys", self.warehouse.schema, count)
                self._failing_since = None

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self._refresh_logged()

    def start(self) -> Self:
        """Load a first snapshot (logged, not raised, if the warehouse is down) and start refreshing."""
        if self._thread is not None:
            return self
        self._stop.clear()
        self._refresh_logged()
        self._thread = threading.Thread(target=self._run, name="api-key-ring", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop refreshing; `verify` keeps answering from the last snapshot."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
