"""prometheus/: the example alerting rules for the pipeline itself and the docker-compose Prometheus
configuration are valid for Prometheus's own checker, the rules behave as their unit tests say, and
every series a rule names is one `/metrics` exposes (a renamed metric must not leave a silent rule)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from metrics_pipeline_tests.support.system_packages import require_system_package

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS = ROOT / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    return require_system_package(shutil.which("promtool"), "prometheus")


@pytest.mark.parametrize("args", [["check", "rules", "rules.yml"], ["check", "config", "prometheus.yml"],
                                  ["test", "rules", "rules.test.yml"]], ids=" ".join)
def test_promtool_accepts_the_shipped_files(promtool, args):
    result = subprocess.run([promtool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_series_a_rule_reads_is_exposed_and_documented():
    rules = [r for g in yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"] for r in g["rules"]]
    named = {name for r in rules for name in re.findall(r"\bmetrics_pipeline_[a-z_]+", r["expr"])}
    declared = set(re.findall(r'"(metrics_pipeline_[a-z_]+)"', (ROOT / "metrics_pipeline/api/metrics.py").read_text()))
    exposed = declared | {f"{name}_total" for name in declared}  # prometheus_client adds _total to counters
    assert named and named <= exposed, sorted(named - exposed)
    documented = (ROOT / "docs/operations.md").read_text()
    missing = [n for n in declared if f"`{n}`" not in documented and f"`{n}_total`" not in documented]
    assert not missing, f"not in docs/operations.md: {missing}"
    assert {r["labels"]["severity"] for r in rules} <= {"warning", "critical"}
