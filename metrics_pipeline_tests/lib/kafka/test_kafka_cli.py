"""The commands: `simulate-logs --to kafka` publishes the three services' job records, `kafka consume`
lands them, and SIGTERM finishes the file, commits, leaves the group and exits 0."""

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline import cli
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.kafka.config import ConfigError, load_config, resolve_bootstrap
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse


def run(*args, env, timeout=120):
    return subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_published_job_records_are_consumed_and_sigterm_commits_leaves_and_exits_0(tansu, tmp_path, warehouse_dsn):
    landing = tmp_path / "landing"
    config = tmp_path / "kafka.yaml"
    config.write_text(json.dumps({"group_id": "cli", "landing": str(landing), "flush_interval": "0.5s",
                                  "session_timeout": "2s", "max_poll_interval": "3s",
                                  "topics": [{"name": "job-logs", "format": "job_logs"}]}))
    env = {**os.environ, "METRICS_PIPELINE_DSN": warehouse_dsn, "METRICS_PIPELINE_KAFKA_CONFIG": str(config),
           "METRICS_PIPELINE_KAFKA_BOOTSTRAP": tansu.bootstrap, "METRICS_PIPELINE_HOME": str(tmp_path / "home")}
    end = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    published = run("simulate-logs", "--to", "kafka", "--end", end.isoformat(), "--hours", "2",
                    "--jobs-per-hour", "40", "--bad-rate", "0.05", env=env)
    assert published.returncode == 0, published.stderr
    records = int(published.stdout.split("published ")[1].split()[0])
    assert records > 40 and "to topic job-logs" in published.stdout

    consumer = subprocess.Popen([sys.executable, "-m", "metrics_pipeline.cli", "kafka", "consume"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        committed = 0
        while committed < records and time.monotonic() < deadline:
            time.sleep(0.5)
            with psycopg.connect(warehouse_dsn) as conn:
                committed = conn.execute("SELECT coalesce(sum(committed_offset), 0) FROM metrics.kafka_partitions").fetchone()[0]
        assert committed == records
        consumer.send_signal(signal.SIGTERM)
        _, err = consumer.communicate(timeout=30)
    finally:
        if consumer.poll() is None:
            consumer.kill()
    assert consumer.returncode == 0, err[-3000:]
    assert f"consumed {records} message(s)" in err
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT state FROM metrics.kafka_consumers").fetchall() == [("stopped",)]
    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), LocalLanding(landing),
                                        end - timedelta(hours=3), end + timedelta(hours=2), ParseOptions())
    assert result.read == records and result.quarantined > 0 and result.redelivered == 0


def test_bootstrap_comes_from_the_flag_then_the_environment_then_the_file(tmp_path, monkeypatch):
    path = tmp_path / "kafka.yaml"
    path.write_text("bootstrap_servers: file:9092\n")
    config = load_config(path)
    monkeypatch.delenv("METRICS_PIPELINE_KAFKA_BOOTSTRAP", raising=False)
    assert resolve_bootstrap(None, config) == "file:9092"
    monkeypatch.setenv("METRICS_PIPELINE_KAFKA_BOOTSTRAP", "env:9092")
    assert resolve_bootstrap(None, config) == "env:9092"
    assert resolve_bootstrap("flag:9092", config) == "flag:9092"


@pytest.mark.parametrize("text, message", [
    ("client:\n  sasl.password: hunter2\n", "client: 'sasl.password' is a secret"),
    ("topics:\n  - {name: 'bad topic', format: job_logs}\n", "is not a Kafka topic name"),
    ("topics:\n  - {name: jobs, format: job_logs, tenant: acme}\n", "takes no tenant"),
    ("flush_interval: 5m\n", "flush_interval: flush_interval must be between"),
    ("client:\n  group.id: other\n", "is set by the consumer itself"),
    ("secrets_from_env:\n  sasl.password: MP_TEST_UNSET_KAFKA_SECRET\n", None),
])
def test_a_bad_configuration_names_the_file_and_key_and_secrets_come_from_the_environment(tmp_path, text, message):
    path = tmp_path / "kafka.yaml"
    path.write_text(text)
    if message is None:  # valid, but the variable it names is unset when the consumer starts
        with pytest.raises(ConfigError, match="MP_TEST_UNSET_KAFKA_SECRET is not set"):
            load_config(path).consumer_settings()
        return
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(path) in str(raised.value) and message in str(raised.value) and "hunter2" not in str(raised.value)


def test_the_consume_command_is_listed_in_the_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["kafka", "consume", "--help"])
    out = capsys.readouterr().out
    assert "--until-idle" in out and "--bootstrap" in out
