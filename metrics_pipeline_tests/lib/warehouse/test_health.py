"""The pipeline's health as `/metrics` reads it (lib/warehouse/health.py): right on a known sample, cheap
by construction (every statement answerable from indexes), and a down warehouse says so without its DSN."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline.lib.warehouse import health
from metrics_pipeline.lib.warehouse.db import Warehouse, WarehouseUnavailable
from metrics_pipeline_tests.support import health_sample
from metrics_pipeline_tests.support.api import free_port

NOW = datetime(2026, 11, 22, 12, 20, 15, tzinfo=timezone.utc)
HOUR = NOW.replace(minute=0, second=0)


@pytest.fixture
def sample(warehouse_dsn, db) -> health_sample.Expected:
    return health_sample.populate(db, NOW)


def test_a_reading_of_the_known_sample_is_exact(warehouse_dsn, sample):
    h = health.read(Warehouse(warehouse_dsn), now=NOW)
    assert h.read_at == NOW and 0 < h.duration_s < 5
    # whatap's newest sample is 3 days old: found by the unbounded probe, not lost to the one-day bound
    assert h.newest_sample == sample.newest_sample
    assert h.points_last_hour == sample.points_last_hour
    assert h.quarantined_last_day == sample.quarantined_last_day
    assert h.landing_waiting == {
        "ingestion_logs": health.LandingWaiting(files=2, oldest_hour=HOUR - timedelta(hours=1)),
        "custom_measures": health.LandingWaiting(files=0, oldest_hour=None),
    }
    zeros = {(s, source): 0 for s in ("warning", "critical") for source in sample.newest_sample}
    assert h.alerts_firing == {**zeros, **sample.firing}
    assert h.delivery == {
        "alertmanager": health.Delivery(pending=1, failing=0, last_sent=NOW - timedelta(minutes=1)),
        "webhook": health.Delivery(pending=4, failing=1, last_sent=None),
    }
    assert h.newest_bucket == {"rollup_5m": NOW - timedelta(minutes=10), "rollup_1h": HOUR - timedelta(hours=1),
                               "series_health_hourly": HOUR, "sla_hourly": HOUR - timedelta(hours=1)}
    # the newest *complete* hour: the hour in progress, where every series is still "no data", is not it
    assert h.silent_hour == HOUR - timedelta(hours=1)
    assert h.silent_series == {"host": health.SilentSeries(silent=1, reporting=1),
                               "cloudwatch": health.SilentSeries(silent=0, reporting=1)}


def test_an_empty_warehouse_reads_as_nothing_rather_than_failing(warehouse_dsn):
    h = health.read(Warehouse(warehouse_dsn), now=NOW)
    assert (h.newest_sample, h.points_last_hour, h.quarantined_last_day, h.landing_waiting, h.alerts_firing,
            h.newest_bucket, h.silent_series, h.silent_hour) == ({}, {}, {}, {}, {}, {}, {}, None)
    assert h.delivery == {t: health.Delivery(0, 0, None) for t in health.TARGETS}


class OneConnection:
    """A warehouse lending the same connection every time, as a pool does."""

    def __init__(self, conn: psycopg.Connection):
        self.conn, self.schema = conn, "metrics"

    @contextlib.contextmanager
    def connect(self, **kwargs):
        yield self.conn


def test_a_reading_leaves_a_lent_connection_as_it_found_it(warehouse_dsn, sample):
    """The API reads through a connection pool: the next borrower must not inherit a read-only
    session or a statement timeout."""
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        health.read(OneConnection(conn), now=NOW)
        assert conn.execute("SHOW statement_timeout").fetchone()[0] == "0"
        assert conn.execute("SHOW transaction_read_only").fetchone()[0] == "off"
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


BIG_TABLES = ("points", "rollup_5m", "rollup_1h", "rollup_1d", "series_health_hourly", "ingestion_runs",
              "quarantine", "landing_files", "alerts", "sla_hourly", "sla_daily")


@pytest.mark.parametrize("name", list(health.statements("metrics", NOW)))
def test_every_statement_can_be_answered_from_indexes(warehouse_dsn, sample, name):
    """With sequential scans priced out, no table that grows with history is read whole: each
    statement has an index for what it reads (on tables this small the planner would otherwise
    pick a sequential scan anyway). `series` is read whole on purpose: one probe per series."""
    sql, params = health.statements("metrics", NOW)[name]
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) {sql}", params).fetchall())
    scanned = [line.strip() for line in plan.splitlines() if "Seq Scan on" in line]
    assert not [s for s in scanned if s.split("Seq Scan on ")[1].split()[0].split("_p2")[0] in BIG_TABLES], plan


def test_the_landing_statement_uses_the_waiting_files_index(warehouse_dsn, sample):
    sql, params = health.statements("metrics", NOW)["landing_waiting"]
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (COSTS OFF) {sql}", params).fetchall())
    assert "landing_files_waiting_idx" in plan, plan


def test_an_unreachable_warehouse_raises_a_message_without_the_password():
    dsn = f"host=127.0.0.1 port={free_port()} dbname=metrics user=metrics password=s3cret-pw connect_timeout=2"
    with pytest.raises(WarehouseUnavailable) as caught:
        health.read(Warehouse(dsn), now=NOW)
    assert "s3cret-pw" not in str(caught.value) and "unreachable" in str(caught.value)
