"""The hour in progress loaded as it grows: only what is new, and the same rows as a full load."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.host import files, live
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse

H = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)


def _line(host: str, ts: float, cpu: float) -> bytes:
    samples = [["host_cpu_percent", cpu, "percent", {}], ["host_memory_percent", 50.0, "percent", {}]]
    return (json.dumps({"ts": ts, "host": host, "samples": samples}) + "\n").encode()


def _append(root, host: str, ts: float, data: bytes) -> None:
    path = root / host_key(host, ts)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(data)


def _points(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.resource, s.metric, p.ts, p.value FROM metrics.points p JOIN metrics.series s USING (series_id) "
            "ORDER BY 1, 2, 3").fetchall()


def test_a_live_load_reads_only_the_complete_lines_appended_since_the_last_one(warehouse_dsn, tmp_path):
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(tmp_path)
    first = b"".join(_line("web-1", H.timestamp() + s, 10.0 + s) for s in range(30))
    _append(tmp_path, "web-1", H.timestamp(), first)
    one = live.load_new(wh, zone, H + timedelta(seconds=31))
    assert one.load.points == 60 and one.new_bytes == len(first)
    more = b"".join(_line("web-1", H.timestamp() + s, 10.0 + s) for s in range(30, 50))
    torn = _line("web-1", H.timestamp() + 50, 60.0)[:25]  # the agent is writing it right now
    _append(tmp_path, "web-1", H.timestamp(), more + torn)
    two = live.load_new(wh, zone, H + timedelta(seconds=51))
    assert two.new_bytes == len(more) and two.load.points == 40  # only the new complete lines
    assert len(_points(warehouse_dsn)) == 100
    nothing = live.load_new(wh, zone, H + timedelta(seconds=52))
    assert nothing.load is None and nothing.new_bytes == 0
    _append(tmp_path, "web-1", H.timestamp(), _line("web-1", H.timestamp() + 50, 60.0)[25:])
    assert live.load_new(wh, zone, H + timedelta(seconds=53)).load.points == 2


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 179), max_size=6, unique=True))
def test_live_loads_in_any_pieces_then_the_closed_hour_run_give_the_rows_of_one_full_load(warehouse_dsn, tmp_path_factory,
                                                                                          cuts):
    """Three minutes of two hosts written second by second; live loads at random moments, then the
    closed-hour run: the points equal what one load of the finished files gives."""
    root = tmp_path_factory.mktemp("landing")
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(root)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.points, metrics.series, metrics.series_intervals, metrics.live_offsets, "
                     "metrics.landing_files CASCADE")
    cuts = set(cuts)
    for second in range(180):
        for host in ("web-1", "web-2"):
            _append(root, host, H.timestamp() + second, _line(host, H.timestamp() + second, float(second % 97)))
        if second in cuts:
            live.load_new(wh, zone, H + timedelta(seconds=second + 1))
            assert len(_points(warehouse_dsn)) == (second + 1) * 2 * 2  # everything complete so far
    live_rows = _points(warehouse_dsn)
    files.load_window(wh, zone, H, H + timedelta(hours=1))
    closed = _points(warehouse_dsn)
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.points")
    files.load_window(wh, zone, H, H + timedelta(hours=1))
    assert closed == _points(warehouse_dsn)
    assert set(live_rows) <= set(closed)
