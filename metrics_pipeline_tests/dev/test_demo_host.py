"""The demo's busy host produces the SPEC §6 scenario: a warning, then a critical, both resolved."""

from datetime import datetime, timedelta, timezone

from metrics_pipeline.dev.demo_host import BUSY_HOST, DEMO_TENANT, busy_minute_lines
from metrics_pipeline.lib.alerts import engine
from metrics_pipeline.lib.alerts.rules import DEFAULT_RULES
from metrics_pipeline.lib.host import files as host_files
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import open_landing
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

H = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)


def test_an_hour_of_the_busy_host_fires_and_resolves_cpu_warning_and_critical(tmp_path, warehouse_dsn, db):
    zone = open_landing(str(tmp_path / "landing"))
    for minute in range(60):
        ts = int(H.timestamp()) + 60 * minute
        zone.write(host_key(BUSY_HOST, ts), busy_minute_lines(ts).encode())
    batch, _ = host_files.read_window(zone, H, H + timedelta(hours=1))
    loader.load_points(Warehouse(warehouse_dsn), batch.frame(), source="host", start=H, end=H + timedelta(hours=1))
    rules = [r for r in DEFAULT_RULES if r.kind == "metric"]
    engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), rules, H, H + timedelta(hours=1), now=H + timedelta(hours=2), source="host")
    rows = db.execute("SELECT alertname, severity, state, starts_at, ends_at FROM metrics.alerts ORDER BY starts_at").fetchall()
    assert rows == [
        ("CpuHigh", "warning", "resolved", H + timedelta(minutes=15), H + timedelta(minutes=23)),
        ("CpuHigh", "critical", "resolved", H + timedelta(minutes=17), H + timedelta(minutes=18)),
    ]


def test_the_demo_hosts_and_the_demo_cloudwatch_account_belong_to_the_demo_tenant(tmp_path):
    """SPEC §12: the `make dev` demo tenant owns the demo hosts and the local CloudWatch account."""
    from metrics_pipeline.dev.demo_cloudwatch import demo_config
    from metrics_pipeline.dev.demo_sources import write_host_samples
    from metrics_pipeline.dev.devserver import collector_command
    from metrics_pipeline.lib.cloudwatch.config import parse_config
    from metrics_pipeline.lib.host.config import HostConfig

    write_host_samples(str(tmp_path), (BUSY_HOST, "web-1"), H, H + timedelta(minutes=2))
    batch, _ = host_files.read_window(open_landing(str(tmp_path)), H, H + timedelta(hours=1), HostConfig())
    assert batch.hosts == {BUSY_HOST, "web-1"} and batch.tenants == {DEMO_TENANT} and batch.problems == {}
    assert [a.tenant for a in parse_config(demo_config("http://127.0.0.1:1")).accounts] == [DEMO_TENANT]
    command = collector_command(str(tmp_path))  # the agent `make dev` runs on this machine
    assert command[command.index("--tenant") + 1] == DEMO_TENANT
