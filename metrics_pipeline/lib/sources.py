"""Whether the API sources (CloudWatch, WhaTap) are configured, decided one way for everyone.

`make dev` starts a local double for an unconfigured source, and the rollups do not wait for one.
A configuration file that exists but is broken counts as configured: its asset fails with the
error that names the bad key, rather than being silently replaced by a demo or ignored.
"""

from __future__ import annotations

from metrics_pipeline.lib.cloudwatch import config as cloudwatch_config
from metrics_pipeline.lib.whatap import config as whatap_config

_LOADERS = {"cloudwatch": cloudwatch_config.load_config, "whatap": whatap_config.load_config}


def configured(source: str) -> bool:
    """True when `source` ("cloudwatch" or "whatap") has a configuration to collect with."""
    try:
        return _LOADERS[source]().configured
    except (ValueError, OSError):
        return True
