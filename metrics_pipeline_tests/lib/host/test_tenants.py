"""Host series get a tenant from their agent (`collect --tenant`) or from the host configuration, which
wins; files written before agents knew tenants load as they did (issue 17, item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline.lib import points, tenants
from metrics_pipeline.lib.host import files, live
from metrics_pipeline.lib.host.agent import Collector, CollectorConfig, host_key
from metrics_pipeline.lib.host.config import HostConfig, TenantRule, load_config
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.yaml_config import ConfigError

H = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)
RULES = HostConfig(tenants=[TenantRule(hosts=["acme-*"], tenant="acme"),
                            TenantRule(hosts=["acme-db-?", "shared-*"], tenant="never-reached-for-acme")])


def line(host: str, ts: float, tenant: str | None = None, labels: dict | None = None) -> bytes:
    tick = {"ts": ts, "host": host, **({"tenant": tenant} if tenant is not None else {}),
            "samples": [["host_cpu_percent", 12.5, "percent", labels or {}]]}
    return (json.dumps(tick) + "\n").encode()


def labels_read(data: bytes, key: str | None = None, config: HostConfig | None = None) -> list[dict]:
    batch = files.HostBatch(config)
    batch.read(data, key)
    return [json.loads(text) for text in batch.frame()["labels"]]


def test_an_agents_tenant_labels_every_sample_of_its_lines():
    assert labels_read(line("web-1", H.timestamp(), "acme", {"nic": "eth0"})) == [
        {"host": "web-1", "nic": "eth0", "tenant": "acme"}]


def test_old_files_without_a_tenant_load_as_before():
    assert labels_read(line("web-1", H.timestamp())) == [{"host": "web-1"}]
    assert labels_read(line("web-1", H.timestamp()), host_key("web-1", H.timestamp()), RULES) == [{"host": "web-1"}]


def test_the_configuration_names_the_tenant_of_a_host_directory_and_wins_over_the_agent():
    key = host_key("acme-web-1", H.timestamp())
    data = line("acme-web-1", H.timestamp()) + line("acme-web-1", H.timestamp() + 1, "boreal")
    batch = files.HostBatch(RULES)
    batch.read(data, key)
    assert [json.loads(t)["tenant"] for t in batch.frame()["labels"]] == ["acme", "acme"]  # the first matching rule
    assert batch.tenant_overrides == 1 and batch.tenants == {"acme"}
    # A host no rule matches keeps its agent's tenant.
    assert labels_read(line("web-2", H.timestamp(), "boreal"), host_key("web-2", H.timestamp()), RULES)[0]["tenant"] == "boreal"


def test_the_directory_decides_not_the_host_name_a_line_claims():
    """A file under `acme-*` is acme's whatever host its lines name: the directory is what an operator
    can restrict an agent to writing (an S3 policy on the key), the content is not."""
    key = host_key("acme-web-1", H.timestamp())
    assert labels_read(line("boreal-db-1", H.timestamp(), "boreal"), key, RULES) == [
        {"host": "boreal-db-1", "tenant": "acme"}]


def test_a_samples_own_tenant_label_loads_as_before_unless_the_line_or_the_configuration_names_one():
    legacy = line("acme-web-1", H.timestamp(), None, {"tenant": "boreal"})  # a writer of our format, before --tenant
    assert labels_read(legacy) == [{"host": "acme-web-1", "tenant": "boreal"}]
    assert labels_read(line("web-1", H.timestamp(), "acme", {"tenant": "boreal"})) == [{"host": "web-1", "tenant": "acme"}]
    assert labels_read(legacy, host_key("acme-web-1", H.timestamp()), RULES) == [{"host": "acme-web-1", "tenant": "acme"}]


@pytest.mark.parametrize("tenant", ["", 7, ["acme"], "a\x00b", "x" * (points.MAX_NAME_BYTES + 1)],
                         ids=["empty", "number", "list", "nul", "too-long"])
def test_a_line_naming_a_tenant_the_warehouse_cannot_store_is_corrupt_and_the_others_load(tenant):
    bad = (json.dumps({"ts": H.timestamp(), "host": "web-1", "tenant": tenant,
                       "samples": [["host_cpu_percent", 1.0, "percent", {}]]}) + "\n").encode()
    batch = files.HostBatch()
    batch.read(bad + line("web-1", H.timestamp() + 1, "acme"))
    assert batch.problems == {"corrupt_lines": 1} and batch.lines == 1
    assert len(batch.frame()) == 1


def test_the_tenant_limit_is_the_warehouses():
    assert tenants.MAX_TENANT_BYTES == points.MAX_NAME_BYTES


@pytest.mark.parametrize("tenant, message", [("", "tenant must be a non-empty string"),
                                             ("t" * 201, "tenant must be at most 200 characters"),
                                             ("a\x00b", "tenant must not contain NUL characters")])
def test_the_agent_refuses_a_tenant_it_could_not_store(tenant, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        CollectorConfig(landing=str(tmp_path), tenant=tenant)


def test_an_agent_with_a_tenant_writes_it_in_every_line(tmp_path):
    config = CollectorConfig(landing=str(tmp_path), host="acme-agent", tenant="acme", cpu_interval=0.2,
                             network_interval=0.2, disk_io_interval=0.4, disk_usage_interval=0.4, duration=1.0)
    stats = Collector(config).run()
    zone = LocalLanding(tmp_path)
    batch = files.HostBatch()
    for obj in zone.list("host/"):
        batch.read(zone.read(obj.key), obj.key)
    assert stats.lines == batch.lines > 0 and batch.problems == {}
    assert {json.loads(text)["tenant"] for text in batch.labels} == {"acme"}


def test_collect_tenant_on_the_command_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(tmp_path), "--host-name", "cli-host",
         "--tenant", "acme", "--cpu-interval", "0.2", "--network-interval", "0.2", "--duration", "1"],
        capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    zone = LocalLanding(tmp_path)
    # Every file names its host and tenant once, in its header (format 2); every sample loads with them.
    headers = [json.loads(zone.read(obj.key).splitlines()[0]) for obj in zone.list("host/")]
    assert headers and {(h["host"], h["tenant"]) for h in headers} == {("cli-host", "acme")}
    batch = files.HostBatch()
    for obj in zone.list("host/"):
        batch.read(zone.read(obj.key), obj.key)
    assert batch.lines > 0 and {json.loads(text)["tenant"] for text in batch.labels} == {"acme"}
    refused = subprocess.run([sys.executable, "-m", "metrics_pipeline.cli", "collect", "--landing", str(tmp_path),
                              "--tenant", "", "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "tenant must be a non-empty string" in refused.stderr


# -- the configuration ----------------------------------------------------------------------------

def test_the_example_configuration_is_valid_and_the_first_matching_rule_wins(tmp_path):
    from pathlib import Path

    example = load_config(Path(__file__).resolve().parents[3] / "config" / "host.example.yaml")
    assert example.tenant_of("acme-web-1") == "acme" and example.tenant_of("web-07.acme.example") == "acme"
    assert example.tenant_of("boreal-db-1") == "boreal-logistique" and example.tenant_of("web-1") is None
    assert RULES.tenant_of("acme-db-1") == "acme"
    assert RULES.tenant_of("ACME-web-1") is None  # case-sensitive, like the directory names
    assert load_config(tmp_path / "missing.yaml") == HostConfig()


def test_the_configuration_file_is_found_through_its_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "hosts.yaml"
    path.write_text("tenants:\n  - hosts: web-*\n    tenant: acme\n")
    monkeypatch.setenv("METRICS_PIPELINE_HOST_CONFIG", str(path))
    assert load_config().tenant_of("web-1") == "acme"


@pytest.mark.parametrize("text, messages", [
    ("tenants:\n  - hosts: [web 1]\n    tenant: acme\n",
     ["tenants[0].hosts[0]: 'web 1' can never match a host directory"]),
    ("tenants:\n  - hosts: []\n    tenant: acme\n", ["tenants[0].hosts: List should have at least 1 item"]),
    ("tenants:\n  - hosts: web-*\n", ["tenants[0].tenant: Field required"]),
    ("tenants:\n  - hosts: web-*\n    tenant: ''\n", ["tenants[0].tenant: must be a non-empty string"]),
    (f"tenants:\n  - hosts: web-*\n    tenant: {'t' * 201}\n", ["tenants[0].tenant: must be at most 200 characters"]),
    ("tenants:\n  - hosts: web-*\n    tenant: 42\n", ["tenants[0].tenant: Input should be a valid string"]),
    ("tenants:\n  - host: web-*\n    tenant: acme\n", ["tenants[0].host: unknown key", "tenants[0].hosts: Field required"]),
    ("tenant: acme\n", ["tenant: unknown key"]),
    ("- hosts: web-*\n", ["the top level must be a mapping"]),
], ids=["space", "no-pattern", "no-tenant", "empty-tenant", "long-tenant", "number", "typo", "top-level-typo", "list"])
def test_a_broken_configuration_names_the_file_and_every_bad_key(tmp_path, text, messages):
    path = tmp_path / "host.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ")
    for message in messages:
        assert message in str(exc.value)


# -- loading: the closed hour and the hour in progress give the same tenants ----------------------

def _series(dsn) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT s.resource, s.tenant, count(*) FROM metrics.points p JOIN metrics.series s "
                            "USING (series_id) GROUP BY 1, 2 ORDER BY 1, 2 NULLS FIRST").fetchall()


def test_live_loads_and_the_closed_hour_run_give_the_same_tenants(warehouse_dsn, tmp_path):
    zone, wh = LocalLanding(tmp_path), Warehouse(warehouse_dsn)
    for host, tenant in (("acme-web-1", "boreal"), ("web-2", "boreal"), ("old-3", None)):
        zone.write(host_key(host, H.timestamp()), b"".join(line(host, H.timestamp() + s, tenant) for s in range(10)))
    expected = [("acme-web-1", "acme", 10), ("old-3", None, 10), ("web-2", "boreal", 10)]
    loaded = live.load_new(wh, zone, H + timedelta(seconds=30), RULES)
    assert _series(warehouse_dsn) == expected and loaded.batch.tenant_overrides == 10
    result = files.load_window(wh, zone, H, H + timedelta(hours=1), RULES)
    assert _series(warehouse_dsn) == expected
    assert result.as_metadata()["tenants"] == 2 and result.as_metadata()["tenant_overrides"] == 10
    with psycopg.connect(warehouse_dsn) as conn:  # the live path made no series the closed hour did not
        assert conn.execute("SELECT count(*) FROM metrics.series WHERE source = 'host'").fetchone()[0] == 3


def test_adding_a_tenant_to_a_host_makes_new_series(warehouse_dsn, tmp_path):
    """Series identity includes the tenant (SPEC §12): the same host with and without one is two series."""
    zone, wh = LocalLanding(tmp_path), Warehouse(warehouse_dsn)
    zone.write(host_key("web-1", H.timestamp()), line("web-1", H.timestamp()))
    zone.write(host_key("web-1", H.timestamp() + 3600), line("web-1", H.timestamp() + 3600, "acme"))
    files.load_window(wh, zone, H, H + timedelta(hours=2), HostConfig())
    assert _series(warehouse_dsn) == [("web-1", None, 1), ("web-1", "acme", 1)]
