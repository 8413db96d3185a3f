from datetime import timedelta
from pathlib import Path

import pytest

from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES, AlertsConfig, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[3]


def test_without_a_file_the_spec_defaults_apply(tmp_path):
    config = load_config(tmp_path / "missing.yaml")
    cpu = {(r.threshold, r.hold, r.severity) for r in config.effective_rules if r.name == "CpuHigh"}
    assert cpu == {(80, timedelta(minutes=5), "warning"), (95, timedelta(minutes=1), "critical")}
    assert {r.name for r in config.effective_rules} >= {"MemoryHigh", "DiskUsageHigh", "IngestionFailureRateHigh",
                                                       "IngestionDurationSlaBreached"}


def test_the_shipped_example_is_valid():
    config = load_config(ROOT / "config" / "alerts.example.yaml")
    assert config.effective_rules


def test_a_file_replaces_the_defaults_unless_it_includes_them():
    rule = {"name": "QueueDeep", "metrics": ["aws_sqs_approximatenumberofmessagesvisible"], "op": ">=",
            "threshold": 1000, "for": "10m", "severity": "critical", "match": {"QueueName": "orders-.*"}}
    alone = parse_config({"rules": [rule]})
    assert [r.name for r in alone.effective_rules] == ["QueueDeep"]
    both = parse_config({"include_defaults": True, "rules": [rule]})
    assert len(both.effective_rules) == len(DEFAULT_RULES) + 1
    assert both.rules[0].matches({"QueueName": "orders-eu"}) and not both.rules[0].matches({"QueueName": "x-orders"})


@pytest.mark.parametrize("rule, message", [
    ({"threshold": "high"}, "rules[0] (Bad).threshold"),
    ({"for": "five minutes"}, "rules[0] (Bad).for: 'five minutes' is not a duration"),
    ({"op": "=>"}, "rules[0] (Bad).op"),
    ({"severity": "page"}, "rules[0] (Bad).severity"),
    ({"match": {"host": "web-("}}, "is not a regular expression"),
    ({"labels": {"severity": "x"}}, "set by the pipeline"),
    ({"annotations": {"summary": "{hostname} is hot"}}, "unknown template field {hostname}"),
    ({"metrics": []}, "needs `metrics`"),
    ({"surprise": 1}, "rules[0] (Bad).surprise: unknown key"),
    ({"kind": "sla", "metrics": [], "column": "nope"}, "rules[0] (Bad).column"),
])
def test_errors_name_the_rule_and_the_key(rule, message):
    base = {"name": "Bad", "metrics": ["host_cpu_percent"], "threshold": 80, "severity": "warning"}
    with pytest.raises(ConfigError) as exc:
        parse_config({"rules": [{**base, **rule}]})
    assert message in str(exc.value)


def test_the_same_rule_twice_is_refused():
    rule = {"name": "CpuHigh", "metrics": ["host_cpu_percent"], "threshold": 80, "severity": "warning"}
    with pytest.raises(ConfigError, match="defined twice"):
        parse_config({"rules": [rule, rule]})


def test_broken_yaml_names_the_file(tmp_path):
    path = tmp_path / "alerts.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(ConfigError, match="alerts.yaml: not valid YAML"):
        load_config(path)


def test_defaults_model_is_frozen_and_reusable():
    assert AlertsConfig().effective_rules == AlertsConfig().effective_rules
