"""The CloudWatch resource: which accounts, regions and metrics to collect, and where the API is."""

import os

import dagster as dg
from pydantic import Field

from metrics_pipeline.lib.cloudwatch.config import ENDPOINT_ENV, CloudWatchConfig, default_path, load_config


class CloudWatchResource(dg.ConfigurableResource):
    """Which accounts, regions and metrics to collect (a YAML file) and an optional endpoint override."""

    config_path: str = Field(description="YAML configuration (METRICS_PIPELINE_CLOUDWATCH_CONFIG).")
    endpoint_url: str | None = Field(default=None, description="CloudWatch endpoint override (moto in tests/demo).")

    def load(self) -> CloudWatchConfig:
        return load_config(self.config_path)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(
        resources={
            "cloudwatch": CloudWatchResource(
                config_path=str(default_path()), endpoint_url=os.environ.get(ENDPOINT_ENV) or None
            )
        }
    )
