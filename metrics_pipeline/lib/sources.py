"""Which point sources exist and which are configured, decided one way for everyone.

Every source that writes `points` is listed here once: the rollups depend on all of them, the checks
are built for each, the freshness checks watch the configured ones. An API source (CloudWatch,
WhaTap) is configured when its configuration file lists something to collect; an absent file is the
documented default, "not configured": its asset then records "not configured" and the rollups do not
wait for it. A file that exists but is broken counts as configured: its asset, schedules and sensor
fail with the error that names the file and key, while every other source keeps running. `make dev`
starts a local double for an unconfigured source. Pushed measures (`custom`, the push API) are a
file source that is never "configured": nothing is collected, so no freshness deadline applies.
"""

from __future__ import annotations

import dataclasses

from metrics_pipeline.lib.cloudwatch import config as cloudwatch_config
from metrics_pipeline.lib.whatap import config as whatap_config


@dataclasses.dataclass(frozen=True)
class PointSource:
    name: str  # the `source` of its series
    asset: str  # the asset that loads it
    api: bool  # pulled from an API on a schedule (else: files landing when they land)
    #: pushed by applications when they have something to say (the push API): nothing is collected,
    #: so no hour is expected to hold data (no freshness deadline) and no hour waits for it
    pushed: bool = False


POINT_SOURCES = (
    PointSource("host", "host_points", api=False),
    PointSource("cloudwatch", "cloudwatch_points", api=True),
    PointSource("whatap", "whatap_points", api=True),
    # Measures applications push through the API (lib/custom/load.py): files, like host samples.
    PointSource("custom", "custom_points", api=False, pushed=True),
)
POINT_ASSETS = tuple(s.asset for s in POINT_SOURCES)

_LOADERS = {"cloudwatch": cloudwatch_config.load_config, "whatap": whatap_config.load_config}


def configured(source: str) -> bool:
    """True when `source` has something to collect: always for file sources; for an API source,
    when its configuration lists something, or is broken (so that its runs fail loudly); never for
    a pushed source (`custom`: applications send when they send, an hour without data is normal)."""
    if any(s.pushed and s.name == source for s in POINT_SOURCES):
        return False
    if source not in _LOADERS:
        return True
    try:
        return _LOADERS[source]().configured
    except (ValueError, OSError):
        return True


def optional_point_assets() -> list[str]:
    """Point assets that never hold the rollups back: file sources, and API sources not configured."""
    return [s.asset for s in POINT_SOURCES if not s.api or not configured(s.name)]
