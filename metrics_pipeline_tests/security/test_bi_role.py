"""The BI role reads the `v_*` views and nothing else, and a tenant-restricted login cannot widen its view.

Tables, sequences and views are discovered from pg_catalog, so a table or view added by a later
migration is covered without touching this file. Statements run with the session's read-only
default switched off first: it is the privileges that must stop them, not a default the login can
change itself. The data is `bi_sample` (two tenants in every view), built once for the module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors, sql

from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import bi_sample
from metrics_pipeline_tests.support.security import base_tables, catalog_views, connect_as

SCHEMA = "metrics"
OWN, OTHER = bi_sample.COMPANIES  # "akonovia", "boreal-logistique"
DENIED = (errors.InsufficientPrivilege,)
#: a view that is not auto-updatable (or a column it cannot update) refuses a write before privileges are checked
VIEW_WRITE_REFUSED = (errors.InsufficientPrivilege, errors.ObjectNotInPrerequisiteState, errors.FeatureNotSupported,
                      errors.GeneratedAlways)


class Logins:
    """Three BI logins on the sample: unrestricted, restricted to OWN, restricted to OTHER."""

    def __init__(self, dsn: str):
        suffix = uuid.uuid4().hex[:8]
        self.dsn = dsn
        self.all, self.own, self.other = f"sec_bi_all_{suffix}", f"sec_bi_own_{suffix}", f"sec_bi_other_{suffix}"
        self.passwords = {name: uuid.uuid4().hex for name in (self.all, self.own, self.other)}
        bi.ensure_role(Warehouse(dsn, SCHEMA), self.all, password=self.passwords[self.all])
        bi.ensure_role(Warehouse(dsn, SCHEMA), self.own, password=self.passwords[self.own], tenants=[OWN])
        bi.ensure_role(Warehouse(dsn, SCHEMA), self.other, password=self.passwords[self.other], tenants=[OTHER])

    def connect(self, role: str) -> psycopg.Connection:
        return connect_as(self.dsn, role, self.passwords[role])

    def drop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            for role in self.passwords:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


@pytest.fixture(scope="module")
def sample(pg_server, migrated_template) -> Iterator[tuple[bi_sample.Sample, Logins]]:
    name = pg_server.create_database(template=migrated_template)
    try:
        warehouse = bi_sample.populate(pg_server.dsn(name))
        with psycopg.connect(warehouse.dsn, autocommit=True) as conn:  # one refused record, tenant unknown
            conn.execute(f"INSERT INTO {SCHEMA}.quarantine (source, source_file, position, raw, reason, record_hour) "
                         "VALUES ('ingestion_logs', 'ingestion_logs/x.json', 1, %s, 'broken JSON', %s)",
                         (f'{{"Entreprise": "{OTHER}"', warehouse.start))
        logins = Logins(warehouse.dsn)
        try:
            yield warehouse, logins
        finally:
            logins.drop()
    finally:
        pg_server.drop_database(name)


def _columns(conn: psycopg.Connection, relation: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_attribute a WHERE a.attrelid = %s::regclass AND a.attnum > 0 "
        "AND NOT a.attisdropped AND a.attgenerated = '' AND a.attidentity = '' ORDER BY a.attnum",
        (f"{SCHEMA}.{relation}",),
    ).fetchall()
    return [name for (name,) in rows]


def _counts(conn: psycopg.Connection, relations: list[str]) -> dict[str, int]:
    return {r: conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(r)))
            .fetchone()[0] for r in relations}


def _not_refused(conn: psycopg.Connection, statements: list[sql.Composable], expected: tuple) -> list[str]:
    """The statements that did NOT fail with one of `expected` (empty when everything was refused)."""
    allowed = []
    for statement in statements:
        try:
            with conn.transaction():  # LOCK needs a transaction block; a refusal rolls back only this one
                conn.execute(statement)
        except expected:
            continue
        except psycopg.Error as exc:
            allowed.append(f"{statement.as_string(conn)} -> unexpected {type(exc).__name__}: {exc}")
        else:
            allowed.append(f"{statement.as_string(conn)} -> succeeded")
    return allowed


def test_the_bi_role_can_neither_read_nor_write_nor_truncate_any_base_table_or_sequence(sample):
    warehouse, logins = sample
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        tables = base_tables(admin, SCHEMA)
        sequences = [n for (n,) in admin.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'S'", (SCHEMA,))]
        columns = {t: _columns(admin, t) for t in tables}
        before = _counts(admin, tables)
    assert {"points", "series", "rollup_5m", "rollup_1h", "rollup_1d", "alerts", "tenant_access", "quarantine",
            "ingestion_runs", "sla_hourly", "sla_daily", "landing_files", "schema_migrations"} <= set(tables)
    assert any(t.startswith("points_p") for t in tables)  # partitions are tables of their own, checked too
    statements = []
    for table in tables:
        name = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(table))
        column = sql.Identifier(columns[table][0])
        statements += [
            sql.SQL("SELECT * FROM {} LIMIT 1").format(name),
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
            sql.SQL("UPDATE {} SET {} = {}").format(name, column, column),
            sql.SQL("DELETE FROM {}").format(name),
            sql.SQL("TRUNCATE {}").format(name),
            sql.SQL("COPY {} TO STDOUT").format(name),
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(name),
        ]
    for sequence in sequences:
        qualified = f"{SCHEMA}.{sequence}"
        statements += [sql.SQL("SELECT nextval({})").format(sql.Literal(qualified)),
                       sql.SQL("SELECT setval({}, 1)").format(sql.Literal(qualified))]
    with logins.connect(logins.all) as conn:
        conn.execute("SET default_transaction_read_only = off")
        refused = _not_refused(conn, statements, DENIED)
    assert refused == []
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        assert _counts(admin, tables) == before


def test_the_bi_role_cannot_write_through_views_or_create_alter_or_drop_anything(sample):
    warehouse, logins = sample
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        views = catalog_views(admin, SCHEMA)
        first_column = {v: _columns(admin, v)[0] for v in views}
        before = _counts(admin, views)
        version = admin.execute("SHOW server_version_num").fetchone()[0]
        # every view of the schema is a BI view, one of the internal bi_* views behind them, or the API's own
        assert set(bi.views(admin, SCHEMA)) == {v for v in views if not v.startswith(("bi_", "api_"))}
    writes = []
    for view in views:
        name = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(view))
        column = sql.Identifier(first_column[view])
        writes += [sql.SQL("INSERT INTO {} DEFAULT VALUES").format(name),
                   sql.SQL("UPDATE {} SET {} = {}").format(name, column, column),
                   sql.SQL("DELETE FROM {}").format(name)]
    ddl = [sql.SQL(s) for s in (
        "CREATE TABLE metrics.sec_evil (x int)",
        "CREATE VIEW metrics.v_sec_evil AS SELECT 1 AS one",
        "CREATE FUNCTION metrics.sec_evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE OR REPLACE FUNCTION metrics.visible_tenants(p_role text) RETURNS text[] LANGUAGE sql AS 'SELECT NULL::text[]'",
        "CREATE SCHEMA sec_evil",
        "CREATE INDEX sec_evil ON metrics.series (source)",
        "ALTER VIEW metrics.v_points RENAME TO v_sec_evil",
        "ALTER TABLE metrics.tenant_access DISABLE ROW LEVEL SECURITY",
        "DROP VIEW metrics.v_points",
        "DROP TABLE metrics.points",
        "COMMENT ON VIEW metrics.v_points IS 'x'",
        "CREATE ROLE sec_evil",
        "GRANT pg_read_all_data TO CURRENT_USER",
        "GRANT pg_write_all_data TO CURRENT_USER",
    )]
    if int(version) >= 150000:  # before PostgreSQL 15 every role may create in `public` (a server default)
        ddl.append(sql.SQL("CREATE TABLE public.sec_evil (x int)"))
    with logins.connect(logins.all) as conn:
        conn.execute("SET default_transaction_read_only = off")
        refused_writes = _not_refused(conn, writes, VIEW_WRITE_REFUSED)
        refused_ddl = _not_refused(conn, ddl, DENIED)
    assert refused_writes == [] and refused_ddl == []
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        assert _counts(admin, views) == before
        assert admin.execute("SELECT to_regclass('metrics.sec_evil'), to_regclass('metrics.v_sec_evil')").fetchone() \
            == (None, None)


def test_the_internal_views_behind_the_bi_views_are_as_closed_to_bi_logins_as_the_tables(sample):
    """`bi_all_*` holds every tenant's rows without a barrier: only the `v_*` views may reach it; the
    API's sketch views (migration 0017) are the API reader's alone."""
    warehouse, logins = sample
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        internal = [v for v in catalog_views(admin, SCHEMA) if v.startswith(("bi_", "api_"))]
    assert {"bi_all_points", "bi_all_rollup_1h", "bi_tenant_rollup_1h", "bi_all_sla_monthly",
            "api_sketch_5m"} <= set(internal)
    statements = []
    for view in internal:
        name = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(view))
        statements += [sql.SQL("SELECT * FROM {} LIMIT 1").format(name), sql.SQL("COPY {} TO STDOUT").format(name)]
    for login in (logins.all, logins.own):
        with logins.connect(login) as conn:
            assert _not_refused(conn, statements, DENIED) == [], login


def _tenant_rows(conn: psycopg.Connection, views: list[str], has_tenant: dict[str, bool]) -> dict[str, dict]:
    """Per view: row count per tenant (views without a tenant column: {None: count})."""
    out = {}
    for view in views:
        name = sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(view))
        if has_tenant[view]:
            rows = conn.execute(sql.SQL("SELECT tenant, count(*) FROM {} GROUP BY 1").format(name)).fetchall()
        else:
            rows = [(None, conn.execute(sql.SQL("SELECT count(*) FROM {}").format(name)).fetchone()[0])]
        out[view] = {tenant: count for tenant, count in rows if count}
    return out


def test_a_restricted_login_sees_exactly_its_tenants_rows_through_every_view(sample):
    warehouse, logins = sample
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        views = bi.views(admin, SCHEMA)
        has_tenant = {v: "tenant" in _columns(admin, v) for v in views}
    with logins.connect(logins.all) as conn:
        everything = _tenant_rows(conn, views, has_tenant)
    with logins.connect(logins.own) as conn:
        own = _tenant_rows(conn, views, has_tenant)
    for view in views:
        expected = {OWN: everything[view][OWN]} if OWN in everything[view] else {}
        assert own[view] == expected, view
    # Not vacuous: both tenants are in every tenant view of the sample, and the restricted login sees rows.
    tenant_views = [v for v in views if has_tenant[v]]
    assert {"v_points", "v_rollup_1h", "v_sla_daily", "v_sla_monthly", "v_alerts", "v_ingestion_runs"} <= set(tenant_views)
    assert all({OWN, OTHER} <= set(everything[v]) for v in tenant_views), everything
    assert not has_tenant["v_quarantine"] and everything["v_quarantine"] == {None: 1} and own["v_quarantine"] == {}


def test_a_restricted_login_cannot_widen_its_view_with_set_role_or_visible_tenants(sample):
    warehouse, logins = sample
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        views = [v for v in bi.views(admin, SCHEMA) if "tenant" in _columns(admin, v)]
    with logins.connect(logins.own) as conn:
        # Asking for another role's tenants, the superuser's, or the unrestricted group's: never more than its own.
        for role in (logins.all, logins.other, "postgres", bi.reader_group(SCHEMA), logins.own):
            tenants = conn.execute(f"SELECT {SCHEMA}.visible_tenants(%s)", (role,)).fetchone()[0]
            assert tenants is not None and set(tenants) <= {OWN}, (role, tenants)
        # The login may switch to the reader group it belongs to; its rows must stay its own.
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(bi.reader_group(SCHEMA))))
        assert conn.execute("SELECT current_user").fetchone()[0] == bi.reader_group(SCHEMA)
        for view in views:
            tenants = {t for (t,) in conn.execute(f"SELECT DISTINCT tenant FROM {SCHEMA}.{view}")}
            assert tenants <= {OWN}, (view, tenants)
        conn.execute("RESET ROLE")
        conn.execute("SET default_transaction_read_only = off")  # privileges, not the default, must refuse
        for statement in ("SET ROLE postgres", f"SET ROLE {logins.all}", "SET SESSION AUTHORIZATION postgres",
                          f"INSERT INTO {SCHEMA}.tenant_access VALUES ('{logins.own}', '*')",
                          f"DELETE FROM {SCHEMA}.tenant_access"):
            with pytest.raises(DENIED):
                conn.execute(statement)
    with logins.connect(logins.other) as conn:  # the other tenant's login cannot see OWN's tenant name either
        assert conn.execute(f"SELECT {SCHEMA}.visible_tenants(%s)", (logins.own,)).fetchone()[0] == []


def test_a_leaky_function_in_a_where_clause_never_sees_the_filtered_rows(sample):
    """A restricted login reads each view's barrier branch: the tenant filter runs before any function
    of the reader's query, so a function that reports its arguments (here through NOTICE) learns
    nothing. The branch without a barrier, into which the same conditions are pushed down, is gated
    off before it reads a row. Tried with conditions PostgreSQL pushes down for an unrestricted login
    (a label containment, a date bound) and with a function it believes to be free."""
    warehouse, logins = sample
    seen: list[str] = []
    with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
        views = [v for v in bi.views(admin, SCHEMA) if "tenant" in _columns(admin, v)]
        labelled = {v for v in views if "labels" in _columns(admin, v)}
    with logins.connect(logins.own) as conn:
        conn.add_notice_handler(lambda diag: seen.append(diag.message_primary or ""))
        conn.execute("SET default_transaction_read_only = off")
        conn.execute("CREATE FUNCTION pg_temp.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS "
                     "$$ BEGIN RAISE NOTICE 'saw %', $1; RETURN true; END $$")
        for view in views:
            row = "tenant::text || ' ' || labels::text" if view in labelled else "tenant::text"
            conn.execute(f"SELECT count(*) FROM {SCHEMA}.{view} WHERE pg_temp.leak({row})").fetchone()
            if view in labelled:
                conn.execute(f"SELECT count(*) FROM {SCHEMA}.{view} WHERE labels @> '{{}}' AND pg_temp.leak({row})")
        for view in ("v_rollup_5m", "v_rollup_1h", "v_points"):
            time = "ts" if view == "v_points" else "bucket_start"
            conn.execute(f"SELECT count(*) FROM {SCHEMA}.{view} WHERE {time} >= CURRENT_DATE - 30 "
                         f"AND pg_temp.leak(tenant || ' ' || series_id)").fetchone()
    assert len(seen) > len(views) and all(OTHER not in message for message in seen)
