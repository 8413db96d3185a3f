"""`whatap_points` and the three defects of issue 16, through `materialize` with a real PostgreSQL
and the WhaTap double over HTTP: project tokens (item 7), cut answers (item 8), HTTP 200 bodies
carrying a message instead of data (item 9)."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline_tests.support.runs import failure_messages
from metrics_pipeline_tests.support.whatap import (
    DAY_ROWS,
    DISK_HEAVY,
    running_double,
    write_config,
)

HOUR = datetime(2026, 1, 5, 10, tzinfo=UTC)
KEY = hour_key(HOUR)
DAY = datetime(2026, 1, 5, tzinfo=UTC)


def resources(dsn, config_path) -> dict:
    return {"warehouse": WarehouseResource(dsn=dsn), "whatap": WhatapResource(config_path=str(config_path))}


def metadata(result) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node("whatap_points")[0].metadata.items()}


def series(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.metric, s.resource, s.labels::text, count(p.*) FROM metrics.series s "
            "JOIN metrics.points p USING (series_id) WHERE s.source = 'whatap' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()


def points(dsn, metric: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM metrics.points p JOIN metrics.series s USING (series_id) "
                            "WHERE s.source = 'whatap' AND s.metric = %s", (metric,)).fetchone()[0]


# -- item 7 ---------------------------------------------------------------------------------------

def test_project_tokens_alone_collect_apm_series_and_store_what_the_account_token_stores(
        warehouse_dsn, tmp_path, monkeypatch):
    with running_double() as double:
        by_project = write_config(tmp_path / "p.yaml", double, monkeypatch, by="project")
        first = dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, by_project))
        stored = series(warehouse_dsn)
        by_account = write_config(tmp_path / "a.yaml", double, monkeypatch, by="account")
        again = dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, by_account))
    assert metadata(first)["projects"] == 3
    apm = [s for s in stored if s[0].startswith("whatap_apm_")]
    assert {s[0] for s in apm} >= {"whatap_apm_thread_count", "whatap_apm_apdex", "whatap_apm_tps"}
    assert all('"project_name": "web-prod"' in s[2] for s in apm)
    assert not any('"project_name": "1202"' in s[2] for s in stored)  # names, not codes
    # The account token finds the very same series and points: nothing to change, nothing added.
    assert metadata(again)["points_changed"] == 0 and series(warehouse_dsn) == stored


# -- item 8 ---------------------------------------------------------------------------------------

def test_a_24_hour_backfill_of_7_disks_under_a_server_cap_loads_every_point_and_says_it_split(
        warehouse_dsn, tmp_path, monkeypatch):
    """Issue 16: a 24-hour server_disk request for 7 disks returned 100,000 of 120,960 rows and the
    run succeeded. Here the server's own cap (3,000 rows, far below our 100,000) cuts every hourly
    answer (5,040 rows) too: every point must still arrive."""
    hours = [hour_key(DAY + timedelta(hours=h)) for h in range(24)]
    with running_double([DISK_HEAVY], row_cap=3_000) as double:
        path = write_config(tmp_path / "w.yaml", double, monkeypatch, collect=["mxql"], mxql_categories=["server_disk"])
        result = dg.materialize(
            [whatap_points], resources=resources(warehouse_dsn, path),
            tags={"dagster/asset_partition_range_start": hours[0], "dagster/asset_partition_range_end": hours[-1]})
    meta = metadata(result)
    assert points(warehouse_dsn, "whatap_server_disk_usedpercent") == DAY_ROWS
    assert meta["points"] == 3 * DAY_ROWS  # usedPercent, readIops, writeIops
    assert double.cut_answers > 0 and meta["requests_split"] > 0
    assert "| mxql | 3000 |" in meta["row_caps_seen"] and "| mxql |" in meta["splits_per_endpoint"]
    assert "limit reached" not in meta["skipped_values"]


def test_an_answer_that_cannot_be_split_fails_the_run_naming_what_was_cut_and_keeps_the_window(
        warehouse_dsn, tmp_path, monkeypatch):
    with running_double([DISK_HEAVY]) as double:
        path = write_config(tmp_path / "w.yaml", double, monkeypatch, collect=["mxql"], mxql_categories=["server_disk"])
        assert dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, path)).success
        before = series(warehouse_dsn)
        double.row_cap = 5  # 7 disks share every 5-second step
        result = dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, path),
                                raise_on_error=False)
    assert not result.success
    text = "\n".join(failure_messages(result))
    assert "WhaTap mxql server_disk for project 1301: the answer for 2026-01-05T10:00:00Z to 2026-01-05T10:00:05Z" in text
    assert "came back with 5 rows, the smallest row cap seen (5), so rows past it were cut" in text
    assert DISK_HEAVY.token not in text and double.account_token not in text
    assert series(warehouse_dsn) == before


# -- item 9 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, said", [("message_body", "injected message: no data permission"),
                                        ("msg_body", "injected msg: request rejected")])
def test_a_200_message_instead_of_data_fails_the_run_instead_of_loading_an_empty_hour(
        warehouse_dsn, tmp_path, monkeypatch, kind, said):
    with running_double() as double:
        path = write_config(tmp_path / "w.yaml", double, monkeypatch, collect=["sm_stat", "apm"])
        assert dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, path)).success
        before = series(warehouse_dsn)
        double.fail_next(kind, path="sm_stat")
        result = dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, path),
                                raise_on_error=False)
    assert not result.success
    assert f"WhaTap sm_stat for project 1202 returned an error: {said}" in "\n".join(failure_messages(result))
    assert series(warehouse_dsn) == before
