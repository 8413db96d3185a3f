"""Resources shared by every domain, defined once.

The warehouse DSN is a secret (it may carry a password), so it only ever comes from the environment
through `EnvVar`; `make dev` and the CLI export it after starting the embedded PostgreSQL. The
resource is a thin wrapper: loading and migrations are plain Python in `metrics_pipeline.lib`.
"""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import dagster as dg
import pandas as pd
import psycopg
from pydantic import Field

from metrics_pipeline.lib import landing, settings
from metrics_pipeline.lib.warehouse import db
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.settings import DEFAULT_SCHEMA, DSN_ENV, schema_name, validate_identifier


class WarehouseResource(dg.ConfigurableResource):
    """PostgreSQL warehouse: where every asset writes, through set-based SQL and the COPY loader."""

    dsn: str = Field(description="libpq DSN of the warehouse database (from METRICS_PIPELINE_DSN).")
    schema_name: str = Field(default=DEFAULT_SCHEMA, description="Schema holding every project table.")

    @property
    def schema(self) -> str:
        return validate_identifier(self.schema_name, what="schema_name")

    def migrate(self) -> list[int]:
        """Apply pending migrations; returns the versions applied."""
        return migrate.migrate(self.dsn, self.schema)

    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection to a migrated warehouse; use `conn.transaction()` for atomic work."""
        migrate.ensure_migrated(self.dsn, self.schema)
        with db.connect(self.dsn, autocommit=True) as conn:
            yield conn

    def load_points(self, frame: pd.DataFrame, *, source: str, start: datetime, end: datetime, **kwargs) -> loader.LoadResult:
        """Replace `source`'s points in [start, end) with `frame` (see `lib.loader.load_points`)."""
        return loader.load_points(self.dsn, frame, source=source, start=start, end=end, schema=self.schema, **kwargs)


class LandingZoneResource(dg.ConfigurableResource):
    """Where agents and jobs drop files: a local directory (default) or `s3://bucket/prefix`."""

    url: str = Field(description="Local directory or s3://bucket/prefix (from METRICS_PIPELINE_LANDING).")
    endpoint_url: str | None = Field(default=None, description="S3 endpoint override (MinIO, moto in tests).")
    region_name: str | None = Field(default=None, description="AWS region of the bucket.")

    def zone(self) -> landing.LandingZone:
        return landing.open_landing(self.url, endpoint_url=self.endpoint_url or None, region_name=self.region_name)



@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "warehouse": WarehouseResource(dsn=dg.EnvVar(DSN_ENV), schema_name=schema_name()),
            "landing": LandingZoneResource(
                url=settings.landing_url(), endpoint_url=os.environ.get(settings.S3_ENDPOINT_ENV) or None
            ),
        },
    )
