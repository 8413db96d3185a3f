"""Configuration of the push API (`config/api.yaml`), validated with errors that name the file and key.

Every limit the API applies lives here with the default SPEC §12 settles: body <= 10 MiB, batch
<= 10,000 items, the name and metadata-key grammars, metadata <= 32 keys of values <= 1,024
characters, event text <= 64 KiB, a `ts` window of 6 days back and 5 minutes ahead, and per-key
rate limits. A missing file means the defaults. Every key is documented in `config/api.example.yaml`.

The back window must stay at least one day shorter than the raw retention (`points` in
`config/retention.yaml`): an item stamped at the edge of the window must still find its day's
partition when it is loaded. `check_back_window` is what the API calls before it starts.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.yaml_config import ConfigError

CONFIG_ENV = "METRICS_PIPELINE_API_CONFIG"
NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_.:-]{0,199}"
METADATA_KEY_PATTERN = r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}"
MiB = 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """Token buckets per API key: refilled at the rate, holding `burst_seconds` worth of it."""

    requests_per_second: float = Field(default=200, gt=0)
    items_per_second: float = Field(default=500_000, gt=0)
    burst_seconds: float = Field(default=2, gt=0, le=3600)


class ApiConfig(_Strict):
    max_body_bytes: int = Field(default=10 * MiB, ge=1024, le=1024 * MiB)
    max_batch_items: int = Field(default=10_000, ge=1, le=1_000_000)
    #: distinct series (name + metadata) a tenant may push; a measure that would create more is 422
    max_series_per_tenant: int = Field(default=50_000, ge=1)
    name_pattern: str = NAME_PATTERN
    metadata_key_pattern: str = METADATA_KEY_PATTERN
    max_metadata_keys: int = Field(default=32, ge=0, le=1024)
    max_metadata_value_chars: int = Field(default=1024, ge=1, le=65_536)
    max_unit_chars: int = Field(default=64, ge=0, le=1024)
    max_event_text_bytes: int = Field(default=64 * 1024, ge=0, le=16 * MiB)
    ts_back: timedelta = timedelta(days=6)
    ts_ahead: timedelta = timedelta(minutes=5)
    rate_limit: RateLimit = Field(default_factory=RateLimit)
    #: the landing zone: a local directory or s3://bucket/prefix (default: the project's, settings.landing_url)
    landing: str = Field(default_factory=settings.landing_url, min_length=1)
    #: S3 endpoint override (MinIO, moto); default $METRICS_PIPELINE_S3_ENDPOINT_URL
    s3_endpoint_url: str | None = Field(default_factory=lambda: os.environ.get(settings.S3_ENDPOINT_ENV) or None)
    #: with an S3 landing zone: where batches are fsync'd before the 202 and uploaded from
    spool_dir: str = Field(default_factory=lambda: str(settings.state_dir() / "spool" / "api"), min_length=1)
    #: with an S3 landing zone: 202 only once the batch's file is uploaded (nodes with ephemeral disks)
    wait_for_upload: bool = False
    #: with an S3 landing zone: a spool file is finished and uploaded at the end of its minute or after this long
    upload_after: timedelta = timedelta(seconds=15)
    #: where `Idempotency-Key`s are remembered (shared by the worker processes of one host)
    idempotency_dir: str = Field(default_factory=lambda: str(settings.state_dir() / "idempotency"), min_length=1)
    #: how long a key is remembered (SPEC §12: 24 h)
    idempotency_ttl: timedelta = timedelta(hours=24)
    #: MiB of decoded rollup sketches each worker process keeps for summaries (lib/query.py SketchCache; 0: off)
    sketch_cache_mb: int = Field(default=64, ge=0, le=64 * 1024)

    _source: str = PrivateAttr(default="api config")

    @field_validator("ts_back", "ts_ahead", "upload_after", "idempotency_ttl", mode="before")
    @classmethod
    def _duration(cls, value):
        return yaml_config.parse_duration(value)

    @field_validator("ts_back")
    @classmethod
    def _back(cls, value: timedelta) -> timedelta:
        if not timedelta(minutes=1) <= value <= timedelta(days=3650):
            raise ValueError("must be between 1m and 3650d")
        return value

    @field_validator("ts_ahead")
    @classmethod
    def _ahead(cls, value: timedelta) -> timedelta:
        if not timedelta(0) <= value <= timedelta(days=1):
            raise ValueError("must be between 0s and 1d")
        return value

    @field_validator("upload_after")
    @classmethod
    def _upload_after(cls, value: timedelta) -> timedelta:
        if not timedelta(seconds=1) <= value <= timedelta(minutes=1):
            raise ValueError("must be between 1s and 60s")
        return value

    @field_validator("name_pattern", "metadata_key_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression ({exc})") from None
        return value

    @property
    def source(self) -> str:
        """The file this configuration was read from (for messages)."""
        return self._source

    def check_back_window(self, raw_retention_days: float | timedelta) -> None:
        """Raise ConfigError unless `ts_back` is at least one day shorter than the raw retention.

        An item stamped `ts_back` ago lands in a day partition of `points` that retention must not
        drop before the item is loaded; the day of margin covers the load and the partition's width.
        The API refuses to start when this fails.

        Args:
            raw_retention_days: `points` of the retention configuration, in days or as a timedelta.
        """
        retention = (raw_retention_days if isinstance(raw_retention_days, timedelta)
                     else timedelta(days=raw_retention_days))
        if self.ts_back > retention - timedelta(days=1):
            raise ConfigError(
                f"{self.source}: ts_back: {human_duration(self.ts_back)} must be at least one day shorter than the raw "
                f"retention (points: {human_duration(retention)} in the retention configuration); shorten ts_back to "
                f"{human_duration(max(retention - timedelta(days=1), timedelta(0)))} or keep raw points longer")


def human_duration(delta: timedelta) -> str:
    """`6 days`, `5 minutes`, `90 seconds`: how messages name a configured duration."""
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def parse_config(raw: Any, source: str = "api config") -> ApiConfig:
    config = yaml_config.validate(ApiConfig, raw, source)
    config._source = source
    return config


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "api.yaml")


def load_config(path: Path | str | None = None) -> ApiConfig:
    """Read and validate the YAML file (`$METRICS_PIPELINE_API_CONFIG`, else `config/api.yaml`);
    a missing file means the defaults."""
    path = Path(path) if path else default_path()
    if not path.exists():
        return ApiConfig()
    return parse_config(yaml_config.read_yaml(path), str(path))
