"""When CloudWatch hours are fetched: closed hour + late re-run, in-progress refresh, catch-up
(see `defs/automation.py`), with the timings of the CloudWatch configuration."""

from metrics_pipeline.defs.automation import api_source_automation
from metrics_pipeline.defs.cloudwatch.assets import cloudwatch_points
from metrics_pipeline.lib.cloudwatch.config import CloudWatchConfig, load_config

try:
    _SETTINGS = load_config()
except ValueError:
    _SETTINGS = CloudWatchConfig()  # the asset reports the configuration error when it runs

cloudwatch_hourly, cloudwatch_current_hour, cloudwatch_catchup_sensor = api_source_automation(
    cloudwatch_points, "cloudwatch", _SETTINGS
)
