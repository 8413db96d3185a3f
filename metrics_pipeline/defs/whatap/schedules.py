"""When WhaTap hours are fetched: closed hour + late re-run, in-progress refresh, catch-up
(see `defs/automation.py`, which also says what a broken configuration does), with the timings of
the WhaTap configuration."""

from metrics_pipeline.defs.automation import api_source_automation
from metrics_pipeline.defs.whatap.assets import whatap_points
from metrics_pipeline.lib.whatap.config import WhatapConfig, load_config

whatap_hourly, whatap_current_hour, whatap_catchup_sensor = api_source_automation(
    whatap_points, "whatap", load_config, WhatapConfig()
)
