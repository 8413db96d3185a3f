"""The BI role reads every view and nothing else, writes nothing, and sees only its tenants."""

import re
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from metrics_pipeline import cli
from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

T0 = datetime(2026, 5, 4, tzinfo=timezone.utc)


def _as(dsn: str, role: str) -> psycopg.Connection:
    return psycopg.connect(re.sub(r"user=\S+", f"user={role}", dsn), autocommit=True)


@pytest.fixture
def two_tenants(warehouse_dsn, db):
    ts = pd.date_range(T0, T0 + timedelta(hours=1), freq="1min", inclusive="left")
    frame = points_frame([
        {"metric": "host_cpu_percent", "resource": f"{tenant}-web", "labels": {"tenant": tenant}, "unit": "percent",
         "ts": ts, "value": np.full(len(ts), value)}
        for tenant, value in (("acme", 10.0), ("globex", 90.0))
    ])
    loader.load_points(Warehouse(warehouse_dsn), frame, source="test", start=T0, end=T0 + timedelta(hours=1))
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m", "rollup_1h"], T0, T0 + timedelta(hours=1))
    for company in ("acme", "globex"):
        db.execute(
            """INSERT INTO metrics.sla_daily (bucket, company, zone, source_system, object, runs, successes, failures,
                                              sla_breaches, sla_met) VALUES (%s, %s, '1-Raw', 'Zoho', 'Deals', 1, 1, 0, 0, true)""",
            (T0, company),
        )
    return warehouse_dsn


def test_the_bi_role_reads_every_view_and_no_table(two_tenants, db):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_test_reader", password="s3cret-pw")
    views = bi.views(db, "metrics")
    assert {"v_points", "v_rollup_5m", "v_rollup_1h", "v_rollup_1d", "v_latest", "v_sla_daily", "v_alerts"} <= set(views)
    with _as(two_tenants, "bi_test_reader") as conn:
        for view in views:
            conn.execute(f"SELECT * FROM metrics.{view} LIMIT 5").fetchall()
        assert conn.execute("SELECT count(*) FROM v_points").fetchone() == (120,)  # search_path is the schema
        for table in ("points", "series", "rollup_1h", "ingestion_runs", "quarantine", "tenant_access", "schema_migrations"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM metrics.{table} LIMIT 1")


@pytest.mark.parametrize("statement", [
    "INSERT INTO metrics.v_sla_daily (bucket_start) VALUES (now())",
    "DELETE FROM metrics.v_sla_daily",
    "UPDATE metrics.v_sla_daily SET runs = 0",
    "CREATE TABLE metrics.mine (x int)",
    "CREATE TABLE public.mine (x int)",
    "DELETE FROM metrics.points",
])
def test_the_bi_role_cannot_write_anything(two_tenants, statement):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_test_reader", password="s3cret-pw")
    with _as(two_tenants, "bi_test_reader") as conn:
        with pytest.raises((psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction,
                            psycopg.errors.ObjectNotInPrerequisiteState)):
            conn.execute(statement)


def test_a_tenant_restricted_role_never_sees_another_tenants_rows(two_tenants):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_acme", password="pw-acme", tenants=["acme"])
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_all", password="pw-all")
    with _as(two_tenants, "bi_acme") as conn:
        for view in ("v_series", "v_points", "v_rollup_5m", "v_rollup_1h", "v_latest", "v_sla_daily"):
            tenants = {t for (t,) in conn.execute(f"SELECT DISTINCT tenant FROM {view}")}
            assert tenants == {"acme"}, view
        # Filtering on the other tenant explicitly returns nothing, not an error.
        assert conn.execute("SELECT count(*) FROM v_points WHERE tenant = 'globex'").fetchone() == (0,)
        assert conn.execute("SELECT max(max) FROM v_rollup_1h").fetchone() == (10.0,)
    with _as(two_tenants, "bi_all") as conn:
        assert {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM v_rollup_1h")} == {"acme", "globex"}
    # Lifting the restriction.
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_acme", password=None, tenants=[])
    with _as(two_tenants, "bi_acme") as conn:
        assert conn.execute("SELECT count(DISTINCT tenant) FROM v_sla_daily").fetchone() == (2,)


def test_views_added_by_a_later_migration_are_granted_after_migrate(two_tenants, db):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_test_reader", password="pw")
    db.execute("CREATE VIEW metrics.v_new AS SELECT 1 AS one")
    bi.grant_views(db, "metrics")
    with _as(two_tenants, "bi_test_reader") as conn:
        assert conn.execute("SELECT one FROM v_new").fetchone() == (1,)


def test_bi_role_command_takes_the_password_from_the_environment_and_never_prints_it(
        two_tenants, monkeypatch, capsys, db):
    monkeypatch.setenv("METRICS_PIPELINE_DSN", two_tenants)
    monkeypatch.delenv(bi.PASSWORD_ENV, raising=False)
    assert cli.main(["bi-role", "--name", "bi_cli"]) == 2
    assert bi.PASSWORD_ENV in capsys.readouterr().err
    monkeypatch.setenv(bi.PASSWORD_ENV, "very-secret-value")
    assert cli.main(["bi-role", "--name", "bi_cli", "--tenant", "acme"]) == 0
    out = capsys.readouterr()
    assert "very-secret-value" not in out.out + out.err and "tenants acme" in out.out
    stored = db.execute("SELECT rolpassword FROM pg_authid WHERE rolname = 'bi_cli'").fetchone()[0]
    assert stored.startswith("SCRAM-SHA-256$")  # hashed by the server, never stored in clear
    settings = db.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole "
                          "WHERE r.rolname = 'bi_cli'").fetchone()[0]
    assert "default_transaction_read_only=on" in settings


def test_a_bad_role_name_is_refused_before_reaching_sql(two_tenants):
    with pytest.raises(ValueError, match="role name"):
        bi.ensure_role(Warehouse(two_tenants, "metrics"), 'x"; DROP TABLE metrics.points; --', password="pw")


def test_restricting_a_group_role_restricts_its_member_logins(two_tenants, db):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_member", password="pw")
    db.execute("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bi_globex_team') "
               "THEN CREATE ROLE bi_globex_team NOLOGIN; END IF; END $$")
    db.execute("GRANT bi_globex_team TO bi_member")
    db.execute("INSERT INTO metrics.tenant_access VALUES ('bi_globex_team', 'globex')")
    try:
        with _as(two_tenants, "bi_member") as conn:
            assert {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM v_rollup_5m")} == {"globex"}
            assert conn.execute("SELECT count(*) FROM v_quarantine").fetchone() == (0,)
        # The owner (a superuser here) is never restricted.
        assert db.execute("SELECT count(DISTINCT tenant) FROM metrics.v_rollup_5m").fetchone() == (2,)
    finally:
        db.execute("REVOKE bi_globex_team FROM bi_member")


def test_bi_logins_get_a_statement_timeout_so_a_runaway_query_cannot_hold_locks_for_hours(two_tenants):
    bi.ensure_role(Warehouse(two_tenants, "metrics"), "bi_test_limits", password="pw")
    with _as(two_tenants, "bi_test_limits") as conn:
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "5min"
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "10min"
