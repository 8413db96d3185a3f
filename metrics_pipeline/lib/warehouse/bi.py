"""The read-only role for BI tools (SPEC §3, §9): it reads the `v_*` views and nothing else.

Two roles, because roles are cluster-wide and views come and go with migrations:
* `<schema>_bi_read` (NOLOGIN) holds the privileges: USAGE on the schema and SELECT on every
  `v_*` view, re-granted after every migration run, so a view added later is readable at once.
  It has no privilege on any table: the views read the tables with their owner's rights, and
  filter rows by tenant (`tenant_access`) for the role that is logged in.
* login roles (default `metrics_bi`) are members of it, created or updated by
  `metrics-pipeline bi-role` with a password from the environment, `default_transaction_read_only`
  on, and optionally restricted to some tenants.

The password goes to PostgreSQL as a quoted literal of `ALTER ROLE`; it is never printed or logged.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from metrics_pipeline.lib.settings import validate_identifier
from metrics_pipeline.lib.warehouse.db import Warehouse

DEFAULT_ROLE = "metrics_bi"
PASSWORD_ENV = "METRICS_PIPELINE_BI_PASSWORD"


def reader_group(schema: str) -> str:
    return f"{schema}_bi_read"


def api_reader(schema: str) -> str:
    """The role the HTTP API reads as (`SET LOCAL ROLE`), its tenant set per transaction (migration 0016)."""
    return f"{schema}_api_read"


def _role_exists(conn: psycopg.Connection, role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def _can_create_roles(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def views(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.views WHERE table_schema = %s AND table_name LIKE 'v\\_%%' "
        "ORDER BY 1", (schema,)
    ).fetchall()
    return [name for (name,) in rows]


#: Views only the API's reader may read: the sketches, rollup rows with their versions and daily
#: health behind its summaries (migrations 0017, 0027, 0028, 0030), and the tenant arms of the v_*
#: views. The API's reader always has a tenant list (its request's tenant, or none: migration
#: 0016), so a v_* view's other arm (every tenant, for unrestricted logins) never runs for it, yet
#: PostgreSQL planned both for every statement: reading the tenant arm alone halves the planning of
#: a read (a summary: ~1 ms of its ~5 ms in the server). Each is a security barrier filtering on
#: visible_tenants(current_user), so an unset tenant reads nothing.
API_VIEWS = ("api_sketch_5m", "api_sketch_1h", "api_sketch_1d", "api_sketch_1mo", "api_health_1d",
             "api_rollup_5m", "api_rollup_1h", "api_rollup_1d",
             "bi_tenant_series", "bi_tenant_points", "bi_tenant_rollup_5m", "bi_tenant_rollup_1h",
             "bi_tenant_rollup_1d", "bi_tenant_latest", "bi_tenant_series_health_hourly", "bi_tenant_alerts")


def grant_views(conn: psycopg.Connection, schema: str) -> bool:
    """(Re)grant SELECT on every view to the reader group, creating the group if we may.

    Returns False when the group does not exist and this user cannot create roles (a managed
    database where an administrator creates roles): the warehouse works, BI access waits for them.
    """
    group = reader_group(schema)
    with conn.transaction():
        if not _role_exists(conn, group):
            if not _can_create_roles(conn):
                return False
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), sql.Identifier(group)))
        for view in views(conn, schema):
            conn.execute(sql.SQL("GRANT SELECT ON {}.{} TO {}").format(
                sql.Identifier(schema), sql.Identifier(view), sql.Identifier(group)))
        # The API's reader: the BI group's views, as the tenant of each request; the warehouse's
        # owner (the API's connection) may switch to it.
        api = sql.Identifier(api_reader(schema))
        if not _role_exists(conn, api_reader(schema)):
            if not _can_create_roles(conn):
                return True  # BI access works; the API's reads wait for an administrator (docs/api.md)
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(api))
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), api))
        present = {name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.views WHERE table_schema = %s AND table_name = ANY(%s)",
            (schema, list(API_VIEWS)))}
        for view in sorted(present):  # for the API's reader alone
            conn.execute(sql.SQL("GRANT SELECT ON {}.{} TO {}").format(sql.Identifier(schema), sql.Identifier(view), api))
        if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
            conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(api))
    return True


#: Set on every BI login. A runaway dashboard query (a year of raw points) is cancelled instead of
#: holding its locks for hours: retention's DROP of an old partition would wait behind it, and every
#: load of that table behind the DROP. A session left idle inside a transaction is closed likewise.
#: Dashboard queries take milliseconds (docs/benchmarks.md); a session may raise its own limit.
SESSION_LIMITS = {"statement_timeout": "5min", "idle_in_transaction_session_timeout": "10min",
                  # lets a `ts` range of v_points read only the packed days it covers (lib/warehouse/packed_view.py)
                  "constraint_exclusion": "on"}


def ensure_role(warehouse: Warehouse, role: str = DEFAULT_ROLE, *, password: str | None,
                tenants: list[str] | None = None) -> None:
    """Create or update login `role` as a read-only BI user of `schema`.

    Args:
        warehouse: the warehouse (migrated).
        role: login name; a plain identifier.
        password: its password (None: keep the current one; a new role without one cannot log in).
        tenants: restrict the role to these tenants (series label `tenant`, SLA `company`);
            None leaves the restriction as it is, [] lifts it.
    """
    validate_identifier(role, what="role name")
    schema = warehouse.schema
    with warehouse.connect() as conn:
        if not grant_views(conn, schema):
            raise PermissionError(
                f"role {reader_group(schema)!r} does not exist and this user may not create roles; "
                "ask an administrator to run `metrics-pipeline bi-role` with a CREATEROLE user"
            )
        with conn.transaction():
            ident = sql.Identifier(role)
            if not _role_exists(conn, role):
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS")
                         .format(ident))
            if password is not None:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(ident, sql.Literal(password)))
            conn.execute(sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(ident))
            for setting, value in SESSION_LIMITS.items():
                conn.execute(sql.SQL("ALTER ROLE {} SET {} = {}").format(ident, sql.Identifier(setting), sql.Literal(value)))
            conn.execute(sql.SQL("ALTER ROLE {} SET search_path = {}").format(ident, sql.Identifier(schema)))
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(reader_group(schema)), ident))
            if tenants is not None:
                conn.execute(sql.SQL("DELETE FROM {}.tenant_access WHERE role_name = %s").format(sql.Identifier(schema)),
                             (role,))
                for tenant in sorted(set(tenants)):
                    conn.execute(sql.SQL("INSERT INTO {}.tenant_access (role_name, tenant) VALUES (%s, %s)")
                                 .format(sql.Identifier(schema)), (role, tenant))
