"""The WhaTap resource: which projects to collect (a YAML file naming the token variables) and how."""

import dagster as dg
from pydantic import Field

from metrics_pipeline.lib.whatap.config import WhatapConfig, default_path, load_config


class WhatapResource(dg.ConfigurableResource):
    """Which WhaTap projects to collect (a YAML file naming the token variables) and how."""

    config_path: str = Field(description="YAML configuration (METRICS_PIPELINE_WHATAP_CONFIG).")

    def load(self) -> WhatapConfig:
        return load_config(self.config_path)


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={"whatap": WhatapResource(config_path=str(default_path()))})
