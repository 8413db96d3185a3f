"""Host and WhaTap series carry their tenant into the BI views: a login restricted to a tenant sees that
tenant's hosts and WhaTap projects through `v_series` and `v_points`, and nothing of another tenant's
or of series without a tenant (issue 17, item 5). Loaded through the assets, as production loads them."""

import json
from datetime import datetime, timezone

import dagster as dg
import pytest

from metrics_pipeline.defs.host.assets import host_points
from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import LandingZoneResource, WarehouseResource
from metrics_pipeline.defs.whatap.assets import WhatapResource, whatap_points
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline_tests.support.whatap import running_double, write_config

HOUR = datetime(2026, 1, 5, 10, tzinfo=timezone.utc)
ACME, BOREAL = "acme", "boreal-logistique"
#: host -> the tenant its agent writes (None: an agent without --tenant, or a file from before tenants)
AGENTS = {"acme-web-1": None, "web-2": ACME, "boreal-db-1": BOREAL, "legacy-1": None}
#: what each host's series end up with: acme-web-1 by the host configuration's rule, the others by their agent
HOST_TENANTS = {"acme-web-1": ACME, "web-2": ACME, "boreal-db-1": BOREAL, "legacy-1": None}
WHATAP_TENANTS = {"1201": ACME, "1202": None, "1203": BOREAL}


@pytest.fixture
def loaded(warehouse_dsn, tmp_path, monkeypatch):
    """One hour of four hosts and the WhaTap double's three projects, loaded by `host_points` and
    `whatap_points`."""
    host_yaml = tmp_path / "host.yaml"
    host_yaml.write_text(f"tenants:\n  - hosts: acme-*\n    tenant: {ACME}\n")
    monkeypatch.setenv("METRICS_PIPELINE_HOST_CONFIG", str(host_yaml))
    zone = LocalLanding(tmp_path / "landing")
    for host, tenant in AGENTS.items():
        lines = [json.dumps({"ts": HOUR.timestamp() + s, "host": host, **({"tenant": tenant} if tenant else {}),
                             "samples": [["host_cpu_percent", 20.0 + s, "percent", {}]]}) for s in range(60)]
        zone.write(host_key(host, HOUR.timestamp()), ("\n".join(lines) + "\n").encode())
    warehouse = WarehouseResource(dsn=warehouse_dsn)
    assert dg.materialize([host_points], partition_key=hour_key(HOUR), resources={
        "warehouse": warehouse, "landing": LandingZoneResource(url=str(zone.root))}).success
    with running_double() as double:
        config = write_config(tmp_path / "whatap.yaml", double, monkeypatch, collect=["sm_stat", "apm"],
                              apm_metrics=["thread_count"],
                              projects=[{"code": 1201, "tenant": ACME}, {"code": 1203, "tenant": BOREAL}])
        assert dg.materialize([whatap_points], partition_key=hour_key(HOUR), resources={
            "warehouse": warehouse, "whatap": WhatapResource(config_path=str(config))}).success
    return warehouse_dsn


def expected(tenants: set | None) -> set[tuple]:
    """(source, owner, tenant) a login restricted to `tenants` sees (None: not restricted)."""
    rows = {("host", host, t) for host, t in HOST_TENANTS.items()}
    rows |= {("whatap", code, t) for code, t in WHATAP_TENANTS.items()}
    return {r for r in rows if tenants is None or r[2] in tenants}


def seen(conn, view: str) -> set[tuple]:
    """(source, owner, tenant) of the rows of `view`: the host, or the WhaTap project code."""
    owner = "CASE WHEN source = 'host' THEN resource ELSE labels ->> 'project_code' END"
    return set(conn.execute(f"SELECT DISTINCT source, {owner}, tenant FROM {view}").fetchall())


@pytest.mark.parametrize("tenants", [[ACME], [BOREAL], [ACME, BOREAL], None], ids=["acme", "boreal", "both", "all"])
def test_a_tenant_login_sees_its_hosts_and_whatap_projects_and_nothing_else(loaded, bi_login, tenants):
    want = expected(set(tenants) if tenants is not None else None)
    with bi_login(tenants=tenants) as conn:
        assert seen(conn, "v_series") == want
        assert seen(conn, "v_points") == want
        counts = dict(conn.execute("SELECT tenant, count(*) FROM v_points WHERE source = 'host' GROUP BY 1").fetchall())
    host_tenants = [t for t in HOST_TENANTS.values() if tenants is None or t in tenants]
    assert counts == {t: 60 * host_tenants.count(t) for t in set(host_tenants)}


def test_another_tenants_login_sees_none_of_acmes_series(loaded, bi_login):
    with bi_login(tenants=[ACME]) as acme, bi_login(tenants=[BOREAL]) as boreal:
        acme_ids = {r[0] for r in acme.execute("SELECT series_id FROM v_series").fetchall()}
        boreal_ids = {r[0] for r in boreal.execute("SELECT series_id FROM v_series").fetchall()}
        probe = boreal.execute("SELECT count(*) FROM v_points WHERE series_id = ANY(%s)", (sorted(acme_ids),)).fetchone()[0]
    assert acme_ids and boreal_ids and not acme_ids & boreal_ids
    assert probe == 0
