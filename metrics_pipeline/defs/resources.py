"""Resources shared by every domain, defined once.

The warehouse DSN is a secret (it may carry a password), so it only ever comes from the environment
through `EnvVar`; `make dev` and the CLI export it after starting the embedded PostgreSQL. The
resource hands out one thing, a `lib.warehouse.db.Warehouse`, which every library entry point takes:
assets, checks and sensors never hold a DSN or write SQL themselves. Migrations (and the BI grants
they refresh) run when the resource is set up for a run or a sensor tick, never from a write path.
"""

import os

import dagster as dg
from pydantic import Field

from metrics_pipeline.lib import landing, settings
from metrics_pipeline.lib.settings import DEFAULT_SCHEMA, DSN_ENV, schema_name, validate_identifier
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """PostgreSQL warehouse: where every asset writes, through set-based SQL and the COPY loader."""

    dsn: str = Field(description="libpq DSN of the warehouse database (from METRICS_PIPELINE_DSN).")
    schema_name: str = Field(default=DEFAULT_SCHEMA, description="Schema holding every project table.")

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        # Cheap when there is nothing to apply (one advisory lock and one SELECT).
        applied = migrate.migrate(self.get())
        if applied and context.log:
            context.log.info(f"applied warehouse migrations {applied}")

    def get(self) -> Warehouse:
        """The warehouse, for the `lib` functions."""
        return Warehouse(self.dsn, validate_identifier(self.schema_name, what="schema_name"))


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
