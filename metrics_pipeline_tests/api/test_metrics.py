"""GET /metrics over real HTTP (issue 19): the API's requests by route template and status, the pipeline's
health as the warehouse holds it, a down warehouse, the optional token, the cache, and several workers."""

from __future__ import annotations

import logging
import os
import signal
import time
from datetime import datetime, timezone

import psycopg
import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from metrics_pipeline.api import metrics as api_metrics
from metrics_pipeline.api.app import create_app
from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.warehouse import health
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.api.test_api_process import start_api
from metrics_pipeline_tests.api.test_push import _api
from metrics_pipeline_tests.support import health_sample
from metrics_pipeline_tests.support.api import free_port, serving

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def scrape(url: str, **headers) -> Samples:
    response = requests.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


@pytest.fixture
def api(warehouse_dsn, db, tmp_path, monkeypatch):
    monkeypatch.delenv(api_metrics.TOKEN_ENV, raising=False)
    expected = health_sample.populate(db, datetime.now(timezone.utc))
    for served in _api(warehouse_dsn, tmp_path / "landing"):
        served.expected = expected
        yield served


def test_requests_are_counted_by_route_template_method_and_status_never_by_raw_path(api):
    for _ in range(2):
        assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200
    assert requests.get(f"{api.url}/api/v1/measure", timeout=10).status_code == 401
    assert api.post("/api/v1/measure", {"name": "orders", "value": 1}).status_code == 202
    assert requests.get(f"{api.url}/no/such/path/4711", timeout=10).status_code == 404
    assert requests.delete(f"{api.url}/healthz", timeout=10).status_code == 405
    assert requests.request("PROPFIND", f"{api.url}/healthz", timeout=10).status_code == 405
    got = scrape(api.url)
    count = "metrics_pipeline_api_requests_total"
    assert value(got, count, route="/healthz", method="GET", status="200") == 2
    assert value(got, count, route="/api/v1/measure", method="GET", status="401") == 1
    assert value(got, count, route="/api/v1/measure", method="POST", status="202") == 1
    assert value(got, count, route="unmatched", method="GET", status="404") == 1
    assert value(got, count, route="/healthz", method="DELETE", status="405") == 1
    assert value(got, count, route="/healthz", method="other", status="405") == 1
    histogram = "metrics_pipeline_api_request_duration_seconds"
    assert value(got, f"{histogram}_count", route="/healthz", method="GET", status="200") == 2
    assert value(got, f"{histogram}_bucket", route="/healthz", method="GET", status="200", le="+Inf") == 2
    assert 0 < value(got, f"{histogram}_sum", route="/healthz", method="GET", status="200") < 5
    assert not [labels for _, labels in got if any("4711" in v or "PROPFIND" in v for _, v in labels)]
    # the scrape before is counted by the next one, like any request
    assert value(scrape(api.url), count, route="/metrics", method="GET", status="200") == 1


def test_the_pipeline_health_series_are_the_warehouses_and_name_no_tenant(api, warehouse_dsn):
    response = requests.get(f"{api.url}/metrics", timeout=10)
    got = parse(response.text)
    expected = api.expected
    assert value(got, "metrics_pipeline_warehouse_up") == 1
    for source, newest in expected.newest_sample.items():
        stamp = value(got, "metrics_pipeline_source_newest_sample_timestamp_seconds", source=source)
        assert stamp == newest.timestamp(), source
        lag = value(got, "metrics_pipeline_source_lag_seconds", source=source)
        assert abs(lag - (time.time() - newest.timestamp())) < 5, source
    for source, points in expected.points_last_hour.items():
        assert value(got, "metrics_pipeline_source_points_last_hour", source=source) == points
    for source, records in expected.quarantined_last_day.items():
        assert value(got, "metrics_pipeline_quarantined_records_last_day", source=source) == records
    with psycopg.connect(warehouse_dsn) as conn:
        firing = dict(conn.execute("""SELECT severity || '/' || (labels ->> 'source'), count(*)
                                      FROM metrics.alerts WHERE state = 'firing' GROUP BY 1""").fetchall())
    assert firing == {"critical/host": 2, "warning/cloudwatch": 1}
    for key, n in firing.items():
        severity, source = key.split("/")
        assert value(got, "metrics_pipeline_alerts_firing", severity=severity, source=source) == n
    assert value(got, "metrics_pipeline_alerts_firing", severity="critical", source="whatap") == 0
    assert value(got, "metrics_pipeline_landing_files_waiting", kind="ingestion_logs") == 2
    assert value(got, "metrics_pipeline_landing_files_waiting", kind="custom_measures") == 0
    assert value(got, "metrics_pipeline_alert_delivery_failing", target="webhook") == 1
    assert value(got, "metrics_pipeline_table_newest_bucket_timestamp_seconds", table="rollup_1h") == \
        expected.hour.timestamp() - 3600
    assert value(got, "metrics_pipeline_source_silent_series", source="host") == 1
    for secret in (health_sample.TENANT, "acme", "globex", "web-1", "password", warehouse_dsn):
        assert secret not in response.text


def test_a_down_warehouse_still_answers_the_scrape_with_up_0_and_no_dsn(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv(api_metrics.TOKEN_ENV, raising=False)
    down = Warehouse(f"host=127.0.0.1 port={free_port()} dbname=metrics user=metrics password=s3cret-pw")
    config = ApiConfig(landing=str(tmp_path / "landing"))
    writer = PushWriter(config)
    app = create_app(config=config, keys=api_keys.KeyRing(down), writer=writer, reader=down)
    try:
        with serving(app) as url, caplog.at_level(logging.WARNING, logger="metrics_pipeline.api.metrics"):
            requests.get(f"{url}/healthz", timeout=10)
            started = time.monotonic()
            first = requests.get(f"{url}/metrics", timeout=10)
            took = time.monotonic() - started
            again = requests.get(f"{url}/metrics", timeout=10)
    finally:
        writer.close()
    got = parse(first.text)
    assert first.status_code == 200 and took < 5
    assert value(got, "metrics_pipeline_warehouse_up") == 0
    assert value(got, "metrics_pipeline_api_requests_total", route="/healthz", method="GET", status="200") == 1
    assert not [name for name, _ in got if name.startswith("metrics_pipeline_source_")]
    assert value(parse(again.text), "metrics_pipeline_warehouse_up") == 0
    # one warning for the two scrapes (the failure is kept as long as a reading), naming no password
    assert len([r for r in caplog.records if "pipeline health not read" in r.getMessage()]) == 1
    assert "s3cret-pw" not in first.text + caplog.text and "WarehouseUnavailable" in caplog.text


def test_with_a_metrics_token_a_scrape_needs_it_and_nothing_else_changes(warehouse_dsn, tmp_path, monkeypatch):
    monkeypatch.setenv(api_metrics.TOKEN_ENV, "scrape-token-1")
    for api in _api(warehouse_dsn, tmp_path / "landing"):
        anonymous = requests.get(f"{api.url}/metrics", timeout=10)
        wrong = requests.get(f"{api.url}/metrics", headers={"Authorization": "Bearer nope"}, timeout=10)
        assert anonymous.status_code == wrong.status_code == 401
        assert anonymous.headers["www-authenticate"] == "Bearer" and "scrape-token-1" not in anonymous.text
        assert value(scrape(api.url, Authorization="Bearer scrape-token-1"), "metrics_pipeline_warehouse_up") == 1
        assert requests.get(f"{api.url}/healthz", timeout=10).status_code == 200


class CountingReads:
    def __init__(self, result):
        self.calls, self.result = 0, result

    def __call__(self):
        self.calls += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def test_a_reading_is_kept_for_the_ttl_failures_included_and_none_is_made_at_start_up(warehouse_dsn, db):
    health_sample.populate(db, datetime.now(timezone.utc))
    reads = CountingReads(health.read(Warehouse(warehouse_dsn)))
    collector = api_metrics.PipelineHealthCollector(reads, ttl_s=0.3)
    CollectorRegistry(auto_describe=True).register(collector)
    assert reads.calls == 0  # registering (at start-up) reads nothing: only a scrape does
    first = list(collector.collect())
    assert [f.name for f in list(collector.collect())] == [f.name for f in first] and reads.calls == 1
    time.sleep(0.35)
    list(collector.collect())
    assert reads.calls == 2
    failing = CountingReads(psycopg.OperationalError("boom"))
    collector = api_metrics.PipelineHealthCollector(failing, ttl_s=60)
    for _ in range(3):
        [up] = list(collector.collect())
        assert up.name == "metrics_pipeline_warehouse_up" and up.samples[0].value == 0
    assert failing.calls == 1


def test_several_workers_sum_their_request_counts_in_every_scrape(warehouse_dsn, tmp_path, monkeypatch):
    """`--workers 2`: a scrape reaches either worker, and each answers the sum of both (multiprocess mode)."""
    monkeypatch.delenv(api_metrics.TOKEN_ENV, raising=False)
    monkeypatch.delenv(api_metrics.MULTIPROC_ENV, raising=False)
    proc, url = start_api(warehouse_dsn, tmp_path / "landing", tmp_path, workers=2)
    try:
        with requests.Session() as first, requests.Session() as second:
            for i in range(30):  # two keep-alive connections: most likely one per worker
                assert (first if i % 2 else second).get(f"{url}/healthz", timeout=10).status_code == 200
        seen = set()
        for _ in range(8):  # a new connection each: any worker may answer
            got = scrape(url)
            seen.add(value(got, "metrics_pipeline_api_requests_total", route="/healthz", method="GET", status="200"))
            assert value(got, "metrics_pipeline_warehouse_up") == 1
        assert seen == {30}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except Exception:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
