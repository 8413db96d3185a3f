"""Secrets (WhaTap tokens, AWS keys, the warehouse password, the webhook URL) never leave the process.

Each test runs real materialisations (in-process, on a throwaway Dagster instance) that use the
secrets, one that succeeds and one that fails because of them, then searches everything the runs
left behind: every event log record serialised (messages, metadata, error info with causes and
stack traces), the run record, captured Python logs at DEBUG and the process's stdout/stderr.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import dagster as dg
import pytest
import yaml

from metrics_pipeline.defs.alerts.resources import WEBHOOK_URL_ENV, AlertTargetsResource
from metrics_pipeline.defs.alerts.sensors import alert_delivery
from metrics_pipeline.defs.cloudwatch.assets import CloudWatchResource, cloudwatch_points
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline.dev.doubles.whatap import Agent, Project, WhatapDouble
from metrics_pipeline.lib.alerts import delivery, engine
from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.whatap.client import WhatapClient, WhatapError
from metrics_pipeline_tests.support.alerts import KEY, H, check_results, host_checks, load_cpu, source_stub
from metrics_pipeline_tests.support.cloudwatch import HOUR as CW_HOUR
from metrics_pipeline_tests.support.runs import failure_messages
from metrics_pipeline_tests.support.security import (
    SECRETS,
    EchoServer,
    assert_no_secret,
    exception_text,
    run_text,
)

WHATAP_KEY = "2026-01-05-10:00"


@pytest.fixture
def whatap_double():
    """The WhaTap double with this suite's secret tokens: one server project, one APM project."""
    projects = [
        Project(1202, "hosts-seoul", "SMS", "INFRA", SECRETS["whatap_project"], (Agent(-1830021144, "db-01"),)),
        Project(1201, "web-prod", "APM", "JAVA", SECRETS["whatap_project"] + "-apm", (Agent(904112233, "web-01-8080"),)),
    ]
    double = WhatapDouble(projects, account_token=SECRETS["whatap_account"])
    double.url = double.start()
    yield double
    double.stop()


def test_whatap_tokens_and_the_db_password_never_reach_the_event_log_of_a_good_or_a_refused_run(
        whatap_double, secret_dsn, instance, tmp_path, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SEC_WHATAP_ACCOUNT", SECRETS["whatap_account"])
    monkeypatch.setenv("SEC_WHATAP_1202", SECRETS["whatap_project"])
    config = tmp_path / "whatap.yaml"
    config.write_text(yaml.safe_dump({
        "base_url": whatap_double.url, "account_token_env": "SEC_WHATAP_ACCOUNT",
        "projects": [{"code": 1202, "token_env": "SEC_WHATAP_1202"}], "collect": ["sm_stat", "apm"],
        "max_attempts": 1,
    }))
    resources = {"warehouse": WarehouseResource(dsn=dg.EnvVar("SEC_TEST_DSN")),
                 "whatap": WhatapResource(config_path=str(config))}

    good = dg.materialize([whatap_points], partition_key=WHATAP_KEY, resources=resources, instance=instance)
    assert good.success
    assert good.asset_materializations_for_node("whatap_points")[0].metadata["points"].value > 0

    monkeypatch.setenv("SEC_WHATAP_ACCOUNT", SECRETS["whatap_wrong"])  # WhaTap answers 401
    bad = dg.materialize([whatap_points], partition_key=WHATAP_KEY, resources=resources, instance=instance,
                         raise_on_error=False)
    assert not bad.success
    assert any("WhaTap refused the token for the account on projects (HTTP 401)" in m for m in failure_messages(bad))

    captured = capfd.readouterr()
    everything = run_text(instance, good) + run_text(instance, bad) + caplog.text + captured.out + captured.err
    assert "WhaTap refused the token" in run_text(instance, bad)  # the error info is in what is searched
    assert_no_secret(everything, SECRETS["whatap_account"], SECRETS["whatap_project"], SECRETS["whatap_wrong"],
                     SECRETS["db_password"])


def test_whatap_error_bodies_echoing_the_token_are_not_repeated_in_errors(echo_server):
    """A server (or proxy) whose 4xx page echoes the request headers must not put the token into our
    exception, which Dagster would store in the event log."""
    echo_server.status = 400
    client = WhatapClient(echo_server.url, max_attempts=1)
    project = Project(1202, "p", "SMS", "INFRA", SECRETS["whatap_project"], ())
    with pytest.raises(WhatapError) as raised:
        client.servers(project)
    assert "HTTP 400" in str(raised.value) and "sm_servers" in str(raised.value)
    assert_no_secret(exception_text(raised.value), SECRETS["whatap_project"])


@pytest.fixture
def aws_secrets(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRETS["aws_secret_key"])
    monkeypatch.setenv("AWS_SESSION_TOKEN", SECRETS["aws_session_token"])


def test_aws_keys_and_the_db_password_never_reach_the_event_log_of_a_good_or_a_refused_cloudwatch_run(
        seeded, cw_config, double, aws_secrets, secret_dsn, instance, tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)
    config = tmp_path / "cloudwatch.yaml"
    config.write_text(yaml.safe_dump(cw_config().model_dump(exclude_none=True)))
    resources = {"warehouse": WarehouseResource(dsn=dg.EnvVar("SEC_TEST_DSN")),
                 "cloudwatch": CloudWatchResource(config_path=str(config))}
    key = CW_HOUR.strftime("%Y-%m-%d-%H:%M")

    good = dg.materialize([cloudwatch_points], partition_key=key, resources=resources, instance=instance)
    assert good.asset_materializations_for_node("cloudwatch_points")[0].metadata["points"].value > 0

    double.fail_next("InvalidClientTokenId")  # AWS refuses the key: not retried, a clear error
    bad = dg.materialize([cloudwatch_points], partition_key=key, resources=resources, instance=instance,
                         raise_on_error=False)
    assert not bad.success
    assert any("AWS refused the credentials for account 'prod' in eu-west-1 (InvalidClientTokenId)" in m
               for m in failure_messages(bad))

    captured = capfd.readouterr()
    everything = run_text(instance, good) + run_text(instance, bad) + caplog.text + captured.out + captured.err
    assert "InvalidClientTokenId" in run_text(instance, bad)
    assert_no_secret(everything, SECRETS["aws_secret_key"], SECRETS["aws_session_token"], SECRETS["db_password"])


def test_the_db_password_never_reaches_the_event_log_of_an_alert_check_or_of_one_that_cannot_connect(
        secret_dsn, unreachable_dsn, instance, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    load_cpu(secret_dsn, [97.0] * 600)  # ten minutes above both CPU thresholds: the check fails, alerts recorded
    assets = [source_stub("host_points"), *host_checks()]

    fired = dg.materialize(assets, partition_key=KEY, instance=instance,
                           resources={"warehouse": WarehouseResource(dsn=dg.EnvVar("SEC_TEST_DSN"))})
    threshold = check_results(fired)["threshold_alerts"]
    assert not threshold.passed and threshold.metadata["firing"].value == 2

    dead = dg.materialize(assets, partition_key=KEY, instance=instance, raise_on_error=False,
                          resources={"warehouse": WarehouseResource(dsn=dg.EnvVar("SEC_DEAD_DSN"))})
    assert not dead.success
    assert any("Connection refused" in m or "connection failed" in m for m in failure_messages(dead))

    captured = capfd.readouterr()
    everything = run_text(instance, fired) + run_text(instance, dead) + caplog.text + captured.out + captured.err
    assert_no_secret(everything, SECRETS["db_password"])


def test_the_webhook_url_never_reaches_errors_alert_rows_or_sensor_logs_even_when_the_receiver_echoes_it(
        secret_dsn, db, instance, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    load_cpu(secret_dsn, [97.0] * 600)
    engine.evaluate_and_record(Warehouse(secret_dsn, "metrics"), [r for r in DEFAULT_RULES if r.name == "CpuHigh"], H, H + timedelta(hours=1),
               now=H + timedelta(hours=1), source="host")
    receiver = EchoServer(status=404)  # answers "Cannot POST <path>" and the headers, as many servers do
    try:
        url = receiver.url + SECRETS["webhook_path"]
        monkeypatch.setenv(WEBHOOK_URL_ENV, url)
        context = dg.build_sensor_context(instance=instance, resources={
            "warehouse": WarehouseResource(dsn=dg.EnvVar("SEC_TEST_DSN")),
            "alert_targets": AlertTargetsResource(webhook_url=dg.EnvVar(WEBHOOK_URL_ENV)),
        })
        tick = alert_delivery(context)
        assert receiver.requests and receiver.requests[0][1] == SECRETS["webhook_path"]  # it really was called
        direct = delivery.deliver(Warehouse(secret_dsn, "metrics"), webhook_url=url)
    finally:
        receiver.stop()
    assert "2 failed" in tick.skip_message and direct.failed == 2 and "HTTP 404" in direct.errors[0]
    stored = db.execute("SELECT string_agg(coalesce(last_error, ''), ' ') FROM metrics.alerts").fetchone()[0]
    assert "HTTP 404" in stored
    # urllib3 itself prints request lines (with the path) at DEBUG; that is its output, not ours.
    logs = "\n".join(r.getMessage() for r in caplog.records
                      if not (r.name.startswith("urllib3") and r.levelno == logging.DEBUG))
    captured = capfd.readouterr()
    everything = tick.skip_message + " ".join(direct.errors) + stored + logs + captured.out + captured.err
    assert_no_secret(everything, SECRETS["webhook_path"], "SECRET")


def test_an_alert_template_cannot_read_the_environment(monkeypatch):
    """Annotation templates are configuration, but their output goes to Alertmanager, webhooks and
    the BI view `v_alerts`: attribute and index access beyond `labels[name]` would reach
    `os.environ` through any object's globals."""
    from metrics_pipeline.lib.alerts.rules import parse_config
    from metrics_pipeline.lib.yaml_config import ConfigError

    monkeypatch.setenv("SEC_WHATAP_ACCOUNT", SECRETS["whatap_account"])
    for template in (
        "{labels.__class__.__missing__.__globals__[dataclasses].sys.modules[os].environ[SEC_WHATAP_ACCOUNT]}",
        "{value.__class__}",
        "{labels[host].__class__}",
        "{value:{labels.__class__}}",
    ):
        with pytest.raises(ConfigError, match=r"rules\[0\] \(Leaky\)\.annotations\.summary") as raised:
            parse_config({"rules": [{"name": "Leaky", "metrics": ["m"], "threshold": 1, "severity": "warning",
                                     "annotations": {"summary": template}}]})
        assert_no_secret(str(raised.value), SECRETS["whatap_account"])
    ok = parse_config({"rules": [{"name": "Fine", "metrics": ["m"], "threshold": 1, "severity": "warning",
                                  "annotations": {"summary": "{labels[host]} at {value:.1f} (>{threshold}) for {for}"}}]})
    assert ok.rules[0].annotations["summary"].startswith("{labels[host]}")


def test_the_shipped_definitions_take_every_secret_field_from_an_env_var():
    """Resource config is part of the code location's snapshot (shown in the UI): a field that can
    carry a secret must be an `EnvVar`, whose snapshot holds the variable's name only."""
    import re

    from metrics_pipeline.definitions import defs

    secret_field = re.compile(r"dsn|password|token|secret|key|webhook", re.I)
    configs = {name: resource._convert_to_config_dictionary() for name, resource in defs.resources.items()
               if isinstance(resource, dg.ConfigurableResource)}
    assert "warehouse" in configs
    plain = {f"{name}.{field}": value for name, config in configs.items() for field, value in config.items()
             if secret_field.search(field) and not (isinstance(value, dict) and set(value) == {"env"})}
    assert plain == {}
    assert configs["warehouse"]["dsn"] == {"env": "METRICS_PIPELINE_DSN"}
