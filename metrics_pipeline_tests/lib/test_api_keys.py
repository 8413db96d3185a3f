"""Tenants and API keys on a real PostgreSQL: management, what is stored, and the key ring the API uses."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import time

import psycopg
import pytest

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.api_keys import KeyRing, Principal, UnknownKey, UnknownTenant
from metrics_pipeline.lib.warehouse.db import Warehouse

TOKEN_SHAPE = re.compile(r"mpk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@pytest.fixture
def warehouse(warehouse_dsn) -> Warehouse:
    return Warehouse(warehouse_dsn, "metrics")


@pytest.fixture
def acme(warehouse) -> str:
    assert api_keys.create_tenant(warehouse, "acme")
    return "acme"


def _secret(token: str) -> str:
    return token.split("_", 2)[2]


def _wait_until(condition, timeout: float, step: float = 0.02) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s"
        time.sleep(step)
    return time.monotonic() - start


# --- tenants -------------------------------------------------------------------------------------------

def test_creating_a_tenant_twice_reports_that_it_existed_and_lists_it_once(warehouse):
    assert api_keys.create_tenant(warehouse, "acme") is True
    assert api_keys.create_tenant(warehouse, "acme") is False
    assert api_keys.create_tenant(warehouse, "Globex Ünïcode") is True
    tenants = api_keys.list_tenants(warehouse)
    assert [t.name for t in tenants] == ["Globex Ünïcode", "acme"]
    assert all(t.active_keys == 0 and t.created_at.tzinfo for t in tenants)


@pytest.mark.parametrize(("name", "rule"), [
    ("", "must be a non-empty string"),
    ("x" * 201, "at most 200 characters"),
    ("a\x00b", "NUL"),
    ("a\ud800b", "surrogates"),
    (None, "must be a non-empty string"),
])
def test_a_bad_tenant_name_is_refused_naming_the_rule(warehouse, name, rule):
    with pytest.raises(ValueError, match=rule) as refused:
        api_keys.create_tenant(warehouse, name)
    assert "1-200 characters" in str(refused.value) and "series label `tenant`" in str(refused.value)
    assert api_keys.list_tenants(warehouse) == []


def test_the_longest_tenant_name_is_the_one_the_series_label_allows(warehouse):
    assert api_keys.create_tenant(warehouse, "é" * 200)
    assert api_keys.list_tenants(warehouse)[0].name == "é" * 200


def test_the_database_refuses_tenant_names_of_the_wrong_length_too(db):
    for name in ("", "x" * 201):
        with pytest.raises(psycopg.errors.CheckViolation):
            db.execute("INSERT INTO metrics.tenants (name) VALUES (%s)", (name,))


# --- keys ----------------------------------------------------------------------------------------------

def test_a_key_is_a_random_token_returned_once_and_listed_without_it(warehouse, acme):
    first = api_keys.create_key(warehouse, acme, note="orders service")
    second = api_keys.create_key(warehouse, acme, scopes=("write", "read"))
    for new in (first, second):
        assert TOKEN_SHAPE.fullmatch(new.token) and new.token.startswith(f"mpk_{new.key_id}_")
        assert new.token not in repr(new) and _secret(new.token) not in repr(new)
    assert first.key_id != second.key_id and _secret(first.token) != _secret(second.token)

    listed = api_keys.list_keys(warehouse)
    assert [(k.key_id, k.tenant, k.scopes, k.note, k.active) for k in listed] == [
        (first.key_id, "acme", ("write",), "orders service", True),
        (second.key_id, "acme", ("read", "write"), None, True),
    ]
    assert [f.name for f in api_keys.KeyInfo.__dataclass_fields__.values()] == [
        "key_id", "tenant", "scopes", "note", "created_at", "revoked_at"]
    shown = repr(listed)
    assert all(_secret(k.token) not in shown for k in (first, second))
    assert api_keys.list_tenants(warehouse)[0].active_keys == 2


def test_only_the_sha256_of_the_secret_is_stored_and_the_secret_is_nowhere_in_the_database(
        warehouse, warehouse_dsn, acme, db, pg_dump):
    new = api_keys.create_key(warehouse, acme, scopes="write,read", note="ci")
    secret = _secret(new.token)
    columns = [name for (name,) in db.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'metrics' "
        "AND table_name = 'api_keys' AND (data_type IN ('text', 'bytea') OR udt_name = '_text') ORDER BY 1")]
    assert columns == ["key_id", "note", "scopes", "secret_sha256", "tenant"]
    for column in columns:
        for (value,) in db.execute(f"SELECT {column}::text FROM metrics.api_keys"):
            assert secret not in (value or "") and new.token not in (value or "")
        for (raw,) in db.execute(f"SELECT convert_to({column}::text, 'UTF8') FROM metrics.api_keys"):
            assert secret.encode() not in bytes(raw)
    stored = db.execute("SELECT secret_sha256 FROM metrics.api_keys WHERE key_id = %s", (new.key_id,)).fetchone()[0]
    assert bytes(stored) == hashlib.sha256(secret.encode()).digest()
    assert secret.encode() not in bytes(stored)
    # and nowhere else in the database either: a whole dump
    dump = subprocess.run([pg_dump, "--dbname", warehouse_dsn, "--data-only"], capture_output=True, check=True).stdout
    assert new.key_id.encode() in dump and secret.encode() not in dump


def test_a_key_for_an_unknown_tenant_is_refused_naming_the_tenant(warehouse):
    with pytest.raises(UnknownTenant, match=r"tenant 'nobody' does not exist.*tenants create"):
        api_keys.create_key(warehouse, "nobody")
    with pytest.raises(UnknownTenant, match="'nobody'"):
        api_keys.list_keys(warehouse, "nobody")
    assert api_keys.list_keys(warehouse) == []


@pytest.mark.parametrize(("scopes", "expected"), [
    (("write",), ("write",)),
    ("write,read", ("read", "write")),
    (["read", "read"], ("read",)),
    (" read , write ", ("read", "write")),
])
def test_scopes_are_a_subset_of_write_and_read(scopes, expected):
    assert api_keys.validate_scopes(scopes) == expected


@pytest.mark.parametrize(("scopes", "message"), [
    ((), "at least one scope"),
    (["admin"], "unknown scope.*'admin'.*write, read"),
    ("write,admin", "'admin'"),
    (["WRITE"], "'WRITE'"),
    ("", "unknown scope.*''"),
])
def test_bad_scopes_are_refused_before_anything_is_stored(warehouse, acme, scopes, message):
    with pytest.raises(ValueError, match=message):
        api_keys.create_key(warehouse, acme, scopes=scopes)
    assert api_keys.list_keys(warehouse) == []


@pytest.mark.parametrize("scopes", ["{}", "{admin}", "{write,NULL}"])
def test_the_database_refuses_scopes_outside_write_and_read(db, scopes):
    db.execute("INSERT INTO metrics.tenants (name) VALUES ('acme')")
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute("INSERT INTO metrics.api_keys (key_id, tenant, secret_sha256, scopes) "
                   "VALUES ('0123456789ab', 'acme', %s, %s::text[])", (bytes(32), scopes))


def test_a_note_is_one_printable_line(warehouse, acme):
    for note in ("two\nlines", "x" * 501, "bell\x07"):
        with pytest.raises(ValueError, match="one line of printable text"):
            api_keys.create_key(warehouse, acme, note=note)


def test_revoking_a_key_keeps_it_listed_as_revoked_and_a_second_revocation_changes_nothing(warehouse, acme):
    new = api_keys.create_key(warehouse, acme)
    assert api_keys.revoke_key(warehouse, new.key_id) is True
    revoked_at = api_keys.list_keys(warehouse)[0].revoked_at
    assert revoked_at is not None
    assert api_keys.revoke_key(warehouse, new.key_id) is False
    [key] = api_keys.list_keys(warehouse, acme)
    assert not key.active and key.revoked_at == revoked_at
    assert api_keys.list_tenants(warehouse)[0].active_keys == 0


def test_revoking_an_unknown_or_malformed_id_is_refused_without_repeating_a_token(warehouse, acme):
    with pytest.raises(UnknownKey, match="no API key has id '0123456789ab'"):
        api_keys.revoke_key(warehouse, "0123456789ab")
    new = api_keys.create_key(warehouse, acme)
    with pytest.raises(ValueError, match="12 lower-case hexadecimal characters") as refused:
        api_keys.revoke_key(warehouse, new.token)  # a token pasted where its id belongs
    assert _secret(new.token) not in str(refused.value)
    assert api_keys.list_keys(warehouse)[0].active


def test_bi_roles_have_no_privilege_on_tenants_or_keys(db):
    for table in ("metrics.tenants", "metrics.api_keys"):
        assert db.execute("SELECT has_table_privilege('metrics_bi_read', %s, 'SELECT, INSERT, UPDATE, DELETE')",
                          (table,)).fetchone()[0] is False
    views = db.execute("SELECT string_agg(definition, ' ') FROM pg_views WHERE schemaname = 'metrics'").fetchone()[0]
    assert "api_keys" not in views and "secret_sha256" not in views


# --- the key ring ------------------------------------------------------------------------------------------

def test_the_key_ring_verifies_a_good_token_as_its_tenant_and_scopes(warehouse, acme):
    writer = api_keys.create_key(warehouse, acme)
    reader = api_keys.create_key(warehouse, acme, scopes="read,write")
    ring = KeyRing(warehouse)
    assert not ring.ready and ring.verify(writer.token) is None
    assert ring.refresh() == 2
    assert ring.ready and len(ring) == 2
    assert ring.verify(writer.token) == Principal(writer.key_id, "acme", frozenset({"write"}))
    assert ring.verify(reader.token) == Principal(reader.key_id, "acme", frozenset({"read", "write"}))


def _refused_tokens(token: str, other_tenant_token: str) -> dict[str, object]:
    key_id, secret = token[4:16], _secret(token)
    flipped = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    return {
        "missing": None,
        "empty": "",
        "prefix only": "mpk_",
        "bearer prefix left on": f"Bearer {token}",
        "trailing newline": token + "\n",
        "one character longer": token + "x",
        "one character shorter": token[:-1],
        "upper-case id": f"mpk_{key_id.upper()}_{secret}",
        "bytes": token.encode(),
        "huge": token * 10_000,
        "unknown id, well formed": f"mpk_{'0' * 12}_{secret}",
        "wrong secret": f"mpk_{key_id}_{flipped}",
        "another key's secret": f"mpk_{key_id}_{_secret(other_tenant_token)}",
    }


def test_the_key_ring_refuses_missing_malformed_unknown_and_wrong_secret_tokens(warehouse, acme):
    api_keys.create_tenant(warehouse, "globex")
    new = api_keys.create_key(warehouse, acme)
    other = api_keys.create_key(warehouse, "globex")
    ring = KeyRing(warehouse)
    ring.refresh()
    for case, token in _refused_tokens(new.token, other.token).items():
        assert ring.verify(token) is None, case
    assert ring.verify(new.token).tenant == "acme" and ring.verify(other.token).tenant == "globex"


def test_a_revoked_key_is_refused_within_5_s_by_a_running_key_ring(warehouse, acme):
    kept, revoked = api_keys.create_key(warehouse, acme), api_keys.create_key(warehouse, acme)
    with KeyRing(warehouse) as ring:  # the default refresh interval, as the API runs it
        assert ring.ready and ring.verify(revoked.token) is not None
        api_keys.revoke_key(warehouse, revoked.key_id)
        elapsed = _wait_until(lambda: ring.verify(revoked.token) is None, timeout=5.0)
        assert ring.verify(kept.token) is not None
    assert elapsed <= ring.refresh_s + 1.0


def test_a_key_created_while_the_ring_runs_is_accepted_after_the_next_refresh(warehouse, acme):
    with KeyRing(warehouse, refresh_s=0.1) as ring:
        new = api_keys.create_key(warehouse, acme)
        _wait_until(lambda: ring.verify(new.token) is not None, timeout=5.0)


def test_the_key_ring_keeps_verifying_with_its_last_snapshot_when_the_database_goes_away_and_recovers(
        pg_server, migrated_template, caplog):
    caplog.set_level(logging.DEBUG)
    name = pg_server.create_database(template=migrated_template)
    warehouse = Warehouse(pg_server.dsn(name), "metrics")
    try:
        api_keys.create_tenant(warehouse, "acme")
        new = api_keys.create_key(warehouse, "acme")
        with KeyRing(warehouse, refresh_s=0.1) as ring:
            assert ring.verify(new.token) is not None
            pg_server.drop_database(name)
            _wait_until(lambda: any("API key refresh" in r.getMessage() and r.levelno == logging.WARNING
                                    for r in caplog.records), timeout=5.0)
            time.sleep(0.5)  # several failed refreshes
            assert ring.ready and ring.verify(new.token) is not None
            assert ring.age_s >= 0.4
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == api_keys.__name__]
            assert len(warnings) == 1, "one warning per outage, not one per retry"
            assert "WarehouseUnavailable" in warnings[0].getMessage()
            assert "verifying with the snapshot" in warnings[0].getMessage()

            # The same database comes back, empty: the ring retried all along and now has no keys.
            with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"')
            _wait_until(lambda: ring.verify(new.token) is None, timeout=5.0)
            assert any("works again" in r.getMessage() for r in caplog.records)
    finally:
        pg_server.drop_database(name)
    _assert_no_token_in_logs(caplog, new.token)


def test_a_key_ring_started_while_the_database_is_down_starts_refuses_everything_and_logs_why(caplog):
    caplog.set_level(logging.DEBUG)
    warehouse = Warehouse("postgresql://metrics:pw-SECRET-9@127.0.0.1:1/metrics", "metrics")
    with KeyRing(warehouse, refresh_s=0.1) as ring:
        assert not ring.ready and ring.age_s is None
        assert ring.verify(f"mpk_{'0' * 12}_{'a' * 43}") is None
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "no snapshot yet: every token is refused" in warning.getMessage()
    assert "pw-SECRET-9" not in caplog.text


def test_no_token_reaches_a_log_record_or_an_exception(warehouse, acme, caplog):
    caplog.set_level(logging.DEBUG)
    new = api_keys.create_key(warehouse, acme, scopes="write,read")
    texts = []
    for call in (lambda: api_keys.revoke_key(warehouse, new.token),
                 lambda: api_keys.revoke_key(warehouse, new.token[4:16] + "0"),
                 lambda: api_keys.create_key(warehouse, "nobody")):
        with pytest.raises(ValueError) as refused:
            call()
        texts.append(f"{refused.value!r} {refused.value}")
    with KeyRing(warehouse, refresh_s=0.1) as ring:
        for token in _refused_tokens(new.token, new.token).values():
            ring.verify(token)
        ring.verify(new.token)
        api_keys.revoke_key(warehouse, new.key_id)
        _wait_until(lambda: ring.verify(new.token) is None, timeout=5.0)
    texts += [repr(new), repr(api_keys.list_keys(warehouse)), repr(ring.__dict__)]
    assert not any(_secret(new.token) in t for t in texts)
    _assert_no_token_in_logs(caplog, new.token)


def _assert_no_token_in_logs(caplog, token: str) -> None:
    secret = _secret(token)
    for record in caplog.records:
        text = f"{record.getMessage()} {record.args!r} {record.exc_text or ''}"
        assert secret not in text, record.getMessage()
    assert secret not in caplog.text


@pytest.mark.parametrize("refresh_s", [0, -1, 4.5, 30])
def test_a_refresh_interval_that_would_break_the_5_s_revocation_bound_is_refused(warehouse, refresh_s):
    with pytest.raises(ValueError, match="within 5 s"):
        KeyRing(warehouse, refresh_s=refresh_s)
