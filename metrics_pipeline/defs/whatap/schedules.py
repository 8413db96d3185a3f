"""When WhaTap hours are fetched: closed hour + late re-run, in-progress refresh, catch-up
(see `defs/automation.py`), with the timings of the WhaTap configuration."""

from metrics_pipeline.defs.automation import api_source_automation
from metrics_pipeline.defs.whatap.assets import whatap_points
from metrics_pipeline.lib.whatap.config import WhatapConfig, load_config

try:
    _SETTINGS = load_config()
except ValueError:
    _SETTINGS = WhatapConfig()  # the asset reports the configuration error when it runs

whatap_hourly, whatap_current_hour, whatap_catchup_sensor = api_source_automation(
    whatap_points, "whatap", _SETTINGS
)
