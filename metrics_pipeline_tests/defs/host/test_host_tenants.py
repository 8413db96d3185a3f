"""`host_points` reads the host configuration at every run: tenants of host directories, and a broken
file failing the runs and the sensor's ticks with the file and key named (issue 17, item 5)."""

import json
from datetime import datetime, timedelta, timezone

import dagster as dg
import psycopg
import pytest

from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.host.sensors import host_points_sensor
from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.yaml_config import ConfigError
from metrics_pipeline_tests.support.runs import failure_messages

HOUR = datetime(2026, 2, 3, 10, tzinfo=timezone.utc)


def write(zone, host, tenant=None, seconds=5):
    lines = [json.dumps({"ts": HOUR.timestamp() + s, "host": host, **({"tenant": tenant} if tenant else {}),
                         "samples": [["host_cpu_percent", 10.0, "percent", {}]]}) for s in range(seconds)]
    zone.write(host_key(host, HOUR.timestamp()), ("\n".join(lines) + "\n").encode())


def resources(dsn, root):
    return {"warehouse": WarehouseResource(dsn=dsn), "landing": LandingZoneResource(url=str(root))}


@pytest.fixture
def host_yaml(tmp_path, monkeypatch):
    path = tmp_path / "host.yaml"
    monkeypatch.setenv("METRICS_PIPELINE_HOST_CONFIG", str(path))
    return path


def test_host_points_gives_agent_and_configured_tenants_and_reports_overrides(warehouse_dsn, tmp_path, host_yaml):
    host_yaml.write_text("tenants:\n  - hosts: acme-*\n    tenant: acme\n")
    zone = LocalLanding(tmp_path / "landing")
    write(zone, "acme-web-1", tenant="boreal")  # the configuration wins
    write(zone, "acme-web-2")  # an agent without --tenant: the configuration names it
    write(zone, "boreal-db-1", tenant="boreal")  # no rule: the agent's
    write(zone, "legacy-1")  # neither: no tenant, as before
    result = dg.materialize([host_points], partition_key=hour_key(HOUR), resources=resources(warehouse_dsn, zone.root))
    meta = {k: v.value for k, v in result.asset_materializations_for_node("host_points")[0].metadata.items()}
    assert (meta["hosts"], meta["tenants"], meta["tenant_overrides"], meta["points"]) == (4, 2, 5, 20)
    with psycopg.connect(warehouse_dsn) as conn:
        rows = conn.execute("SELECT resource, tenant FROM metrics.series WHERE source = 'host' ORDER BY 1").fetchall()
    assert rows == [("acme-web-1", "acme"), ("acme-web-2", "acme"), ("boreal-db-1", "boreal"), ("legacy-1", None)]


def test_a_broken_host_configuration_fails_the_run_and_the_sensor_tick_naming_file_and_key(
        warehouse_dsn, tmp_path, host_yaml):
    host_yaml.write_text("tenants:\n  - hosts: acme-*\n    tenantt: acme\n")
    zone = LocalLanding(tmp_path / "landing")
    write(zone, "acme-web-1")
    run = dg.materialize([host_points], partition_key=hour_key(HOUR), resources=resources(warehouse_dsn, zone.root),
                         raise_on_error=False)
    assert not run.success
    assert any(f"{host_yaml}: " in m and "tenants[0].tenantt: unknown key" in m for m in failure_messages(run))
    with psycopg.connect(warehouse_dsn) as conn:  # nothing was loaded under a tenant it could not know
        assert conn.execute("SELECT count(*) FROM metrics.points").fetchone()[0] == 0

    zone.write(host_key("acme-web-1", (datetime.now(timezone.utc) - timedelta(hours=2)).timestamp()),
               b'{"ts": 1, "host": "acme-web-1", "samples": []}\n')
    context = dg.build_sensor_context(cursor=None, resources={"landing": LandingZoneResource(url=str(zone.root))})
    with pytest.raises(ConfigError, match=r"tenants\[0\]\.tenantt: unknown key"):
        host_points_sensor(context)
