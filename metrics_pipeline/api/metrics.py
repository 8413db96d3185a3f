"""`GET /metrics`: the API's own requests and the pipeline's health, for Prometheus (issue 19, SPEC §12).

Two kinds of series, documented one by one in `docs/operations.md`:
* the API's requests, counted and timed by `RequestMetrics`, a plain ASGI middleware, per route
  *template* (`/api/v1/measure`, never the raw path: a path carrying ids would make a series per
  request), method and status. Paths no route matches are counted as route `unmatched`;
* the pipeline's health, read from the warehouse when a scrape asks (`lib/warehouse/health.py`) by
  `PipelineHealthCollector`, and kept `ttl_s` seconds (5) so that several Prometheus servers, or a
  fast scrape interval, cost the warehouse one reading per 5 s. A reading that fails is kept as
  long: the scrape still answers at once, with the request series and `metrics_pipeline_warehouse_up 0`.

Several worker processes (`--workers N`): a scrape reaches one of them. The request series are kept
in prometheus_client's multiprocess mode when `PROMETHEUS_MULTIPROC_DIR` is set (`server.serve` sets
it to a fresh directory for N > 1): each worker adds its counts to a file of its own there, and the
worker that answers a scrape sums every worker's files, so the counters never jump between workers.
The health series are read by whichever worker answers; they are the same warehouse's.

Access: no key by default (Prometheus convention; the operator binds the port to their network).
With `METRICS_PIPELINE_METRICS_TOKEN` set, a scrape needs `Authorization: Bearer <that token>`.
Nothing exposed names a tenant, a pushed label value or a file: aggregates per source only.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from metrics_pipeline.lib.warehouse import health
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

TOKEN_ENV = "METRICS_PIPELINE_METRICS_TOKEN"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: seconds; the API answers in milliseconds, pushes of 10 MB take longer
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: any other method is counted as `other`: a client's made-up method must not make series
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RequestMetrics:
    """ASGI middleware: counts and times every HTTP request by route template, method and status.

    It sits inside Starlette's error middleware, so a request whose handler raised is seen with the
    exception and counted as the 500 it becomes. The time runs until the response is sent.
    """

    def __init__(self, app, *, requests: Counter, duration: Histogram):
        self.app, self.requests, self.duration = app, requests, duration

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # The router records the route it matched in the scope (also for a 405: the route that
            # has the path); the template, never the path, is the label.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"] if scope["method"] in METHODS else "other"
            labels = (route, method, str(status))
            self.requests.labels(*labels).inc()
            self.duration.labels(*labels).observe(time.perf_counter() - started)


def _gauge(name: str, documentation: str, labels: tuple[str, ...], samples) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for label_values, value in samples:
        family.add_metric(list(label_values), value)
    return family


class PipelineHealthCollector(Collector):
    """The pipeline's health as gauges, from `read()` (a `health.PipelineHealth`) cached `ttl_s` seconds."""

    def __init__(self, read: Callable[[], health.PipelineHealth], ttl_s: float = 5.0,
                 clock: Callable[[], float] = time.time):
        self._read, self.ttl_s, self._clock = read, ttl_s, clock
        self._lock = threading.Lock()  # one reading at a time; concurrent scrapes wait for it
        self._cached: tuple[float, health.PipelineHealth | None] | None = None

    def describe(self) -> list[Metric]:
        """Nothing: a registry that describes its collectors would otherwise read the warehouse at start-up."""
        return []

    def reading(self) -> health.PipelineHealth | None:
        """The cached reading, or a new one once it is `ttl_s` old; None when the warehouse failed."""
        with self._lock:
            if self._cached is not None and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            try:
                reading = self._read()
            except Exception as exc:  # noqa: BLE001 - whatever failed, the scrape answers with up 0
                # Type and first line: WarehouseUnavailable names the database without a password.
                reason = " ".join(str(exc).split("\n", 1)[0].split())[:300]
                log.warning("/metrics: pipeline health not read from the warehouse: %s: %s",
                            type(exc).__name__, reason)
                reading = None
            self._cached = (time.monotonic(), reading)
            return reading

    def collect(self) -> Iterator[Metric]:
        h = self.reading()
        yield GaugeMetricFamily("metrics_pipeline_warehouse_up",
                                "1 when the pipeline's health was read from the warehouse, 0 when that failed",
                                value=0 if h is None else 1)
        if h is None:
            return
        now = self._clock()
        yield GaugeMetricFamily("metrics_pipeline_warehouse_read_timestamp_seconds",
                                "When the health series were read from the warehouse (cached a few seconds)",
                                value=h.read_at.timestamp())
        yield GaugeMetricFamily("metrics_pipeline_warehouse_read_duration_seconds",
                                "How long reading the health series from the warehouse took", value=h.duration_s)
        newest = sorted(h.newest_sample.items())
        yield _gauge("metrics_pipeline_source_newest_sample_timestamp_seconds",
                     "Timestamp of the newest sample loaded per source (ingestion_logs: the newest run's start)",
                     ("source",), (((s,), ts.timestamp()) for s, ts in newest))
        yield _gauge("metrics_pipeline_source_lag_seconds",
                     "How far the newest sample loaded per source is behind now",
                     ("source",), (((s,), now - ts.timestamp()) for s, ts in newest))
        yield _gauge("metrics_pipeline_source_points_last_hour",
                     "Points per source with timestamps in the last hour, as counted by rollup_5m",
                     ("source",), (((s,), n) for s, n in sorted(h.points_last_hour.items())))
        silent = sorted(h.silent_series.items())
        yield _gauge("metrics_pipeline_source_silent_series",
                     "Series per source without a sample (no data) in the newest complete hour of series_health_hourly",
                     ("source",), (((s,), v.silent) for s, v in silent))
        yield _gauge("metrics_pipeline_source_reporting_series",
                     "Series per source with samples in the newest complete hour of series_health_hourly",
                     ("source",), (((s,), v.reporting) for s, v in silent))
        yield _gauge("metrics_pipeline_quarantined_records_last_day",
                     "Quarantined records per quarantine source whose record hour is within the last 24 hours",
                     ("source",), (((s,), n) for s, n in sorted(h.quarantined_last_day.items())))
        waiting = sorted(h.landing_waiting.items())
        yield _gauge("metrics_pipeline_landing_files_waiting",
                     "Indexed landing files per kind holding records not committed to the warehouse yet",
                     ("kind",), (((k, ), w.files) for k, w in waiting))
        yield _gauge("metrics_pipeline_landing_oldest_waiting_hour_timestamp_seconds",
                     "Start of the oldest hour with records not committed yet, per kind of landing file",
                     ("kind",), (((k,), w.oldest_hour.timestamp()) for k, w in waiting if w.oldest_hour))
        yield _gauge("metrics_pipeline_alerts_firing", "Alerts firing in the alerts table by severity and source",
                     ("severity", "source"), sorted(h.alerts_firing.items()))
        delivery = sorted(h.delivery.items())
        yield _gauge("metrics_pipeline_alert_delivery_pending",
                     "Alerts (firing, or started in the last 7 days) the target has not had since their last change",
                     ("target",), (((t,), d.pending) for t, d in delivery))
        yield _gauge("metrics_pipeline_alert_delivery_failing",
                     "Alerts whose last delivery attempt to the target failed (retried every tick)",
                     ("target",), (((t,), d.failing) for t, d in delivery))
        yield _gauge("metrics_pipeline_alert_delivery_last_sent_timestamp_seconds",
                     "When the target last received an alert (firing, or started in the last 7 days)",
                     ("target",), (((t,), d.last_sent.timestamp()) for t, d in delivery if d.last_sent))
        yield _gauge("metrics_pipeline_table_newest_bucket_timestamp_seconds",
                     "Start of the newest bucket per derived table (rollups, series health, SLA)",
                     ("table",), (((t,), b.timestamp()) for t, b in sorted(h.newest_bucket.items())))
        yield from _kafka_metrics(h)


def _kafka_metrics(h: health.PipelineHealth) -> Iterator[Metric]:
    """The Kafka consumer's record (docs/kafka.md): per topic and partition, summed over consumer groups."""
    by_partition: dict[tuple[str, str], list[health.KafkaPartition]] = {}
    for p in h.kafka_partitions:
        by_partition.setdefault((p.topic, str(p.partition)), []).append(p)
    rows = sorted(by_partition.items())
    labels = ("topic", "partition")
    yield _gauge("metrics_pipeline_kafka_consumer_lag_messages",
                 "Messages of the partition not committed by the consumer yet (its end as last seen minus the "
                 "committed offset), as of the consumer's last commit", labels,
                 ((k, sum(p.lag for p in ps)) for k, ps in rows))
    yield _gauge("metrics_pipeline_kafka_consumer_committed_offset",
                 "The next offset the consumer group reads (committed once the landing file holding the "
                 "messages before it is durable)", labels, ((k, max(p.committed_offset for p in ps)) for k, ps in rows))
    yield _gauge("metrics_pipeline_kafka_consumer_last_commit_timestamp_seconds",
                 "When the consumer last committed the partition", labels,
                 ((k, max(p.committed_at for p in ps).timestamp()) for k, ps in rows))
    for name, attribute, text in (
            ("messages", "messages", "Messages the consumer wrote to landing files"),
            ("bytes", "bytes", "Bytes of message values the consumer wrote to landing files"),
            ("refused_messages", "refused", "Messages with a null, empty or oversized value (quarantined at load)"),
            ("files", "files", "Landing files the consumer wrote")):
        family = CounterMetricFamily(f"metrics_pipeline_kafka_consumer_{name}", text, labels=list(labels))
        for k, ps in rows:
            family.add_metric(list(k), sum(getattr(p, attribute) for p in ps))
        yield family
    groups = sorted(h.kafka_consumers.items())
    yield _gauge("metrics_pipeline_kafka_consumers_running", "Kafka consumer processes reporting as running",
                 ("group",), (((g,), c.running) for g, c in groups))
    yield _gauge("metrics_pipeline_kafka_consumers_broker_unreachable",
                 "Running Kafka consumers that cannot reach their brokers (they back off and retry)",
                 ("group",), (((g,), c.broker_unreachable) for g, c in groups))
    yield _gauge("metrics_pipeline_kafka_consumer_last_report_timestamp_seconds",
                 "The newest report of a running consumer of the group (commits, or every 30 s)",
                 ("group",), (((g,), c.last_report.timestamp()) for g, c in groups))
    yield _gauge("metrics_pipeline_kafka_quarantined_messages_last_day",
                 "Kafka messages (or batch elements) quarantined by the loads, per topic, of the last 24 hours",
                 ("topic",), (((t,), n) for t, n in sorted(h.kafka_quarantined_last_day.items())))


def _multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV)
    if path and values.ValueClass is values.MutexValue:
        # prometheus_client chose in-memory values when first imported, before the variable was set.
        log.warning("%s is set but prometheus_client was imported before it: request series of this "
                    "process only", MULTIPROC_ENV)
        return None
    return path or None


def install(app: FastAPI, *, reader: Warehouse | None, token: str | None = None, ttl_s: float = 5.0) -> None:
    """Add the request middleware and `GET /metrics` to `app`.

    Args:
        app: the application (before it starts serving).
        reader: the warehouse the health series are read from (None: request series only).
        token: the bearer token a scrape must send (default: `METRICS_PIPELINE_METRICS_TOKEN`; unset
            or empty: no token needed).
        ttl_s: how long a health reading is kept.
    """
    token = (token if token is not None else os.environ.get(TOKEN_ENV)) or None
    own = CollectorRegistry()  # per application (tests build many in one process), not the global one
    labels = ("route", "method", "status")
    requests = Counter("metrics_pipeline_api_requests", "HTTP requests answered by the API", labels, registry=own)
    duration = Histogram("metrics_pipeline_api_request_duration_seconds",
                         "Time from a request's arrival until its response was sent", labels,
                         buckets=DURATION_BUCKETS, registry=own)
    shared = _multiprocess_dir()
    exposed = own
    if shared:
        exposed = CollectorRegistry()
        MultiProcessCollector(exposed, path=shared)
    if reader is not None:
        exposed.register(PipelineHealthCollector(lambda: health.read(reader), ttl_s))
    app.add_middleware(RequestMetrics, requests=requests, duration=duration)

    @app.get("/metrics", summary="Prometheus exposition: the API's requests and the pipeline's health",
             response_class=Response)
    def metrics(request: Request) -> Response:
        """No key needed unless METRICS_PIPELINE_METRICS_TOKEN is set (then `Authorization: Bearer`).
        Series and their meaning: docs/operations.md."""
        if token is not None:
            scheme, _, value = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
                return JSONResponse({"detail": "this endpoint needs Authorization: Bearer <the metrics token>"},
                                    status_code=401, headers={"WWW-Authenticate": "Bearer"})
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(exposed), media_type=content_type)
