"""The BI views let a reader's conditions reach the tables (issue 17), and v_sla_monthly adds up.

Plans are read, not timed (the timings are benchmarks/bi_queries.py's): as a login that sees every
tenant, a date bound prunes partitions, a label containment reaches the GIN index, a count reads no
series row, and parallel plans are possible. What a restricted login may learn is the security
suite's (metrics_pipeline_tests/security/test_bi_role.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from psycopg.types.json import Jsonb

from metrics_pipeline.lib.warehouse import bi, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.security import connect_as

SCHEMA = "metrics"
NOW = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
OLD = NOW - timedelta(days=100)  # months before any date bound of the queries below


@pytest.fixture
def warehouse(warehouse_dsn) -> Iterator[str]:
    """Four series of two tenants with hourly rollups over the last 100 days (four monthly partitions)."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        for i, tenant in enumerate(("acme", "acme", "globex", "globex")):
            conn.execute(f"INSERT INTO {SCHEMA}.series (source, metric, resource, labels, unit) VALUES "
                         "('host', 'host_cpu_percent', %s, %s, 'percent')",
                         (f"web-{i}", Jsonb({"host": f"web-{i}", "tenant": tenant, "region": f"r{i % 2}"})))
        partitioning.ensure_partitions(conn, SCHEMA, "rollup_1h", OLD, NOW)
        conn.execute(f"""INSERT INTO {SCHEMA}.rollup_1h (series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99)
            SELECT s.series_id, b, 12, 120, 5, 15, 10, 10, 10, 14, 15 FROM {SCHEMA}.series s
            CROSS JOIN generate_series(%s::timestamptz, %s::timestamptz - interval '1 hour', interval '1 hour') b""",
                     (OLD, NOW))
        conn.execute("VACUUM (ANALYZE)")
    yield warehouse_dsn


@pytest.fixture
def login(warehouse) -> Iterator[psycopg.Connection]:
    """An unrestricted BI login."""
    role, password = f"bi_views_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    bi.ensure_role(Warehouse(warehouse, SCHEMA), role, password=password)
    with connect_as(warehouse, role, password) as conn:
        yield conn
    with psycopg.connect(warehouse, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def _executed(conn: psycopg.Connection, query: str) -> list[dict]:
    """The plan nodes of `query` that ran (EXPLAIN ANALYZE), flattened."""
    (plan,) = conn.execute(f"EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) {query}").fetchone()[0]
    nodes, todo = [], [plan["Plan"]]
    while todo:
        node = todo.pop()
        todo += node.get("Plans", [])
        if node.get("Actual Loops", 0) > 0:
            nodes.append(node)
    return nodes


def _relations(nodes: list[dict]) -> set[str]:
    return {n["Relation Name"] for n in nodes if "Relation Name" in n}


def test_a_date_bound_prunes_partitions_for_a_login_that_sees_every_tenant(login):
    """`bucket_start >= CURRENT_DATE - 14` compares a timestamptz with a date, an operator PostgreSQL
    does not call leakproof: the barrier kept it above the view, and every month was read."""
    nodes = _executed(login, f"SELECT max(max) FROM {SCHEMA}.v_rollup_1h WHERE bucket_start >= CURRENT_DATE - 14")
    scanned = {r for r in _relations(nodes) if r.startswith("rollup_1h_p")}
    assert scanned and scanned <= {f"rollup_1h_p{(NOW - timedelta(days=d)):%Y%m}" for d in (0, 15)}, scanned
    old = f"rollup_1h_p{OLD:%Y%m}"
    assert old not in _relations(_executed(login, f"SELECT count(*) FROM {SCHEMA}.v_rollup_1h "
                                                  "WHERE bucket_start >= now() - interval '14 days'"))


def test_a_count_reads_no_series_row_and_a_label_containment_reaches_the_label_index(login):
    nodes = _executed(login, f"SELECT count(*) FROM {SCHEMA}.v_rollup_1h WHERE bucket_start >= now() - interval '7 days'")
    assert "series" not in _relations(nodes)  # the LEFT JOIN to series' primary key is dropped
    login.execute("SET enable_seqscan = off")  # four series: only the index being usable is in question
    nodes = _executed(login, f"""SELECT resource FROM {SCHEMA}.v_series WHERE labels @> '{{"region": "r1"}}'""")
    assert "series_labels_idx" in {n.get("Index Name") for n in nodes}
    rows = login.execute(f"""SELECT resource FROM {SCHEMA}.v_series WHERE labels @> '{{"region": "r1"}}' ORDER BY 1""")
    assert [r for (r,) in rows] == ["web-1", "web-3"]


def test_the_views_leave_room_for_parallel_plans(login):
    for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size",
                    "min_parallel_index_scan_size"):
        login.execute(f"SET {setting} = 0")
    plan = "\n".join(r for (r,) in login.execute(f"EXPLAIN SELECT count(*), avg(avg) FROM {SCHEMA}.v_rollup_1h"))
    assert "Gather" in plan, plan
    assert login.execute(f"SELECT count(*) FROM {SCHEMA}.v_rollup_1h").fetchone()[0] == 4 * 100 * 24


def test_v_sla_monthly_adds_up_the_utc_days_of_each_utc_month_whatever_the_session_time_zone(warehouse, login):
    days = [datetime(2026, 5, 30, tzinfo=timezone.utc) + timedelta(days=i) for i in range(4)]  # May 30 .. June 2
    with psycopg.connect(warehouse, autocommit=True) as conn:
        for i, day in enumerate(days):
            conn.execute(
                f"""INSERT INTO {SCHEMA}.sla_daily (bucket, company, zone, source_system, object, runs, successes,
                        failures, failure_rate, duration_p95_s, duration_max_s, sla_breaches, last_success_at, sla_met)
                    VALUES (%s, 'acme', '1-Raw', 'Zoho', 'Deals', %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (day, 10, 10 - i, i, i / 10, 100.0 + i, 200.0 + i, i % 2, day + timedelta(hours=20), i == 0))
    login.execute("SET TimeZone = 'America/Los_Angeles'")  # June 1 00:00 UTC is May 31 there
    rows = login.execute(f"""SELECT bucket_start AT TIME ZONE 'UTC', days, days_with_runs, days_sla_met, runs, failures,
                                    failure_rate, worst_day_duration_p95_s, duration_max_s, sla_breaches, last_success_at,
                                    sla_met
                             FROM {SCHEMA}.v_sla_monthly ORDER BY 1""").fetchall()
    may, june = rows
    assert may == (datetime(2026, 5, 1), 2, 2, 1, 20, 1, 1 / 20, 101.0, 201.0, 1, days[1] + timedelta(hours=20), False)
    assert june[:10] == (datetime(2026, 6, 1), 2, 2, 0, 20, 5, 5 / 20, 103.0, 203.0, 1)
    assert june[10] == days[3] + timedelta(hours=20) and june[11] is False
