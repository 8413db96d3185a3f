"""The push endpoints over real HTTP (uvicorn on 127.0.0.1): keys and scopes, the order of refusals,
validation, rate limits, durability in the landing zone, health and readiness (issue 18)."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.idempotency import IdempotencyStore
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.config import ApiConfig, RateLimit
from metrics_pipeline.lib.custom.landing import PushWriter, read_items
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.api import serving

NOW = datetime.now(timezone.utc)


@dataclass
class Api:
    url: str
    landing: Path
    keys: dict[str, str]  # name -> token
    ring: api_keys.KeyRing
    warehouse: Warehouse

    def post(self, path: str, body, key: str | None = "acme_write", **kwargs) -> requests.Response:
        headers = kwargs.pop("headers", {})
        if key is not None:
            headers["X-PMETRICS-API-KEY"] = self.keys[key]
        data = body if isinstance(body, (bytes, str)) or body is None or hasattr(body, "__next__") else json.dumps(body)
        return requests.post(f"{self.url}{path}", data=data, headers=headers, timeout=10, **kwargs)

    def landed(self, kind: str = "measures") -> list[dict]:
        items = []
        for path in sorted((self.landing / "custom" / kind).rglob("*.jsonl")):
            items += read_items(path.read_bytes())[0]
        return items


def _api(warehouse_dsn: str, landing: Path, config: ApiConfig | None = None) -> Iterator[Api]:
    warehouse = Warehouse(warehouse_dsn)
    for tenant in ("acme", "globex"):
        api_keys.create_tenant(warehouse, tenant)
    keys = {
        "acme_write": api_keys.create_key(warehouse, "acme", ["write"]).token,
        "acme_read": api_keys.create_key(warehouse, "acme", ["read"]).token,
        "globex_write": api_keys.create_key(warehouse, "globex", ["write", "read"]).token,
    }
    config = config or ApiConfig(landing=str(landing))
    ring = api_keys.KeyRing(warehouse, refresh_s=0.5).start()
    writer = PushWriter(config)
    app = create_app(config=config, keys=ring, writer=writer, reader=warehouse,
                     remembered=IdempotencyStore(landing.parent / "idempotency", config.idempotency_ttl),
                     clock=lambda: datetime.now(timezone.utc))
    try:
        with serving(app) as url:
            yield Api(url, landing, keys, ring, warehouse)
    finally:
        ring.stop()
        writer.close()


@pytest.fixture
def api(warehouse_dsn, tmp_path) -> Iterator[Api]:
    yield from _api(warehouse_dsn, tmp_path / "landing")


def measure(name="orders_processed", value=1.0, **extra) -> dict:
    return {"name": name, "value": value, **extra}


def test_a_batch_is_acknowledged_once_it_is_in_the_landing_zone_under_the_keys_tenant(api):
    ts = (NOW - timedelta(minutes=3)).replace(microsecond=123456)
    response = api.post("/api/v1/measure", [measure(value=3, ts=ts.isoformat(), metadata={"shop": "eu"}),
                                             measure("queue_depth", 17, unit="count")])
    assert response.status_code == 202 and response.json() == {"accepted": 2}
    items = api.landed()
    assert [(i["tenant"], i["name"], i["value"]) for i in items] == [("acme", "orders_processed", 3.0),
                                                                     ("acme", "queue_depth", 17.0)]
    assert items[0]["metadata"] == {"shop": "eu"} and datetime.fromisoformat(items[0]["ts"]) == ts
    # one object alone is a batch of one; events land beside measures
    assert api.post("/api/v1/measure", measure(), key="globex_write").status_code == 202
    assert api.post("/api/v1/event", {"name": "deploy", "text": "v1.2.3", "metadata": {"service": "orders"}}).status_code == 202
    assert [i["tenant"] for i in api.landed()] == ["acme", "acme", "globex"]
    assert [(i["tenant"], i["name"], i["text"]) for i in api.landed("events")] == [("acme", "deploy", "v1.2.3")]


@pytest.mark.parametrize("headers, status", [
    ({}, 401),
    ({"X-PMETRICS-API-KEY": "mpk_000000000000_" + "A" * 43}, 401),
    ({"X-PMETRICS-API-KEY": "not a key"}, 401),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
])
def test_a_missing_or_unknown_key_is_401_and_nothing_lands(api, headers, status):
    response = api.post("/api/v1/measure", [measure()], key=None, headers=headers)
    assert response.status_code == status and response.headers["WWW-Authenticate"] == "Bearer"
    assert api.landed() == []


def test_bearer_works_a_read_key_cannot_write_and_a_revoked_key_is_refused_within_5_s(api):
    token = api.keys["acme_write"]
    assert api.post("/api/v1/measure", [measure()], key=None, headers={"Authorization": f"Bearer {token}"}).status_code == 202
    assert api.post("/api/v1/measure", [measure()], key="acme_read").status_code == 403
    api_keys.revoke_key(api.warehouse, token.split("_")[1])
    deadline = datetime.now(timezone.utc) + timedelta(seconds=5)
    while api.post("/api/v1/measure", [measure()]).status_code == 202:
        assert datetime.now(timezone.utc) < deadline, "a revoked key was still accepted after 5 s"
    assert api.post("/api/v1/measure", [measure()]).status_code == 401


def _headers_only(url: str, headers: str) -> bytes:
    """Send a request's headers announcing a 1 GB body, and none of the body: the server's answer,
    which can only come if it did not wait for the body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /api/v1/measure HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {1 << 30}\r\n{headers}\r\n".encode())
        return sock.recv(4096)


def test_authentication_and_the_announced_size_are_refused_before_any_of_the_body_is_read(api):
    """SPEC §12 order of refusal: a bad key is 401, and a good key announcing 1 GB is 413, both from
    the headers alone (the body is never sent here: waiting for it would time out)."""
    assert _headers_only(api.url, "").startswith(b"HTTP/1.1 401")
    assert _headers_only(api.url, f"X-PMETRICS-API-KEY: {api.keys['acme_read']}\r\n").startswith(b"HTTP/1.1 403")
    assert _headers_only(api.url, f"X-PMETRICS-API-KEY: {api.keys['acme_write']}\r\n").startswith(b"HTTP/1.1 413")


def test_an_oversized_body_is_413_from_its_length_or_while_it_streams(warehouse_dsn, tmp_path):
    config = ApiConfig(landing=str(tmp_path / "landing"), max_body_bytes=4096)
    for api in _api(warehouse_dsn, tmp_path / "landing", config):
        big = json.dumps([measure(metadata={"k": "v" * 1000}) for _ in range(5)])
        assert api.post("/api/v1/measure", big).status_code == 413
        chunked = api.post("/api/v1/measure", (part.encode() for part in (big[:3000], big[3000:])))  # no Content-Length
        assert chunked.status_code == 413 and "4,096" in chunked.json()["detail"]
        assert api.post("/api/v1/measure", [measure()] * 3).status_code == 202
        assert len(api.landed()) == 3


def test_a_batch_with_any_invalid_item_is_422_listing_every_one_and_nothing_lands(api):
    batch = [measure(), measure("bad name"), measure(value="3"), measure(metadata={"tenant": "globex"}),
             measure(ts=(NOW - timedelta(days=30)).isoformat()), measure(value=float("nan"))]
    response = api.post("/api/v1/measure", json.dumps(batch, allow_nan=True))
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert sorted({e["index"] for e in errors}) == [1, 2, 3, 4, 5]
    assert {e["field"] for e in errors} >= {"name", "value", "metadata.tenant", "ts"}
    assert api.landed() == []
    assert api.post("/api/v1/measure", b"{not json").status_code == 422


def test_rate_limits_per_key_answer_429_with_retry_after(warehouse_dsn, tmp_path):
    config = ApiConfig(landing=str(tmp_path / "landing"),
                       rate_limit=RateLimit(requests_per_second=2, items_per_second=50, burst_seconds=1))
    for api in _api(warehouse_dsn, tmp_path / "landing", config):
        codes = [api.post("/api/v1/measure", [measure()]).status_code for _ in range(4)]
        assert codes[:2] == [202, 202] and 429 in codes[2:]
        refused = api.post("/api/v1/measure", [measure()])
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        # another key has its own buckets; items count too
        assert api.post("/api/v1/measure", [measure()] * 40, key="globex_write").status_code == 202
        assert api.post("/api/v1/measure", [measure()] * 40, key="globex_write").status_code == 429


def test_a_landing_zone_that_cannot_write_is_503_and_acknowledges_nothing(warehouse_dsn, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("a file where the landing zone should be")
    for api in _api(warehouse_dsn, blocked, ApiConfig(landing=str(blocked))):
        response = api.post("/api/v1/measure", [measure()])
        assert response.status_code == 503 and response.headers["Retry-After"]
        ready = requests.get(f"{api.url}/readyz", timeout=5)
        assert ready.status_code == 503 and "not writable" in ready.json()["detail"]
        assert requests.get(f"{api.url}/healthz", timeout=5).status_code == 200  # alive all the same


def test_healthz_and_readyz_when_all_is_well(api):
    assert requests.get(f"{api.url}/readyz", timeout=5).json() == {"status": "ready"}
    assert requests.get(f"{api.url}/healthz", timeout=5).json()["keys_loaded"] is True
    assert requests.get(f"{api.url}/docs", timeout=5).status_code == 200  # OpenAPI comes with it


def test_keys_never_reach_logs_or_responses(api, caplog):
    caplog.set_level(logging.DEBUG)
    token = api.keys["acme_write"]
    responses = [api.post("/api/v1/measure", [measure()]),
                 api.post("/api/v1/measure", [measure("bad name")]),
                 api.post("/api/v1/measure", [measure()], key="acme_read"),
                 api.post("/api/v1/measure", [measure()], key=None, headers={"X-PMETRICS-API-KEY": token[:-1] + "x"})]
    assert [r.status_code for r in responses] == [202, 422, 403, 401]
    secret = token.split("_", 2)[2]
    assert all(secret not in r.text and secret[:-1] not in r.text for r in responses)
    assert secret not in caplog.text and secret[:-1] not in caplog.text


def test_an_idempotency_key_repeated_is_answered_again_and_stores_nothing_new(api):
    """Items without ts are stamped on receipt: without the key, a retry would store them twice."""
    batch = [measure("orders", 1), measure("orders", 2)]
    first = api.post("/api/v1/measure", batch, headers={"Idempotency-Key": "order-batch-17"})
    again = api.post("/api/v1/measure", batch, headers={"Idempotency-Key": "order-batch-17"})
    assert first.status_code == again.status_code == 202 and again.json() == first.json() == {"accepted": 2}
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert len(api.landed()) == 2
    # another body under the same key is a mistake, refused; another tenant's same key is its own
    other = api.post("/api/v1/measure", [measure("orders", 3)], headers={"Idempotency-Key": "order-batch-17"})
    assert other.status_code == 422 and "another request body" in other.json()["detail"]
    assert api.post("/api/v1/measure", batch, key="globex_write", headers={"Idempotency-Key": "order-batch-17"}).status_code == 202
    assert len(api.landed()) == 4
    # a refused request leaves its key free; a bad key is 400
    assert api.post("/api/v1/measure", [measure("bad name")], headers={"Idempotency-Key": "k2"}).status_code == 422
    assert api.post("/api/v1/measure", [measure()], headers={"Idempotency-Key": "k2"}).status_code == 202
    assert api.post("/api/v1/measure", [measure()], headers={"Idempotency-Key": "x" * 300}).status_code == 400


def test_a_request_racing_its_own_retry_gets_409_and_an_expired_key_stores_again(tmp_path):
    clock = [time.time()]
    store = IdempotencyStore(tmp_path / "idem", timedelta(hours=24), clock=lambda: clock[0])
    assert store.begin("acme", "k", "d1") is None
    racing = store.begin("acme", "k", "d1")
    assert racing.pending and racing.same_body
    store.complete("acme", "k", "d1", 202, {"accepted": 1})
    done = store.begin("acme", "k", "d1")
    assert not done.pending and done.body == {"accepted": 1} and done.status == 202
    assert store.begin("acme", "k", "d2").same_body is False
    clock[0] += 25 * 3600  # file mtimes are real time: move the clock past the TTL instead
    assert store.begin("acme", "k", "d2") is None  # forgotten after 24 h
    # a pending claim left by a crashed request is taken over after a minute
    assert store.begin("acme", "crashed", "d") is None
    clock[0] += 61
    assert store.begin("acme", "crashed", "d") is None


def test_a_batch_that_would_take_a_tenant_past_its_series_cap_is_refused_naming_the_limit(warehouse_dsn, tmp_path):
    """Three series allowed; one already in the warehouse counts (read at the tenant's first push)."""
    from metrics_pipeline.lib.points import points_frame
    from metrics_pipeline.lib.warehouse import load as loader

    hour = NOW.replace(minute=0, second=0, microsecond=0)
    loader.load_points(Warehouse(warehouse_dsn), points_frame([
        {"metric": "orders", "resource": "", "labels": {"tenant": "acme", "shop": "eu"}, "unit": "count",
         "ts": [hour], "value": [1.0]}]), source="custom", start=hour, end=hour + timedelta(hours=1))
    config = ApiConfig(landing=str(tmp_path / "landing"), max_series_per_tenant=3)
    for api in _api(warehouse_dsn, tmp_path / "landing", config):
        two_more = [measure("orders", metadata={"shop": "us"}), measure("refunds"), measure("orders", metadata={"shop": "eu"})]
        assert api.post("/api/v1/measure", two_more).status_code == 202
        refused = api.post("/api/v1/measure", [measure("orders", metadata={"shop": "eu"}),
                                               measure("orders", metadata={"request_id": "a1b2"})])
        assert refused.status_code == 422 and "3 series" in refused.json()["detail"]
        assert "max_series_per_tenant" in refused.json()["detail"]
        assert api.post("/api/v1/measure", two_more * 10).status_code == 202  # known series always pass
        assert api.post("/api/v1/measure", [measure("new_metric")], key="globex_write").status_code == 202
        assert len(api.landed()) == 3 + 30 + 1
