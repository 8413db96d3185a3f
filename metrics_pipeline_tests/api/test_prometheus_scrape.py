"""A real Prometheus (Debian's `prometheus`, installed by `make test`) on 127.0.0.1 scrapes the API served by
uvicorn every second, with the shipped rules loaded; its own HTTP API (`/api/v1/query`) then answers with
the warehouse's values, and the stale-source rule picks up the stale source (issue 19)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import psycopg
import pytest
import requests
import yaml

from metrics_pipeline.api import metrics as api_metrics
from metrics_pipeline_tests.api.test_push import _api
from metrics_pipeline_tests.support import health_sample
from metrics_pipeline_tests.support.api import free_port, wait_until
from metrics_pipeline_tests.support.system_packages import require_system_package

RULES = Path(__file__).resolve().parents[2] / "prometheus" / "rules.yml"


def _prometheus(binary: str, target: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping `target` (host:port) every second; yields its URL; stopped afterwards."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "metrics_pipeline", "static_configs": [{"targets": [target]}]}],
    }))
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, f"Prometheus exited: {proc.stderr.read().decode()[-2000:]}"
        try:
            return requests.get(f"{url}/-/ready", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        wait_until(ready, timeout=30, interval=0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def query(prometheus: str, promql: str) -> dict[tuple, float]:
    """An instant query's result: label values (sorted by label name, `__name__` left out) -> value."""
    body = requests.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    return {tuple(v for k, v in sorted(r["metric"].items()) if k != "__name__"): float(r["value"][1])
            for r in body["data"]["result"]}


@pytest.fixture
def scraped(warehouse_dsn, db, tmp_path, monkeypatch):
    binary = require_system_package(shutil.which("prometheus"), "prometheus")
    monkeypatch.delenv(api_metrics.TOKEN_ENV, raising=False)
    health_sample.populate(db, datetime.now(timezone.utc))
    for api in _api(warehouse_dsn, tmp_path / "landing"):
        requests.get(f"{api.url}/metrics", timeout=10)  # so that the first scrape already has the series
        for prometheus in _prometheus(binary, api.url.removeprefix("http://"), tmp_path / "prometheus"):
            # Prometheus applies new targets every 5 s, then scrapes every second: two scrapes in,
            # the counters have a rate and the rules a first evaluation
            wait_until(lambda: query(prometheus, 'metrics_pipeline_api_requests_total{route="/metrics"} >= 2'),
                       timeout=30, interval=0.2)
            yield prometheus, api


def test_prometheus_holds_the_warehouses_values_and_its_rules_see_the_stale_source(scraped, warehouse_dsn):
    """One test for both, as a Prometheus takes about 5 s to apply its first targets. whatap's newest
    sample is 3 days old: MetricsPipelineSourceStale is pending for it (its `for` is 10 minutes) from
    the first evaluation on, and for no fresh source."""
    prometheus, api = scraped
    with psycopg.connect(warehouse_dsn) as conn:
        (firing,) = conn.execute("SELECT count(*) FROM metrics.alerts WHERE state = 'firing'").fetchone()
        newest = dict(conn.execute("""SELECT s.source, extract(epoch FROM max(p.ts))::float
                                      FROM metrics.points p JOIN metrics.series s USING (series_id)
                                      GROUP BY s.source""").fetchall())
        (run,) = conn.execute("SELECT extract(epoch FROM max(started_at))::float FROM metrics.ingestion_runs"
                              ).fetchone()
    target = api.url.removeprefix("http://")
    assert query(prometheus, 'up{job="metrics_pipeline"}') == {(target, "metrics_pipeline"): 1}
    assert query(prometheus, "metrics_pipeline_warehouse_up") == {(target, "metrics_pipeline"): 1}
    assert query(prometheus, "sum(metrics_pipeline_alerts_firing)") == {(): firing} and firing == 3
    stamps = query(prometheus, "max by (source) (metrics_pipeline_source_newest_sample_timestamp_seconds)")
    assert stamps == {**{(s,): ts for s, ts in newest.items()}, ("ingestion_logs",): run}
    lag = query(prometheus, "max by (source) (metrics_pipeline_source_lag_seconds)")
    assert all(abs(lag[(s,)] - (time.time() - ts)) < 10 for (s,), ts in stamps.items())
    assert query(prometheus, 'sum(rate(metrics_pipeline_api_requests_total{route="/metrics",status="200"}[1m])) > 0')

    alerts = wait_until(lambda: query(prometheus, 'ALERTS{alertname="MetricsPipelineSourceStale"}'), timeout=15,
                        interval=0.2)
    labels = [dict(zip(("alertname", "alertstate", "instance", "job", "severity", "source"), k)) for k in alerts]
    assert [(a["source"], a["alertstate"]) for a in labels] == [("whatap", "pending")]
