"""When CloudWatch hours are fetched: closed hour + late re-run, in-progress refresh, catch-up
(see `defs/automation.py`, which also says what a broken configuration does), with the timings of
the CloudWatch configuration."""

from metrics_pipeline.defs.automation import api_source_automation
from metrics_pipeline.defs.cloudwatch.assets import cloudwatch_points
from metrics_pipeline.lib.cloudwatch.config import CloudWatchConfig, load_config

cloudwatch_hourly, cloudwatch_current_hour, cloudwatch_catchup_sensor = api_source_automation(
    cloudwatch_points, "cloudwatch", load_config, CloudWatchConfig()
)
