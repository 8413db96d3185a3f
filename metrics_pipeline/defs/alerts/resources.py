"""Where alerts are delivered: Alertmanager and/or a JSON webhook, from the environment.

The webhook URL is a secret (a Slack incoming-webhook URL is a credential): it reaches the sensor
only through `EnvVar`, so the UI shows the variable's name, never its value. A target whose
variable is unset is simply not configured.
"""

import os

import dagster as dg
from pydantic import Field

ALERTMANAGER_URL_ENV = "METRICS_PIPELINE_ALERTMANAGER_URL"
WEBHOOK_URL_ENV = "METRICS_PIPELINE_ALERT_WEBHOOK_URL"


class AlertTargetsResource(dg.ConfigurableResource):
    """Alert delivery targets: Alertmanager's base URL and a Slack-compatible webhook URL."""

    alertmanager_url: str | None = Field(default=None, description=f"e.g. http://alertmanager:9093 ({ALERTMANAGER_URL_ENV}).")
    webhook_url: str | None = Field(default=None, description=f"Slack-compatible webhook, a secret ({WEBHOOK_URL_ENV}).")


def _env(name: str):
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    return dg.Definitions(resources={
        "alert_targets": AlertTargetsResource(alertmanager_url=_env(ALERTMANAGER_URL_ENV), webhook_url=_env(WEBHOOK_URL_ENV)),
    })
