"""The Python client against the real push API (uvicorn on 127.0.0.1, real HTTP, a real landing zone):
batching, the interval flush, retries on 429 / 503 / refused connections with the same identities,
no retries on 401 / 403 / 422, splitting on 413, the bounded queue, close(), and the key kept secret."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.idempotency import IdempotencyStore
from metrics_pipeline.client import Client, ClientClosed, DeliveryError, QueueFull
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.config import ApiConfig, RateLimit
from metrics_pipeline.lib.custom.landing import PushWriter, read_items
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support import api as support_api
from metrics_pipeline_tests.support.api import free_port, serving, wait_until

UNKNOWN_KEY = "mpk_000000000000_" + "A" * 43


@dataclass
class Keys:
    write: str
    read: str


def _keys(warehouse_dsn: str) -> Keys:
    warehouse = Warehouse(warehouse_dsn)
    api_keys.create_tenant(warehouse, "acme")
    return Keys(api_keys.create_key(warehouse, "acme", ["write"]).token,
                api_keys.create_key(warehouse, "acme", ["read"]).token)


@contextlib.contextmanager
def _serve(warehouse_dsn: str, landing: Path, config: ApiConfig | None = None, port: int | None = None,
           monkeypatch: pytest.MonkeyPatch | None = None) -> Iterator[str]:
    """The API as metrics_pipeline_tests/api/test_push.py serves it (real KeyRing and PushWriter);
    on `port` when given (the helper's free_port is pointed at it)."""
    config = config or ApiConfig(landing=str(landing))
    ring = api_keys.KeyRing(Warehouse(warehouse_dsn), refresh_s=0.5).start()
    writer = PushWriter(config)
    app = create_app(config=config, keys=ring, writer=writer, clock=lambda: datetime.now(timezone.utc),
                     remembered=IdempotencyStore(Path(landing).parent / "idempotency"))
    try:
        if port is not None:
            monkeypatch.setattr(support_api, "free_port", lambda: port)
        with serving(app) as url:
            yield url
    finally:
        ring.stop()
        writer.close()


def _landed(landing: Path, kind: str = "measures") -> list[dict]:
    items = []
    for path in sorted((landing / "custom" / kind).rglob("*.jsonl")):
        items += read_items(path.read_bytes())[0]
    return items


def _batches(landing: Path, kind: str = "measures") -> list[int]:
    """The item count of every committed batch (one per acknowledged request), in file order."""
    counts = []
    for path in sorted((landing / "custom" / kind).rglob("*.jsonl")):
        counts += [json.loads(line)["committed"] for line in path.read_bytes().splitlines() if b'"committed"' in line]
    return counts


def _at(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


@pytest.fixture
def keys(warehouse_dsn) -> Keys:
    return _keys(warehouse_dsn)


@pytest.fixture
def landing(tmp_path) -> Path:
    return tmp_path / "landing"


@pytest.fixture
def url(warehouse_dsn, keys, landing) -> Iterator[str]:
    with _serve(warehouse_dsn, landing) as url:
        yield url


def test_the_client_imports_no_dagster_psycopg_pandas_or_fastapi():
    code = ("import metrics_pipeline.client, sys; "
            "assert not any(m.split('.')[0] in ('dagster','psycopg','pandas','fastapi') for m in sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_n_measures_go_in_ceil_n_over_batch_size_requests_with_ts_stamped_at_the_call(url, keys, landing):
    with Client(url, keys.write, batch_size=10, flush_interval=60) as client:
        stamped = []
        for i in range(25):
            before = datetime.now(timezone.utc)
            stamped.append(client.measure("orders_processed", i, shop="eu"))
            assert before <= _at(stamped[-1]) <= datetime.now(timezone.utc)
        assert client.flush(timeout=10)
        assert client.stats["requests"] == math.ceil(25 / 10) and client.stats["acknowledged"] == 25
    assert _batches(landing) == [10, 10, 5]
    items = _landed(landing)
    assert [i["value"] for i in items] == list(range(25))
    assert [_at(i["ts"]) for i in items] == [_at(ts) for ts in stamped]
    assert all(i["tenant"] == "acme" and i["metadata"] == {"shop": "eu"} for i in items)
    assert len(set(stamped)) == 25  # two calls never share an identity


def test_events_and_measures_go_to_their_own_endpoints_with_their_fields(url, keys, landing):
    at = datetime.now(timezone.utc).replace(microsecond=654321) - timedelta(minutes=2)
    with Client(url, keys.write) as client:
        client.event("deploy", text="v1.2.3", service="orders")
        client.measure("latency", 12.5, unit="ms", ts=at, **{"k8s.pod": "web-1"})
    [event] = _landed(landing, "events")
    assert (event["name"], event["text"], event["metadata"]) == ("deploy", "v1.2.3", {"service": "orders"})
    [measure] = _landed(landing)
    assert (measure["unit"], measure["metadata"], _at(measure["ts"])) == ("ms", {"k8s.pod": "web-1"}, at)


def test_a_partial_batch_is_sent_once_the_flush_interval_has_passed(url, keys, landing):
    with Client(url, keys.write, batch_size=1000, flush_interval=0.2) as client:
        client.measure("queue_depth", 3)
        started = time.monotonic()
        wait_until(lambda: _landed(landing), timeout=5)
        assert time.monotonic() - started < 3
        assert client.stats["requests"] == 1


def test_a_429_is_retried_after_its_retry_after(warehouse_dsn, keys, landing, caplog):
    config = ApiConfig(landing=str(landing), rate_limit=RateLimit(requests_per_second=1, burst_seconds=1))
    with _serve(warehouse_dsn, landing, config) as url, \
            Client(url, keys.write, batch_size=1, flush_interval=0, backoff_base=0.001, backoff_max=0.01) as client:
        started = time.monotonic()
        client.measure("orders_processed", 1)
        client.measure("orders_processed", 2)
        assert client.flush(timeout=10)
        # the bucket holds one request: the second waits the server's Retry-After (1 s), then passes at once;
        # a client ignoring it would have retried within 10 ms and been refused again
        assert time.monotonic() - started >= 1.0
        assert client.stats["retries"] == 1 and client.errors == []
    assert "HTTP 429" in caplog.text and "in 1.00 s" in caplog.text
    assert sorted(i["value"] for i in _landed(landing)) == [1.0, 2.0]


def test_a_503_from_a_failing_landing_zone_is_retried_and_the_batch_lands_once_with_its_ts(
        warehouse_dsn, keys, tmp_path):
    landing = tmp_path / "landing"
    landing.write_text("a file where the landing zone should be")
    with _serve(warehouse_dsn, landing) as url, Client(url, keys.write, batch_size=3, flush_interval=60, backoff_base=0.01) as client:
        stamped = [client.measure("orders_processed", i) for i in range(3)]  # one batch, sent at once
        wait_until(lambda: client.stats["retries"] >= 1)  # refused with 503, Retry-After: 5
        landing.unlink()
        landing.mkdir()  # the zone recovers
        assert client.flush(timeout=20)
        assert client.stats["retries"] == 1 and client.errors == []
    items = _landed(landing)
    assert _batches(landing) == [3]
    assert [_at(i["ts"]) for i in items] == [_at(ts) for ts in stamped]
    assert all(_at(i["received_at"]) - _at(i["ts"]) >= timedelta(seconds=4) for i in items)  # stamped at the call


def test_connection_refused_is_retried_until_the_server_appears(warehouse_dsn, keys, landing, monkeypatch):
    port = free_port()
    with Client(f"http://127.0.0.1:{port}", keys.write, flush_interval=0, max_retries=100,
                backoff_base=0.02, backoff_max=0.2) as client:
        stamped = client.measure("orders_processed", 7)
        wait_until(lambda: client.stats["retries"] >= 2)
        with _serve(warehouse_dsn, landing, port=port, monkeypatch=monkeypatch):
            assert client.flush(timeout=10)
            assert client.errors == [] and client.stats["acknowledged"] == 1
    [item] = _landed(landing)
    assert (_at(item["ts"]), item["value"]) == (_at(stamped), 7.0)


@pytest.mark.parametrize("key, status", [(UNKNOWN_KEY, 401), ("read", 403)])
def test_a_refused_key_is_not_retried_and_the_batch_is_reported(url, keys, landing, key, status):
    reported = []
    with Client(url, keys.read if key == "read" else key, on_error=reported.append) as client:
        client.measure("orders_processed", 1)
        assert client.flush(timeout=10)
        assert client.stats == {"queued": 0, "requests": 1, "retries": 0, "acknowledged": 0, "dropped": 1}
    [error] = client.errors
    assert reported == [error] and isinstance(error, DeliveryError)
    assert (error.status, error.kind, len(error.items), error.attempts) == (status, "measure", 1, 1)
    assert _landed(landing) == []


def test_an_invalid_batch_is_dropped_with_the_servers_422_errors_and_later_batches_still_land(url, keys, landing):
    with Client(url, keys.write, batch_size=2, flush_interval=60) as client:
        client.measure("bad name", 1)
        client.measure("orders_processed", 2, tenant="globex")  # a reserved key: the server's rule
        client.measure("orders_processed", 3)
        assert client.flush(timeout=10)
        assert client.stats["retries"] == 0 and client.stats["dropped"] == 2
    [error] = client.errors
    assert error.status == 422 and sorted(e["index"] for e in error.errors) == [0, 1]
    assert [i["value"] for i in _landed(landing)] == [3.0]


def test_a_batch_over_the_servers_item_limit_is_split_until_it_passes(warehouse_dsn, keys, landing):
    with _serve(warehouse_dsn, landing, ApiConfig(landing=str(landing), max_batch_items=4)) as url, \
            Client(url, keys.write, batch_size=10, flush_interval=60) as client:
        for i in range(10):
            client.measure("orders_processed", i)
        assert client.flush(timeout=10)
        assert client.errors == [] and client.stats["acknowledged"] == 10
    assert sorted(_batches(landing)) == [2, 2, 3, 3] and [i["value"] for i in _landed(landing)] == list(range(10))


def test_what_the_client_can_tell_is_invalid_is_refused_at_the_call():
    with Client(f"http://127.0.0.1:{free_port()}", UNKNOWN_KEY) as client:
        for call, error in [(lambda: client.measure("x", float("nan")), ValueError),
                            (lambda: client.measure("x", "3"), TypeError),
                            (lambda: client.measure("x", True), TypeError),
                            (lambda: client.measure(3, 1), TypeError),
                            (lambda: client.measure("x", 1, shop=5), TypeError),
                            (lambda: client.measure("x", 1, ts=datetime(2026, 1, 1)), ValueError),
                            (lambda: client.event("deploy", text=b"v1"), TypeError)]:
            with pytest.raises(error):
                call()
        assert client.stats["queued"] == 0


def test_a_full_queue_raises_and_close_reports_what_it_could_not_send():
    port = free_port()  # nothing listens there
    client = Client(f"http://127.0.0.1:{port}", UNKNOWN_KEY, max_queue=5, batch_size=100, flush_interval=60,
                    backoff_base=0.05, backoff_max=0.1, max_retries=1000)
    for i in range(5):
        client.measure("orders_processed", i)
    with pytest.raises(QueueFull):
        client.measure("orders_processed", 5)
    started = time.monotonic()
    assert client.close(timeout=0.5) is False
    assert time.monotonic() - started < 5
    assert sum(len(e.items) for e in client.errors) == 5 and client.stats["acknowledged"] == 0
    with pytest.raises(ClientClosed):
        client.measure("orders_processed", 6)


def test_close_sends_what_is_queued_and_the_client_is_thread_safe(url, keys, landing):
    client = Client(url, keys.write, batch_size=100, flush_interval=60)

    def record(thread: int):
        for i in range(250):
            client.measure("orders_processed", i, thread=str(thread))

    threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    client.event("deploy", text="done")
    assert client.close() is True
    assert not client._thread.is_alive()
    items = _landed(landing)
    assert len(items) == 2000 and len({(i["metadata"]["thread"], i["value"]) for i in items}) == 2000
    assert len({i["ts"] for i in items}) == 2000
    assert len(_landed(landing, "events")) == 1


def test_the_key_never_reaches_logs_repr_or_errors(warehouse_dsn, keys, url, caplog):
    caplog.set_level(logging.DEBUG)
    secret = keys.write.split("_", 2)[2]
    port = free_port()
    clients = [Client(url, keys.write), Client(url, keys.read), Client(url, UNKNOWN_KEY),
               Client(f"http://127.0.0.1:{port}", keys.write, max_retries=2, backoff_base=0.01)]
    for client in clients:
        client.measure("orders_processed", 1)
        client.measure("bad name", 1)
        client.close(timeout=10)
    texts = [caplog.text, *(repr(c) for c in clients), *(str(e) + e.detail for c in clients for e in c.errors)]
    assert len([e for c in clients for e in c.errors]) >= 4
    assert all(secret not in text and keys.read.split("_", 2)[2] not in text for text in texts)
