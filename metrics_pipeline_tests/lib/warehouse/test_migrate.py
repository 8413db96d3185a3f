import subprocess
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from metrics_pipeline.lib import rollups
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import migrate, partitioning
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


def _copy(source: psycopg.Connection, target: psycopg.Connection, select: str, table: str) -> None:
    with source.cursor().copy(f"COPY ({select}) TO STDOUT") as out, target.cursor().copy(f"COPY {table} FROM STDIN") as into:
        for chunk in out:
            into.write(chunk)


def test_upgrading_moves_the_sketches_out_of_the_rollup_rows_and_their_heap_shrinks(pg_server, warehouse_dsn):
    """Migration 0013 on a warehouse holding rollups with their sketches inline: every sketch lands in
    its tier's sketch table, the rows are rewritten without them, and merging the moved sketches gives
    the rows the current code writes."""
    tiers = ["rollup_5m", "rollup_1h", "rollup_1d"]
    day = (datetime(2026, 7, 6, tzinfo=timezone.utc), datetime(2026, 7, 7, tzinfo=timezone.utc))
    rng = np.random.default_rng(13)
    ts = pd.date_range(*day, freq="20s", inclusive="left")
    frame = points_frame([{"metric": f"m{i}", "resource": "r", "labels": {}, "unit": "1", "ts": ts,
                           "value": rng.lognormal(2, 1.5, len(ts)).round(3)} for i in range(4)])
    current = Warehouse(warehouse_dsn)
    loader.load_points(current, frame, source="test", start=day[0], end=day[1])
    rollups.refresh(current, tiers, *day)
    old = pg_server.create_database()
    try:
        # The same rollups as the code before 0013 stored them: sketches in the rows.
        assert migrate.migrate(Warehouse(pg_server.dsn(old)), target=12)[-1] < 13
        with psycopg.connect(warehouse_dsn) as src, psycopg.connect(pg_server.dsn(old), autocommit=True) as conn:
            for tier in tiers:
                for name, lower, upper in partitioning.partition_bounds(tier, *day):
                    conn.execute(f"CREATE TABLE metrics.{name} PARTITION OF metrics.{tier} "
                                 f"FOR VALUES FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')")
                columns = [c for (c,) in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'metrics' "
                    "AND table_name = %s ORDER BY ordinal_position", (tier,))]
                assert {"sketch_keys", "sketch_counts"} <= set(columns)
                _copy(src, conn, f"SELECT {', '.join(columns)} FROM metrics.{tier} r "
                                 f"JOIN metrics.{tier}_sketch k USING (series_id, bucket)", f"metrics.{tier} ({', '.join(columns)})")
            heap_before = conn.execute("SELECT pg_relation_size('metrics.rollup_5m_p20260706')").fetchone()[0]

        assert 13 in migrate.migrate(Warehouse(pg_server.dsn(old)))

        with psycopg.connect(warehouse_dsn) as src, psycopg.connect(pg_server.dsn(old), autocommit=True) as conn:
            def rows(c, table):
                return c.execute(f"SELECT * FROM metrics.{table} ORDER BY series_id, bucket").fetchall()

            for tier in tiers:
                assert rows(conn, tier) == rows(src, tier)
                assert rows(conn, f"{tier}_sketch") == rows(src, f"{tier}_sketch") != []
                assert partitioning.existing_partitions(conn, "metrics", f"{tier}_sketch") == {
                    name.replace(tier, f"{tier}_sketch") for name in partitioning.existing_partitions(conn, "metrics", tier)}
            # The existing rows were rewritten: the dropped sketches' bytes left the heap.
            heap_after = conn.execute("SELECT pg_relation_size('metrics.rollup_5m_p20260706')").fetchone()[0]
            assert heap_after < 0.6 * heap_before
            # Sketches that were moved merge into the same rows as those written since.
            rollups.refresh(Warehouse(pg_server.dsn(old)), ["rollup_1h", "rollup_1d"], *day)
            for tier in ("rollup_1h", "rollup_1d"):
                assert rows(conn, tier) == rows(src, tier)
                assert rows(conn, f"{tier}_sketch") == rows(src, f"{tier}_sketch")
    finally:
        pg_server.drop_database(old)
