"""API source faults through the real assets (SPEC §2.1, §2.2, §9): throttling bursts, 429/500,
answers slower than the timeout, and failures in the middle of a fetch.

A burst the retry policy absorbs must leave exactly the warehouse a clean run leaves; a burst it
cannot absorb must fail the run with a clear message and leave the window as it was (the fetch
completes before anything is written). CloudWatch runs against moto with the project's double
(faults injected server-side, retried by botocore's own standard mode); WhaTap against its double.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import yaml

from metrics_pipeline.defs.cloudwatch.assets import CloudWatchResource, cloudwatch_points
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline_tests.support.cloudwatch import HOUR as CW_HOUR
from metrics_pipeline_tests.support.faults.dump import dump_tables
from metrics_pipeline_tests.support.runs import failure_messages

WH_HOUR = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)


def window_dump(dsn: str, start: datetime) -> dict[str, bytes]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return dump_tables(conn, ["points", "series"], start, start + timedelta(hours=1))


def failure_text(result) -> str:
    return "\n".join(failure_messages(result))


def metadata(result, node: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}


# -- CloudWatch ---------------------------------------------------------------------------------

def cloudwatch_resources(dsn, tmp_path, config) -> dict:
    path = tmp_path / "cloudwatch.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(exclude_none=True)))
    return {"warehouse": WarehouseResource(dsn=dsn), "cloudwatch": CloudWatchResource(config_path=str(path))}


def test_a_cloudwatch_throttling_burst_is_retried_and_leaves_what_a_clean_run_leaves(
        warehouse_dsn, double, seeded, cw_config, tmp_path):
    resources = cloudwatch_resources(warehouse_dsn, tmp_path, cw_config())
    key = CW_HOUR.strftime("%Y-%m-%d-%H:%M")
    double.fail_next("Throttling")
    double.fail_next("ThrottlingException")
    throttled = dg.materialize([cloudwatch_points], partition_key=key, resources=resources)
    meta = metadata(throttled, "cloudwatch_points")
    assert (meta["retries"], meta["api_calls"], meta["points"]) == (2, 3, 17 * 60)
    after_burst = window_dump(warehouse_dsn, CW_HOUR)

    clean = dg.materialize([cloudwatch_points], partition_key=key, resources=resources)
    assert metadata(clean, "cloudwatch_points")["points_changed"] == 0
    assert window_dump(warehouse_dsn, CW_HOUR) == after_burst


def test_cloudwatch_throttling_beyond_the_retry_budget_fails_clearly_and_keeps_the_window(
        warehouse_dsn, double, seeded, cw_config, tmp_path):
    key = CW_HOUR.strftime("%Y-%m-%d-%H:%M")
    assert dg.materialize([cloudwatch_points], partition_key=key,
                          resources=cloudwatch_resources(warehouse_dsn, tmp_path, cw_config())).success
    before = window_dump(warehouse_dsn, CW_HOUR)

    double.fail_next("Throttling", 5)
    result = dg.materialize([cloudwatch_points], partition_key=key, raise_on_error=False,
                           resources=cloudwatch_resources(warehouse_dsn, tmp_path, cw_config(max_attempts=2)))
    double.faults.clear()
    assert not result.success
    assert ("GetMetricData failed for account 'prod' in eu-west-1: Throttling (gave up after 2 attempts with backoff)"
            in failure_text(result))
    assert window_dump(warehouse_dsn, CW_HOUR) == before


# -- WhaTap -------------------------------------------------------------------------------------

def whatap_resources(dsn, tmp_path, double, monkeypatch, **config) -> dict:
    monkeypatch.setenv("FAULTS_WHATAP_TOKEN", double.account_token)
    path = tmp_path / "whatap.yaml"
    path.write_text(yaml.safe_dump({"base_url": double.url, "account_token_env": "FAULTS_WHATAP_TOKEN",
                                    "collect": ["sm_stat", "apm"], "apm_metrics": ["thread_count", "apdex"], **config}))
    return {"warehouse": WarehouseResource(dsn=dsn), "whatap": WhatapResource(config_path=str(path))}


def test_whatap_429_500_and_a_timeout_mid_fetch_are_retried_and_leave_what_a_clean_run_leaves(
        warehouse_dsn, whatap_double, tmp_path, monkeypatch):
    resources = whatap_resources(warehouse_dsn, tmp_path, whatap_double, monkeypatch, timeout_seconds=0.5)
    key = WH_HOUR.strftime("%Y-%m-%d-%H:%M")
    whatap_double.fail_next("429", path="sm_stat")
    whatap_double.fail_next("slow", seconds=1.5, path="sm_stat")  # longer than the 0.5 s timeout
    whatap_double.fail_next("500", path="/apdex/")
    faulty = dg.materialize([whatap_points], partition_key=key, resources=resources)
    meta = metadata(faulty, "whatap_points")
    assert meta["api_errors"] == 3 and meta["points"] > 0
    assert not whatap_double.faults  # every fault was served, in the middle of the fetch
    after_faults = window_dump(warehouse_dsn, WH_HOUR)

    clean = dg.materialize([whatap_points], partition_key=key, resources=resources)
    assert metadata(clean, "whatap_points")["points_changed"] == 0
    assert window_dump(warehouse_dsn, WH_HOUR) == after_faults


def test_whatap_failing_after_its_retries_mid_fetch_fails_clearly_and_keeps_the_window(
        warehouse_dsn, whatap_double, tmp_path, monkeypatch):
    key = WH_HOUR.strftime("%Y-%m-%d-%H:%M")
    resources = whatap_resources(warehouse_dsn, tmp_path, whatap_double, monkeypatch, max_attempts=2)
    assert dg.materialize([whatap_points], partition_key=key, resources=resources).success
    before = window_dump(warehouse_dsn, WH_HOUR)
    served = len(whatap_double.requests)

    # The server projects are fetched fine; the APM project's apdex series fails twice in a row.
    whatap_double.fail_next("500", times=2, path="/apdex/")
    result = dg.materialize([whatap_points], partition_key=key, resources=resources, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert "WhaTap apm:apdex for project 1201 failed after 2 attempts (HTTP 500)" in text
    assert whatap_double.account_token not in text and "prj-token" not in text
    assert len(whatap_double.requests) - served > 3  # other calls of the fetch had succeeded first
    assert window_dump(warehouse_dsn, WH_HOUR) == before
