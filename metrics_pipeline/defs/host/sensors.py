"""The host sensor: load each hour once its files are complete, refresh the current hour (SPEC §4).

Off by default (like every sensor and schedule here); `make dev` turns it on. Each tick reads the host
configuration too, so a broken one fails the ticks (naming the file and key) as well as the runs.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.automation import AUTOMATION_STATUS
from metrics_pipeline.defs.host.assets import REASON_TAG, host_points
from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.defs.resources import LandingZoneResource
from metrics_pipeline.lib.host.config import load_config
from metrics_pipeline.lib.host.files import HostSensorState, plan_host_requests

REFRESH_EVERY = timedelta(minutes=5)


@dg.sensor(
    target=host_points,
    minimum_interval_seconds=60,
    default_status=AUTOMATION_STATUS,
    description="Requests host_points for each hour once its files are complete, late files, and "
    "the in-progress hour every 5 minutes.",
)
def host_points_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource) -> dg.SensorResult:
    load_config()  # a broken host configuration fails the tick loudly, not only the runs it requests
    state = HostSensorState.decode(context.cursor)
    requests, state = plan_host_requests(landing.zone(), state, datetime.now(timezone.utc), refresh_every=REFRESH_EVERY)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=r.run_key,
                partition_key=hour_key(r.hour),
                tags={REASON_TAG: r.reason},
            )
            for r in requests
        ],
        cursor=state.encode(),
    )
