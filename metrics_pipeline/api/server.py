"""`metrics-pipeline api`: the application on uvicorn, with its key ring and landing writer (or, with
`--buffer kafka`, the Kafka producer that stands for it: `lib/kafka/buffer.py`).

The API needs the warehouse only for its keys, which it keeps in memory (`KeyRing`): it accepts
pushes while the warehouse is down, the landing zone being the buffer (SPEC §12), and reports the
warehouse's reachability on /healthz as detail.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile

import psycopg

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom import config as api_config
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.warehouse import retention
from metrics_pipeline.lib.warehouse.db import ReadPool, Warehouse

log = logging.getLogger(__name__)


def warehouse_check(warehouse: Warehouse):
    """A /healthz probe: None when the warehouse answers within 2 s, else what went wrong (no DSN)."""

    def check() -> str | None:
        try:
            with psycopg.connect(warehouse.dsn, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return type(exc).__name__
        return None

    return check


def make_writer(config: api_config.ApiConfig, buffer: str = "landing", bootstrap: str | None = None):
    """Where accepted batches go: the landing zone (`PushWriter`, default), or with `buffer="kafka"`
    the measures/events topic bound to the tenant in `config/kafka.yaml` (`lib/kafka/buffer.py`)."""
    if buffer == "kafka":
        from metrics_pipeline.lib.kafka.buffer import KafkaBuffer
        from metrics_pipeline.lib.kafka.config import load_config

        kafka = load_config()
        writer = KafkaBuffer(kafka, bootstrap=bootstrap)
        log.info("accepted batches go to Kafka (%s): topics %s", writer.url,
                 ", ".join(f"{t} ({kind} of {tenant})" for (kind, tenant), t in sorted(writer.topics.items())) or "none")
        return writer
    if buffer != "landing":
        raise ValueError(f"buffer must be landing or kafka, not {buffer!r}")
    return PushWriter(config)


def build(warehouse: Warehouse, config: api_config.ApiConfig | None = None, *, workers: int = 1,
          buffer: str = "landing", bootstrap: str | None = None):
    """The application and what it owns (started key ring, writer, read pool); the caller closes them.

    With several worker processes each holds its own token buckets, so each gets 1/`workers` of
    the configured rates: the limits hold for a key whichever worker its requests reach."""
    from metrics_pipeline.api.app import create_app

    config = config or api_config.load_config()
    config.check_back_window(retention.load_config().points)
    if workers > 1:
        limits = config.rate_limit
        config = config.model_copy(update={"rate_limit": limits.model_copy(update={
            "requests_per_second": limits.requests_per_second / workers,
            "items_per_second": limits.items_per_second / workers})})
    writer = make_writer(config, buffer, bootstrap)
    keys = api_keys.KeyRing(warehouse)
    keys.start()
    reads = ReadPool(warehouse)
    app = create_app(config=config, keys=keys, writer=writer, reader=reads, warehouse_check=warehouse_check(warehouse))
    return app, keys, writer, reads


WORKERS_ENV = "METRICS_PIPELINE_API_WORKERS"
#: `--buffer` and `--bootstrap`, handed to the worker processes
BUFFER_ENV = "METRICS_PIPELINE_API_BUFFER"
BOOTSTRAP_ENV = "METRICS_PIPELINE_API_KAFKA_BOOTSTRAP"
#: prometheus_client's multiprocess directory (read by api/metrics.py in each worker)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def app_in_worker():
    """The application of one uvicorn worker process (`serve(workers > 1)`): its own key ring and
    writer (writers never share a file: each has its own id), stopped when the worker exits."""
    import atexit

    from metrics_pipeline.lib.warehouse import embedded_pg

    app, keys, writer, reads = build(embedded_pg.resolve_warehouse(), workers=int(os.environ.get(WORKERS_ENV, "1")),
                                     buffer=os.environ.get(BUFFER_ENV, "landing"),
                                     bootstrap=os.environ.get(BOOTSTRAP_ENV) or None)
    atexit.register(reads.close)
    atexit.register(writer.close)
    atexit.register(keys.stop)
    return app


def serve(warehouse: Warehouse, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
          buffer: str = "landing", bootstrap: str | None = None) -> None:
    """Run the API. One worker by default; more workers use more cores (each decodes, validates and
    writes its own requests), with the same warehouse (METRICS_PIPELINE_DSN) in each."""
    import uvicorn

    log.info("metrics_pipeline API on http://%s:%d (OpenAPI at /docs), %d worker(s)", host, port, workers)
    if workers > 1:
        os.environ[WORKERS_ENV] = str(workers)
        os.environ[BUFFER_ENV] = buffer
        if bootstrap:
            os.environ[BOOTSTRAP_ENV] = bootstrap
        # /metrics sums the request series of every worker from files in this directory (api/metrics.py);
        # an operator's own PROMETHEUS_MULTIPROC_DIR is used as it is (empty it before each start).
        own_dir = None if os.environ.get(MULTIPROC_ENV) else tempfile.mkdtemp(prefix="metrics-pipeline-prometheus-")
        if own_dir:
            os.environ[MULTIPROC_ENV] = own_dir
        try:
            uvicorn.run("metrics_pipeline.api.server:app_in_worker", factory=True, host=host, port=port,
                        workers=workers, log_level="info", server_header=False)
        finally:
            if own_dir:
                os.environ.pop(MULTIPROC_ENV, None)
                shutil.rmtree(own_dir, ignore_errors=True)
        return
    app, keys, writer, reads = build(warehouse, buffer=buffer, bootstrap=bootstrap)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    finally:
        keys.stop()
        writer.close()
        reads.close()
