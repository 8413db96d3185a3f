import subprocess

import psycopg
import pytest

from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse


def schema_dump(pg_dump: str, dsn: str, schema: str = "metrics") -> str:
    """Structure of `schema` as pg_dump prints it (no data, no ownership noise)."""
    out = subprocess.run(
        [pg_dump, "--schema-only", "--no-owner", "--no-privileges", "-n", schema, "--dbname", dsn],
        capture_output=True,
        text=True,
        check=True,
    )
    return "\n".join(
        line for line in out.stdout.splitlines() if not line.startswith("--") and "\\restrict" not in line
    )


def test_migrating_twice_is_a_no_op(empty_dsn, pg_dump):
    first = migrate.migrate(Warehouse(empty_dsn))
    assert first == [m.version for m in migrate.available()]
    before = schema_dump(pg_dump, empty_dsn)
    assert migrate.migrate(Warehouse(empty_dsn)) == []
    assert schema_dump(pg_dump, empty_dsn) == before


def test_upgraded_database_ends_with_the_same_schema_as_a_fresh_one(pg_server, pg_dump):
    fresh, upgraded = pg_server.create_database(), pg_server.create_database()
    try:
        migrate.migrate(Warehouse(pg_server.dsn(fresh)))
        assert migrate.migrate(Warehouse(pg_server.dsn(upgraded)), target=1) == [1]
        with psycopg.connect(pg_server.dsn(upgraded), autocommit=True) as conn:
            conn.execute(
                "INSERT INTO metrics.series (source, metric, resource, labels, unit) "
                "VALUES ('host', 'host_cpu_percent', 'web-1', '{\"host\": \"web-1\"}', 'percent')"
            )
        assert migrate.migrate(Warehouse(pg_server.dsn(upgraded))) == [m.version for m in migrate.available()][1:]
        assert schema_dump(pg_dump, pg_server.dsn(upgraded)) == schema_dump(pg_dump, pg_server.dsn(fresh))
        with psycopg.connect(pg_server.dsn(upgraded)) as conn:
            assert conn.execute("SELECT count(*) FROM metrics.series").fetchone()[0] == 1
    finally:
        pg_server.drop_database(fresh)
        pg_server.drop_database(upgraded)


def test_every_spec_table_exists(warehouse_dsn):
    expected = {
        "series", "points", "rollup_5m", "rollup_1h", "rollup_1d", "ingestion_runs", "quarantine",
        "sla_hourly", "sla_daily", "alerts", "schema_migrations",
    }
    with psycopg.connect(warehouse_dsn) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'metrics' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
        )}
        partitioned = {r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'metrics' AND c.relkind = 'p'"
        )}
    assert expected <= tables
    assert {"points", "rollup_5m", "rollup_1h", "rollup_1d", "ingestion_runs"} <= partitioned


def test_migrations_can_target_another_schema(empty_dsn):
    migrate.migrate(Warehouse(empty_dsn, "ops_metrics"))
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('ops_metrics.points')").fetchone()[0] is not None
        assert conn.execute("SELECT to_regclass('metrics.points')").fetchone()[0] is None


def test_schema_names_that_are_not_plain_identifiers_are_refused(empty_dsn):
    with pytest.raises(ValueError, match="schema"):
        migrate.migrate(Warehouse(empty_dsn, 'x"; DROP TABLE y; --'))


def test_an_applied_migration_that_was_edited_is_refused(warehouse_dsn):
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("UPDATE metrics.schema_migrations SET checksum = 'edited' WHERE version = 1")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate.migrate(Warehouse(warehouse_dsn))


def test_a_database_migrated_by_newer_code_is_refused(warehouse_dsn):
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO metrics.schema_migrations VALUES (9999, 'future', 'x')")
    with pytest.raises(RuntimeError, match="newer version"):
        migrate.migrate(Warehouse(warehouse_dsn))


def test_concurrent_migrations_apply_each_version_once(empty_dsn):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: migrate.migrate(Warehouse(empty_dsn)), range(4)))
    applied = sorted(v for r in results for v in r)
    assert applied == [m.version for m in migrate.available()]
