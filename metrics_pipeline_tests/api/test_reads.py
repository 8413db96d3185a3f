"""GET /api/v1/measure reads the key's tenant's pushed measures through the BI views (migration 0016):
the tenant comes from the key, no query carries a tenant condition, and no BI login can borrow it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
import requests
from psycopg import errors, sql

from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import bi
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.api.test_push import _api
from metrics_pipeline_tests.support.security import connect_as

HOUR = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)


def _load(dsn: str) -> None:
    ts = pd.date_range(HOUR, HOUR + timedelta(hours=1), freq="60s", inclusive="left")
    frame = points_frame([
        {"metric": metric, "resource": "", "labels": {"tenant": tenant, "shop": shop}, "unit": "count",
         "ts": ts, "value": np.arange(len(ts), dtype=float)}
        for tenant in ("acme", "globex") for metric in ("orders", "refunds") for shop in ("eu", "us")
    ])
    loader.load_points(Warehouse(dsn), frame, source="custom", start=HOUR, end=HOUR + timedelta(hours=1))


@pytest.fixture
def api(warehouse_dsn, tmp_path):
    _load(warehouse_dsn)
    yield from _api(warehouse_dsn, tmp_path / "landing")


def get(api, key: str, **params) -> requests.Response:
    return requests.get(f"{api.url}/api/v1/measure", params=params, headers={"X-PMETRICS-API-KEY": api.keys[key]},
                        timeout=10)


def test_a_read_key_gets_its_tenants_measures_only_filtered_and_paged(api):
    window = {"from": HOUR.isoformat(), "to": str(int((HOUR + timedelta(hours=1)).timestamp() * 1000))}  # epoch ms
    everything = get(api, "acme_read", limit=10_000, **window).json()
    assert len(everything["items"]) == 2 * 2 * 60 and everything["next_cursor"] is None
    assert {item["metadata"]["shop"] for item in everything["items"]} == {"eu", "us"}
    assert all("tenant" not in item["metadata"] for item in everything["items"])
    orders_eu = get(api, "acme_read", name="orders", **{"label.shop": "eu"}, **window).json()["items"]
    assert len(orders_eu) == 60 and {(i["name"], i["metadata"]["shop"]) for i in orders_eu} == {("orders", "eu")}
    pages, cursor = [], None
    while True:
        page = get(api, "acme_read", limit=70, **window, **({"cursor": cursor} if cursor else {})).json()
        pages.append(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [len(p) for p in pages] == [70, 70, 70, 30] and sum(pages, []) == everything["items"]
    other = get(api, "globex_write", limit=10_000, **window).json()["items"]  # globex's key reads globex only
    assert len(other) == 240 and all(i["value"] >= 0 for i in other)


def test_reads_need_the_read_scope_and_bad_parameters_are_400(api):
    assert get(api, "acme_write").status_code == 403
    assert get(api, "acme_read", cursor="nonsense!").status_code == 400
    assert get(api, "acme_read", limit=0).status_code == 400
    assert get(api, "acme_read", **{"from": "yesterday"}).status_code == 400
    assert requests.get(f"{api.url}/api/v1/measure", timeout=10).status_code == 401


def test_no_bi_login_can_borrow_the_apis_tenant_setting_or_role(api):
    warehouse = api.warehouse
    role, password = "bi_borrower", "pw-borrower"
    bi.ensure_role(warehouse, role, password=password, tenants=["globex"])
    try:
        with connect_as(warehouse.dsn, role, password) as conn:
            conn.execute("SELECT set_config('metrics_pipeline.tenant', 'acme', false)")
            tenants = {t for (t,) in conn.execute("SELECT DISTINCT tenant FROM metrics.v_points")}
            assert tenants == {"globex"}
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(bi.api_reader("metrics"))))
        with psycopg.connect(warehouse.dsn, autocommit=True) as admin:  # the owner, switching as the API does
            with admin.transaction():
                admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(bi.api_reader("metrics"))))
                assert admin.execute("SELECT count(*) FROM metrics.v_points").fetchone()[0] == 0  # no tenant: nothing
                for view in bi.API_VIEWS:  # the views the API reads instead of v_*: none reads a row without a tenant
                    assert admin.execute(f"SELECT count(*) FROM metrics.{view}").fetchone()[0] == 0, view
                admin.execute("SELECT set_config('metrics_pipeline.tenant', 'acme', true)")
                assert {t for (t,) in admin.execute("SELECT DISTINCT tenant FROM metrics.v_points")} == {"acme"}
                read = {view: [r[0] for r in admin.execute(  # and with one, that tenant's rows only (below)
                    f"SELECT DISTINCT {'tenant' if view == 'bi_tenant_alerts' else 'series_id'} FROM metrics.{view}")]
                        for view in bi.API_VIEWS}
                assert read["bi_tenant_series"] and read["bi_tenant_points"]
            for view, found in read.items():
                tenants = set(found) if view == "bi_tenant_alerts" else {t for (t,) in admin.execute(
                    "SELECT DISTINCT tenant FROM metrics.series WHERE series_id = ANY(%s)", (found,))}
                assert tenants <= {"acme"}, view
            with admin.transaction():
                admin.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(bi.api_reader("metrics"))))
                with pytest.raises(errors.InsufficientPrivilege):
                    admin.execute("SELECT count(*) FROM metrics.points")
    finally:
        with psycopg.connect(warehouse.dsn, autocommit=True) as admin:
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")


def test_push_load_read_round_trip_for_events_and_measures(warehouse_dsn, tmp_path):
    """What a client pushes is what it reads back once the hour is loaded, under its own tenant only,
    retries included once (same identity, last write wins), paged by the cursor."""
    from metrics_pipeline.lib.custom import load as custom_load
    from metrics_pipeline.lib.landing import open_landing

    for api in _api(warehouse_dsn, tmp_path / "landing"):
        now = datetime.now(timezone.utc)
        ts = [(now - timedelta(minutes=10 - i)).isoformat() for i in range(5)]
        deploys = [{"name": "deploy", "ts": t, "text": f"v{i}", "metadata": {"app": "shop"}} for i, t in enumerate(ts)]
        assert api.post("/api/v1/event", deploys).status_code == 202
        assert api.post("/api/v1/event", deploys[:2]).status_code == 202  # a client's retry
        assert api.post("/api/v1/event", [{"name": "deploy", "ts": ts[0], "text": "other"}], key="globex_write").status_code == 202
        assert api.post("/api/v1/measure", [{"name": "orders", "value": i, "ts": t} for i, t in enumerate(ts)]).status_code == 202
        hour = now.replace(minute=0, second=0, microsecond=0)
        zone = open_landing(str(api.landing))
        for start in {datetime.fromisoformat(t).replace(minute=0, second=0, microsecond=0) for t in ts} | {hour}:
            custom_load.load_events(api.warehouse, zone, start, start + timedelta(hours=1))
            custom_load.load_measures(api.warehouse, zone, start, start + timedelta(hours=1))
        window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=1)).isoformat()}
        first = get_path(api, "/api/v1/event", "acme_read", limit=3, **window).json()
        second = get_path(api, "/api/v1/event", "acme_read", limit=3, cursor=first["next_cursor"], **window).json()
        assert second["next_cursor"] is None
        assert [e["text"] for e in first["items"] + second["items"]] == ["v0", "v1", "v2", "v3", "v4"]
        assert [e["text"] for e in get_path(api, "/api/v1/event", "globex_write", **window).json()["items"]] == ["other"]
        assert get_path(api, "/api/v1/event", "acme_read", **{"label.app": "none"}, **window).json()["items"] == []
        measures = get_path(api, "/api/v1/measure", "acme_read", name="orders", **window).json()["items"]
        assert [m["value"] for m in measures] == [0, 1, 2, 3, 4]


def get_path(api, path: str, key: str, **params) -> requests.Response:
    return requests.get(f"{api.url}{path}", params=params, headers={"X-PMETRICS-API-KEY": api.keys[key]}, timeout=10)
