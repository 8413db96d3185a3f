import logging
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest
import yaml

from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline.dev.doubles.whatap import WhatapDouble, value

HOUR = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
KEY = HOUR.strftime("%Y-%m-%d-%H:%M")


@pytest.fixture(params=[{}, {"apm_shape": "data", "string_numbers": True}], ids=["objects-shape", "data-shape-strings"])
def double(request):
    server = WhatapDouble(**request.param)
    server.url = server.start()
    yield server
    server.stop()


def resources(dsn, tmp_path, double, **config):
    path = tmp_path / "whatap.yaml"
    path.write_text(yaml.safe_dump({"base_url": double.url, "account_token_env": "TEST_WHATAP_ACCOUNT_TOKEN", **config}))
    return {"warehouse": WarehouseResource(dsn=dsn), "whatap": WhatapResource(config_path=str(path))}


def stored(dsn, metric):
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.resource, s.labels, extract(epoch FROM p.ts)::bigint * 1000, p.value FROM metrics.points p "
            "JOIN metrics.series s USING (series_id) WHERE s.source = 'whatap' AND s.metric = %s ORDER BY 1, 3",
            (metric,),
        ).fetchall()


def test_whatap_points_loads_the_doubles_truth_and_reruns_are_idempotent(warehouse_dsn, tmp_path, double, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("TEST_WHATAP_ACCOUNT_TOKEN", double.account_token)
    res = resources(warehouse_dsn, tmp_path, double, collect=["sm_stat", "mxql", "apm"], mxql_categories=["server_disk", "app_counter"])
    result = dg.materialize([whatap_points], partition_key=KEY, resources=res)
    meta = result.asset_materializations_for_node("whatap_points")[0].metadata
    assert meta["status"].value == "collected" and meta["projects"].value == 3 and meta["agents"].value == 6

    cpu = stored(warehouse_dsn, "whatap_server_cpu")
    assert len(cpu) == 4 * 12  # 4 server agents, 12 five-minute points
    resource, labels, t, v = cpu[0]
    assert resource == "batch-01" and labels["project_code"] == "1203" and labels["category"] == "sm_stat"
    assert v == value(1203, -52001, "cpu", t)
    disks = stored(warehouse_dsn, "whatap_server_disk_usedpercent")
    assert {row[1]["mount"] for row in disks} == {"/", "/data"} and len(disks) == (2 * 3 + 1) * 720
    threads = stored(warehouse_dsn, "whatap_apm_thread_count")
    assert len(threads) == 2 * 12 and threads[0][3] == value(1201, 904112233, "thread_count", threads[0][2])
    assert stored(warehouse_dsn, "whatap_apm_apdex")[0][3] <= 1.0

    again = dg.materialize([whatap_points], partition_key=KEY, resources=res)
    assert again.asset_materializations_for_node("whatap_points")[0].metadata["points_changed"].value == 0
    # Tokens appear nowhere: not in metadata, not in the captured logs.
    text = str(meta) + caplog.text + str(again.all_events)
    assert double.account_token not in text and "prj-token" not in text


def test_faults_are_retried_and_a_bad_token_fails_clearly(warehouse_dsn, tmp_path, double, monkeypatch):
    monkeypatch.setenv("TEST_WHATAP_ACCOUNT_TOKEN", double.account_token)
    double.fail_next("429")
    double.fail_next("500")
    res = resources(warehouse_dsn, tmp_path, double, collect=["sm_stat"])
    result = dg.materialize([whatap_points], partition_key=KEY, resources=res)
    assert result.asset_materializations_for_node("whatap_points")[0].metadata["api_errors"].value == 2
    monkeypatch.setenv("TEST_WHATAP_ACCOUNT_TOKEN", "not-the-token-42")
    bad = dg.materialize([whatap_points], partition_key=KEY, resources=res, raise_on_error=False)
    assert not bad.success
    failure = str(bad.all_events)
    assert "WhaTap refused the token for the account on projects" in failure and "not-the-token-42" not in failure


def test_without_token_variables_whatap_is_not_configured(warehouse_dsn, tmp_path, double, monkeypatch):
    monkeypatch.delenv("TEST_WHATAP_ACCOUNT_TOKEN", raising=False)
    result = dg.materialize([whatap_points], partition_key=KEY, resources=resources(warehouse_dsn, tmp_path, double))
    assert result.asset_materializations_for_node("whatap_points")[0].metadata["status"].value == "not configured"


def test_config_refuses_tokens_written_in_the_file(tmp_path):
    from metrics_pipeline.lib.whatap.config import load_config
    from metrics_pipeline.lib.yaml_config import ConfigError

    path = tmp_path / "w.yaml"
    path.write_text("account_token_env: acct-token-7f2e9d\ncolect: [apm]\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "account_token_env: must be the NAME of an environment variable" in str(exc.value)
    assert "colect: unknown key" in str(exc.value)
    assert "acct-token-7f2e9d" not in str(exc.value).split("must be")[1]


def test_the_whatap_schedule_requests_the_closed_hour_and_a_late_rerun():
    from metrics_pipeline.defs.whatap.schedules import whatap_hourly

    context = dg.build_schedule_context(scheduled_execution_time=HOUR + timedelta(minutes=5))
    assert [r.partition_key for r in whatap_hourly(context)] == ["2026-01-05-09:00", "2026-01-05-07:00"]
    assert whatap_points.op.pool == "whatap"
