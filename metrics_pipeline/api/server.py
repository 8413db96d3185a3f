"""`metrics-pipeline api`: the application on uvicorn, with its key ring and landing writer.

The API needs the warehouse only for its keys, which it keeps in memory (`KeyRing`): it accepts
pushes while the warehouse is down, the landing zone being the buffer (SPEC §12), and reports the
warehouse's reachability on /healthz as detail.
"""

from __future__ import annotations

import logging

import psycopg

from metrics_pipeline.lib import api_keys
from metrics_pipeline.lib.custom import config as api_config
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.warehouse import retention
from metrics_pipeline.lib.warehouse.db import Warehouse

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


def build(warehouse: Warehouse, config: api_config.ApiConfig | None = None):
    """The application and what it owns (started key ring, writer); the caller stops them."""
    from metrics_pipeline.api.app import create_app

    config = config or api_config.load_config()
    config.check_back_window(retention.load_config().points)
    keys = api_keys.KeyRing(warehouse)
    keys.start()
    writer = PushWriter(config)
    app = create_app(config=config, keys=keys, writer=writer, warehouse_check=warehouse_check(warehouse))
    return app, keys, writer


def serve(warehouse: Warehouse, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    app, keys, writer = build(warehouse)
    log.info("metrics_pipeline API on http://%s:%d (OpenAPI at /docs)", host, port)
    try:
        uvicorn.run(app, host=host, port=port, log_level="info", server_header=False)
    finally:
        keys.stop()
        writer.close()
