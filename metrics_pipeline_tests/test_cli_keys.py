"""`metrics-pipeline tenants|keys` against a real warehouse: output, exit codes, and where a token may appear."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from metrics_pipeline import cli
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.warehouse.db import Warehouse

TOKEN = re.compile(r"mpk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


@pytest.fixture
def run(warehouse_dsn, monkeypatch, capsys):
    """`metrics-pipeline ARGS...` in this process: (exit code, stdout, stderr)."""
    monkeypatch.setenv("METRICS_PIPELINE_DSN", warehouse_dsn)
    monkeypatch.delenv("METRICS_PIPELINE_SCHEMA", raising=False)

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return code, out, err

    return run


def _create_key(run, *args: str) -> str:
    code, out, err = run("keys", "create", *args)
    assert code == 0, err
    assert TOKEN.fullmatch(out.strip()) and out.count("\n") == 1
    return out.strip()


def test_tenants_create_is_idempotent_and_list_shows_active_keys(run):
    assert run("tenants", "list")[:2] == (0, "no tenants yet: create one with `metrics-pipeline tenants create NAME`\n")
    assert run("tenants", "create", "acme") == (0, "created tenant acme\n", "")
    assert run("tenants", "create", "acme") == (0, "tenant already exists: acme\n", "")
    run("tenants", "create", "globex")
    _create_key(run, "--tenant", "acme")
    code, out, _ = run("tenants", "list")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["TENANT", "CREATED", "ACTIVE", "KEYS"]
    assert re.fullmatch(r"acme\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\s+1", lines[1])
    assert lines[2].startswith("globex") and lines[2].endswith(" 0")


@pytest.mark.parametrize(("name", "rule"), [("x" * 201, "at most 200 characters"), ("", "non-empty")])
def test_a_bad_tenant_name_exits_2_naming_the_rule(run, name, rule):
    code, out, err = run("tenants", "create", name)
    assert code == 2 and out == ""
    assert err.startswith("metrics-pipeline: tenant name") and rule in err and "1-200 characters" in err


def test_keys_create_prints_the_token_once_on_stdout_and_says_so_on_stderr(run, warehouse_dsn):
    run("tenants", "create", "acme")
    code, out, err = run("keys", "create", "--tenant", "acme", "--scope", "write,read", "--note", "orders service")
    assert code == 0
    token = out.strip()
    key_id = TOKEN.fullmatch(token).group(1)
    assert out == token + "\n", "stdout is the token alone, for TOKEN=$(metrics-pipeline keys create ...)"
    assert f"created key {key_id} for tenant acme (scopes read,write)" in err
    assert "will not be shown again" in err and token not in err

    ring = api_keys.KeyRing(Warehouse(warehouse_dsn))
    ring.refresh()
    assert ring.verify(token) == api_keys.Principal(key_id, "acme", frozenset({"read", "write"}))


def test_keys_create_defaults_to_the_write_scope_and_accepts_repeated_scopes(run):
    run("tenants", "create", "acme")
    _create_key(run, "--tenant", "acme")
    _create_key(run, "--tenant", "acme", "--scope", "read", "--scope", "write")
    _, out, _ = run("keys", "list")
    assert [line.split()[2] for line in out.splitlines()[1:]] == ["write", "read,write"]


@pytest.mark.parametrize(("args", "message"), [
    (("--tenant", "nobody"), "tenant 'nobody' does not exist: create it with `metrics-pipeline tenants create NAME`"),
    (("--tenant", "acme", "--scope", "admin"), "unknown scope(s) 'admin': scopes are write, read"),
    (("--tenant", "acme", "--scope", "write,"), "unknown scope(s) ''"),
    (("--tenant", "acme", "--note", "two\nlines"), "one line of printable text"),
])
def test_keys_create_refuses_unknown_tenants_bad_scopes_and_notes_with_exit_2(run, args, message):
    run("tenants", "create", "acme")
    code, out, err = run("keys", "create", *args)
    assert (code, out) == (2, "") and err.startswith("metrics-pipeline: ") and message in err
    assert run("keys", "list")[1].startswith("no API keys yet")


def test_keys_list_is_a_table_of_ids_and_never_shows_a_token(run):
    run("tenants", "create", "acme")
    run("tenants", "create", "globex")
    acme = _create_key(run, "--tenant", "acme", "--note", "ci deploys")
    globex = _create_key(run, "--tenant", "globex", "--scope", "read")
    code, out, err = run("keys", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert header.split() == ["KEY", "ID", "TENANT", "SCOPES", "STATUS", "CREATED", "REVOKED", "NOTE"]
    assert [row.split()[:4] for row in rows] == [[TOKEN.fullmatch(acme).group(1), "acme", "write", "active"],
                                                 [TOKEN.fullmatch(globex).group(1), "globex", "read", "active"]]
    assert rows[0].endswith("ci deploys")
    for token in (acme, globex):
        assert token not in out and token.split("_", 2)[2] not in out

    code, out, _ = run("keys", "list", "--tenant", "globex")
    assert code == 0 and len(out.splitlines()) == 2 and "globex" in out and "acme" not in out
    code, _, err = run("keys", "list", "--tenant", "nobody")
    assert code == 2 and "tenant 'nobody' does not exist" in err


def test_a_tenant_name_with_control_characters_cannot_break_the_table(run):
    run("tenants", "create", "evil\nTENANT")
    code, out, _ = run("tenants", "list")
    assert code == 0 and len(out.splitlines()) == 2 and "evil\\nTENANT" in out


def test_keys_revoke_marks_the_key_revoked_once(run):
    run("tenants", "create", "acme")
    token = _create_key(run, "--tenant", "acme")
    key_id = TOKEN.fullmatch(token).group(1)
    assert run("keys", "revoke", key_id) == (0, f"revoked key {key_id}: running API servers refuse it within 5 s\n", "")
    assert run("keys", "revoke", key_id) == (0, f"key {key_id} was already revoked\n", "")
    _, out, _ = run("keys", "list")
    row = out.splitlines()[1].split()
    assert row[3] == "revoked" and re.fullmatch(r"\d\d:\d\d:\d\dZ", row[-1])
    assert run("tenants", "list")[1].split()[-1] == "0"


def test_keys_revoke_refuses_an_unknown_id_and_never_echoes_a_token_given_instead_of_an_id(run):
    run("tenants", "create", "acme")
    token = _create_key(run, "--tenant", "acme")
    code, out, err = run("keys", "revoke", "0123456789ab")
    assert (code, out) == (2, "") and "no API key has id '0123456789ab'" in err
    code, out, err = run("keys", "revoke", token)
    assert (code, out) == (2, "") and "12 lower-case hexadecimal characters" in err
    assert token.split("_", 2)[2] not in err
    assert "active" in run("keys", "list")[1]


def test_the_installed_command_creates_lists_and_revokes(warehouse_dsn):
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn}
    env.pop("METRICS_PIPELINE_SCHEMA", None)

    def cli_run(*args):
        return subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    assert cli_run("tenants", "create", "acme").returncode == 0
    created = cli_run("keys", "create", "--tenant", "acme")
    assert created.returncode == 0 and TOKEN.fullmatch(created.stdout.strip())
    assert "will not be shown again" in created.stderr
    key_id = TOKEN.fullmatch(created.stdout.strip()).group(1)
    listed = cli_run("-v", "keys", "list")
    assert listed.returncode == 0 and key_id in listed.stdout
    assert created.stdout.strip() not in listed.stdout + listed.stderr
    assert cli_run("keys", "revoke", key_id).returncode == 0
