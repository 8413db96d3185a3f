"""config/anomalies.yaml: defaults from the benchmark, the shipped example valid, errors naming file and key."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from metrics_pipeline.lib.anomalies import config as anomaly_config
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig, ConfigError, load_config

ROOT = Path(__file__).resolve().parents[3]


def test_without_a_file_every_series_is_scored_at_the_benchmarks_standard_threshold(tmp_path):
    config = load_config(tmp_path / "absent.yaml")
    assert config == AnomaliesConfig()
    # docs/anomalies.md, "Results on NAB": | standard | <score> | <threshold> |
    documented = re.search(r"^\| standard \| [\d.]+ \| ([\d.]+) \|$", (ROOT / "docs" / "anomalies.md").read_text(), re.M)
    assert config.threshold == float(documented.group(1)) == anomaly_config.DEFAULT_THRESHOLD
    assert config.sources == ["host", "cloudwatch", "whatap", "custom"] and config.metrics == []
    assert config.selects({"source": "custom", "metric": "orders", "resource": "", "tenant": "acme"})


def test_the_example_is_valid_and_sets_every_key():
    raw_keys = {line.split(":")[0] for line in (ROOT / "config" / "anomalies.example.yaml").read_text().splitlines()
                if re.match(r"^[a-z_]+:", line)}
    assert raw_keys == set(AnomaliesConfig.model_fields)
    config = load_config(ROOT / "config" / "anomalies.example.yaml")
    assert config.mutes[1].until == datetime(2026, 12, 31, tzinfo=timezone.utc)
    assert not config.selects({"source": "host", "metric": "host_net_bytes_recv", "resource": "web-1"})


@pytest.mark.parametrize("text, error", [
    ("threshold: 1.5", "threshold: Input should be less than or equal to 1"),
    ("sources: [host, prometheus]", "sources: unknown source(s) ['prometheus']"),
    ("metrics: ['(']", "metrics: metrics: '(' is not a regular expression"),
    ("warm_up: a day", "warm_up: 'a day' is not a duration like 30s, 5m, 1h or 7d"),
    ("min_duration: 5", "min_duration: 5 needs a unit, like 30s, 5m, 1h or 7d"),
    ("critical_score: 0.3", "critical_score (0.3) must be at least threshold (0.5613)"),
    ("exclude: [{}]", "exclude: exclude[0] is empty: it would exclude every series"),
    ("mutes: [{reason: x}]", "mutes[0].match: Field required"),
    ("mutes: [{match: {}}]", "mutes[0].match: a mute needs at least one label matcher"),
    ("treshold: 0.6", "treshold: unknown key"),
    ("- a list", "the top level must be a mapping, got list"),
])
def test_a_broken_file_names_the_file_and_the_key(tmp_path, text, error):
    path = tmp_path / "anomalies.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert str(raised.value).startswith(f"{path}: ") and error in str(raised.value)


def test_the_file_comes_from_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "elsewhere.yaml"
    path.write_text("threshold: 0.7\nmin_duration: 15m\n")
    monkeypatch.setenv(anomaly_config.CONFIG_ENV, str(path))
    config = load_config()
    assert config.threshold == 0.7 and config.min_duration == timedelta(minutes=15)


def test_mutes_match_labels_and_expire():
    config = AnomaliesConfig(mutes=[{"match": {"host": "db-.*"}, "until": "2026-12-01T00:00:00"}])
    fields = {"source": "host", "metric": "host_cpu_percent", "resource": "db-1", "host": "db-1"}
    assert config.muted(fields, datetime(2026, 11, 30, tzinfo=timezone.utc)) is not None
    assert config.muted(fields, datetime(2026, 12, 1, tzinfo=timezone.utc)) is None  # a bare time is UTC
    assert config.muted({**fields, "host": "web-1"}, datetime(2026, 11, 30, tzinfo=timezone.utc)) is None
