"""CloudWatch source configuration (YAML), validated with errors that name the bad key.

Every key, its default and the error a bad value gives: `config/cloudwatch.example.yaml` and `docs/configuration.md`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.yaml_config import ConfigError  # noqa: F401 - re-exported for callers

CONFIG_ENV = "METRICS_PIPELINE_CLOUDWATCH_CONFIG"
ENDPOINT_ENV = "METRICS_PIPELINE_CLOUDWATCH_ENDPOINT_URL"
STATISTICS = ("Average", "Minimum", "Maximum", "Sum", "SampleCount")
_EXTENDED = re.compile(r"^(p|tm|wm|tc|ts)\d{1,2}(\.\d{1,2})?$|^(TM|WM|TC|TS)\(.+\)$|^IQM$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")

Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]


def _period(value: int) -> int:
    if value < 1 or (value < 60 and value not in (1, 5, 10, 30)) or (value >= 60 and value % 60):
        raise ValueError("period_seconds must be 1, 5, 10, 30 or a multiple of 60")
    return value


Statistics = Annotated[list[str], yaml_config.members_of(STATISTICS, "unknown statistic(s)")]
Period = Annotated[int, AfterValidator(_period)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricSelector(_Strict):
    namespace: Name
    metric_names: list[Name] | None = None
    dimensions: dict[str, str | list[str]] = Field(default_factory=dict)
    statistics: Statistics | None = None
    extended_statistics: list[str] = Field(default_factory=list)
    period_seconds: Period | None = None
    tag_filters: dict[str, list[str]] = Field(default_factory=dict)
    resource_type: str | None = None
    units: dict[str, str] = Field(default_factory=dict)

    @field_validator("extended_statistics")
    @classmethod
    def _extended(cls, value):
        bad = [s for s in value if not _EXTENDED.match(s)]
        if bad:
            raise ValueError(f"not an extended statistic: {bad} (e.g. p95, p99.9, tm99, IQM)")
        return value

    @field_validator("tag_filters", mode="before")
    @classmethod
    def _tag_values_as_lists(cls, value):
        if isinstance(value, dict):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class Account(_Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    account_id: str | None = None
    tenant: str | None = Field(default=None, min_length=1, max_length=200)
    regions: list[str] = Field(min_length=1)
    profile: str | None = None
    role_arn: str | None = None
    endpoint_url: str | None = None
    metrics: list[MetricSelector] = Field(min_length=1)

    @field_validator("regions")
    @classmethod
    def _regions(cls, value):
        bad = [r for r in value if not _REGION.match(r)]
        if bad:
            raise ValueError(f"not an AWS region name: {bad} (e.g. eu-west-1)")
        return value


class CloudWatchConfig(_Strict):
    period_seconds: Period = 60
    statistics: Statistics = Field(default_factory=lambda: list(STATISTICS))
    discovery_cache_seconds: int = Field(default=3600, ge=0)
    fetch_delay_minutes: int = Field(default=5, ge=0, le=59)
    late_rerun_hours: int = Field(default=2, ge=1, le=23)
    refresh_current_hour_minutes: int = Field(default=10, ge=0, le=60)
    catchup_hours: int = Field(default=6, ge=0, le=168)
    budget_usd_per_run: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=8, ge=1, le=20)
    accounts: list[Account] = Field(default_factory=list)


    @property
    def configured(self) -> bool:
        return bool(self.accounts)


def parse_config(raw: Any, source: str = "cloudwatch config") -> CloudWatchConfig:
    return yaml_config.validate(CloudWatchConfig, raw, source)


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "cloudwatch.yaml")


def load_config(path: Path | str | None = None) -> CloudWatchConfig:
    """Read and validate the YAML file; a missing file means "not configured" (no accounts)."""
    return yaml_config.load(CloudWatchConfig, Path(path) if path else default_path())
