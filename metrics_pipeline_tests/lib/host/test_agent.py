import json
import signal
import subprocess
import sys
import time

from metrics_pipeline.lib.host.agent import CATALOGUE, Collector, CollectorConfig, Rates, host_key
from metrics_pipeline.lib.host.files import HostBatch
from metrics_pipeline.lib.landing import LocalLanding, open_landing


def read_samples(root):
    batch = HostBatch()
    for obj in LocalLanding(root).list("host/"):
        batch.read(LocalLanding(root).read(obj.key))
    return batch


def test_a_short_real_run_writes_catalogued_metrics_with_sane_values(tmp_path):
    config = CollectorConfig(
        landing=str(tmp_path), host="agent-test", cpu_interval=0.25, network_interval=0.25,
        disk_io_interval=0.5, disk_usage_interval=0.5, duration=2.2,
    )
    stats = Collector(config).run()
    assert stats.ticks >= 6 and stats.lines == stats.ticks
    batch = read_samples(tmp_path)
    assert batch.problems == {}
    metrics = set(batch.metric)
    assert metrics <= set(CATALOGUE)
    for group in ("host_cpu_percent", "host_memory_percent", "host_disk_read_bytes_per_second",
                  "host_filesystem_used_percent", "host_load1"):
        assert group in metrics, group
    for metric, unit, value in zip(batch.metric, batch.unit, batch.value):
        assert unit == CATALOGUE[metric][0]
        if unit == "percent":
            assert 0.0 <= value <= 100.0, (metric, value)
        assert value >= 0.0, (metric, value)  # no negative rates, no negative gauges
    assert batch.hosts == {"agent-test"}


def test_counter_resets_and_wraps_give_no_sample_instead_of_a_negative_rate():
    rates = Rates()
    assert rates.rate(("x",), 100.0, 0.0) is None
    assert rates.rate(("x",), 300.0, 2.0) == 100.0
    assert rates.rate(("x",), 50.0, 3.0) is None  # reset
    assert rates.rate(("x",), 80.0, 4.0) == 30.0
    assert rates.rate(("x",), 80.0, 4.0) is None  # no time elapsed


def test_minute_files_are_keyed_by_utc_hour_host_and_minute():
    ts = 1767273959.5  # 2026-01-01T13:25:59.5Z
    assert host_key("web 1/x", ts) == "host/2026-01-01/13/web_1_x/web_1_x-20260101T1325.jsonl"


def test_sigterm_flushes_and_exits_cleanly(tmp_path):
    stats_file = tmp_path / "stats.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(tmp_path / "zone"),
         "--host-name", "sig", "--cpu-interval", "0.2", "--network-interval", "0.2", "--stats-file", str(stats_file)],
        stderr=subprocess.PIPE, text=True,
    )
    time.sleep(2.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, proc.stderr.read()
    stats = json.loads(stats_file.read_text())
    batch = read_samples(tmp_path / "zone")
    assert stats["lines"] == batch.lines > 0
    assert batch.problems == {}


def test_a_crash_mid_write_leaves_at_most_a_partial_last_line(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(tmp_path),
         "--host-name", "crash", "--cpu-interval", "0.1", "--network-interval", "0.1"],
    )
    time.sleep(2.0)
    proc.kill()
    proc.wait()
    files = LocalLanding(tmp_path).list("host/")
    # Simulate the torn write a power cut could leave at the end of the file.
    path = tmp_path / files[-1].key
    with open(path, "ab") as fh:
        fh.write(b'{"ts": 17, "host": "crash", "samp')
    batch = read_samples(tmp_path)
    assert batch.lines > 5
    assert batch.problems == {"partial_lines": 1}


def test_with_an_s3_landing_zone_finished_files_are_uploaded_and_the_spool_emptied(tmp_path, s3_landing_url, moto_endpoint):
    config = CollectorConfig(
        landing=s3_landing_url, host="s3-agent", cpu_interval=0.2, network_interval=0.2,
        duration=1.5, spool_dir=str(tmp_path / "spool"), endpoint_url=moto_endpoint,
    )
    # A file left in the spool by a crashed predecessor is uploaded too.
    leftover = tmp_path / "spool" / "host/2026-01-01/13/s3-agent/s3-agent-20260101T1301.jsonl"
    leftover.parent.mkdir(parents=True)
    leftover.write_text('{"ts": 1767272460.0, "host": "s3-agent", "samples": [["host_load1", 0.5, "count", {}]]}\n')
    stats = Collector(config).run()
    zone = open_landing(s3_landing_url, endpoint_url=moto_endpoint)
    keys = [o.key for o in zone.list("host/")]
    assert "host/2026-01-01/13/s3-agent/s3-agent-20260101T1301.jsonl" in keys
    assert len(keys) >= 2 and stats.uploaded == len(keys)
    assert [p for p in (tmp_path / "spool").rglob("*.jsonl")] == []
    batch = HostBatch()
    for key in keys:
        batch.read(zone.read(key))
    assert batch.lines == stats.lines + 1


def test_the_agent_does_not_import_heavy_libraries():
    code = "import sys, metrics_pipeline.cli as c, metrics_pipeline.lib.host.agent; " \
           "print(sorted(m for m in ('pandas','psycopg','dagster','boto3','numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_catalogued_metric_is_documented_with_its_unit():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text()
    for metric, (unit, _, _) in CATALOGUE.items():
        assert f"| `{metric}` | {unit} |" in doc, metric
