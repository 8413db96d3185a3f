"""Where the project keeps its state, and the environment variables that override it.

Every command (CLI, `make dev`, tests, Dagster resources) reads its settings through these few
functions so that one environment variable means the same thing everywhere.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: A libpq DSN of the warehouse database. When set, no embedded server is started.
DSN_ENV = "METRICS_PIPELINE_DSN"
#: Where the project keeps generated state (embedded PostgreSQL, Dagster home, landing zone).
HOME_ENV = "METRICS_PIPELINE_HOME"
#: Schema holding every project table (default `metrics`).
SCHEMA_ENV = "METRICS_PIPELINE_SCHEMA"
#: The landing zone: a local directory or s3://bucket/prefix (default `.metrics_pipeline/landing`).
LANDING_ENV = "METRICS_PIPELINE_LANDING"
#: Set by `make dev`: schedules and sensors start running (they are off by default otherwise).
DEMO_ENV = "METRICS_PIPELINE_DEMO"
#: Timezone of naive timestamps in ingestion logs (IANA name, default UTC).
LOG_TIMEZONE_ENV = "METRICS_PIPELINE_LOG_TIMEZONE"
#: S3 endpoint override for the landing zone (MinIO, moto in tests and the demo).
S3_ENDPOINT_ENV = "METRICS_PIPELINE_S3_ENDPOINT_URL"

DEFAULT_SCHEMA = "metrics"
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def project_root() -> Path:
    """The checkout this package runs from, or the working directory for an installed package."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file() and (here / "metrics_pipeline").is_dir():
        return here
    return Path.cwd()


def state_dir() -> Path:
    """Directory for generated state: `$METRICS_PIPELINE_HOME` or `.metrics_pipeline/` in the project."""
    configured = os.environ.get(HOME_ENV)
    return Path(configured).expanduser().resolve() if configured else project_root() / ".metrics_pipeline"


def schema_name() -> str:
    """The warehouse schema, validated as a plain lower-case SQL identifier."""
    return validate_identifier(os.environ.get(SCHEMA_ENV, DEFAULT_SCHEMA), what=SCHEMA_ENV)


def validate_identifier(name: str, *, what: str) -> str:
    """Return `name` if it is a safe unquoted PostgreSQL identifier, else raise ValueError."""
    if not isinstance(name, str) or not _IDENTIFIER.match(name):
        raise ValueError(
            f"{what} must be a lower-case SQL identifier (letters, digits, underscore; at most 63 "
            f"characters, not starting with a digit); got {name!r}"
        )
    return name


def landing_url() -> str:
    """`$METRICS_PIPELINE_LANDING`, or `landing/` in the state directory."""
    return os.environ.get(LANDING_ENV) or str(state_dir() / "landing")


def log_timezone() -> str:
    """The timezone naive ingestion-log timestamps are read in, validated."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get(LOG_TIMEZONE_ENV, "UTC")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{LOG_TIMEZONE_ENV} must be an IANA timezone such as Europe/Paris, got {name!r}") from None
    return name


def demo_mode() -> bool:
    """True under `make dev`: automation starts on. Production turns it on deliberately in the UI."""
    return os.environ.get(DEMO_ENV, "").lower() in ("1", "true", "yes")


DAGSTER_URL_ENV = "METRICS_PIPELINE_DAGSTER_URL"


def dagster_url() -> str:
    """Where people open the Dagster UI: alert links (`generatorURL`) point at runs there."""
    return (os.environ.get(DAGSTER_URL_ENV) or "http://127.0.0.1:3000").rstrip("/")
