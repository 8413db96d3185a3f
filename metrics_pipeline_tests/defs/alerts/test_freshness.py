import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CODE = ("from metrics_pipeline.defs.alerts.freshness import freshness_checks; "
        "print(','.join(sorted(k.asset_key.to_user_string() for c in freshness_checks for k in c.check_keys)))")


def test_every_configured_source_and_the_rollups_have_a_freshness_check(tmp_path):
    configured = tmp_path / "cloudwatch.yaml"
    configured.write_text("accounts:\n  - name: prod\n    regions: [eu-west-1]\n    metrics:\n"
                          "      - namespace: AWS/EC2\n        metric_names: [CPUUtilization]\n")
    env = {"PATH": "/usr/bin:/bin", "METRICS_PIPELINE_WHATAP_CONFIG": str(tmp_path / "none.yaml")}
    run = lambda cw: subprocess.run([sys.executable, "-c", CODE], cwd=ROOT, capture_output=True, text=True, check=True,
                                    env={**env, "METRICS_PIPELINE_CLOUDWATCH_CONFIG": str(cw)}).stdout.strip()
    assert run(tmp_path / "missing.yaml") == "host_points,rollup_5m"
    assert run(configured) == "cloudwatch_points,host_points,rollup_5m"
