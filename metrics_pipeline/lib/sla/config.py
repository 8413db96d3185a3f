"""SLA targets and metric-health thresholds (YAML), validated with errors that name the bad key.

Every key, its default and the error a bad value gives: `config/sla.example.yaml` and `docs/configuration.md`.

Each target is resolved on its own: the most specific matching rule that sets it (most match fields
given), ties going to the rule written first, else `defaults`. A rule for PowerBI that only sets
`max_duration_s` therefore keeps the failure-rate target of a broader rule for the same company.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.rollups import DEFAULT_THRESHOLDS
from metrics_pipeline.lib.yaml_config import ConfigError  # noqa: F401 - re-exported for callers

CONFIG_ENV = "METRICS_PIPELINE_SLA_CONFIG"
MATCH_FIELDS = ("company", "zone", "source_system", "object")
TARGET_FIELDS = ("max_failure_rate", "max_duration_s", "max_hours_without_success")


def _percent(value):
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            return float(value.strip()[:-1]) / 100
        except ValueError:
            raise ValueError(f"{value!r} is not a percentage like 5%") from None
    return value


def _fraction(value: float) -> float:
    if not 0 <= value <= 1:
        raise ValueError(f"{value} is not a fraction of runs between 0 and 1 (write 0.05 or \"5%\")")
    return value


FailureRate = Annotated[float, BeforeValidator(_percent), AfterValidator(_fraction)]
Positive = Annotated[float, Field(gt=0)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetricName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=255)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class Targets(_Strict):
    max_failure_rate: FailureRate = 0.05
    max_duration_s: Positive = 1800.0
    max_hours_without_success: Positive = 24.0


class TargetRule(_Strict):
    company: Name | None = None
    zone: Name | None = None
    source_system: Name | None = None
    object: Name | None = None
    max_failure_rate: FailureRate | None = None
    max_duration_s: Positive | None = None
    max_hours_without_success: Positive | None = None

    @model_validator(mode="after")
    def _sets_a_target(self):
        if all(getattr(self, f) is None for f in TARGET_FIELDS):
            raise ValueError(f"a rule must set at least one of {', '.join(TARGET_FIELDS)}")
        return self

    @property
    def specificity(self) -> int:
        return sum(getattr(self, f) is not None for f in MATCH_FIELDS)


class ThresholdGroup(_Strict):
    metrics: list[MetricName] = Field(min_length=1)
    warning: float
    critical: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.critical < self.warning:
            raise ValueError(f"critical ({self.critical}) must be at least warning ({self.warning})")
        return self


def _default_groups() -> list[ThresholdGroup]:
    grouped: dict[tuple[float, float], list[str]] = {}
    for t in DEFAULT_THRESHOLDS:
        grouped.setdefault((t["warning"], t["critical"]), []).append(t["metric"])
    return [ThresholdGroup(metrics=m, warning=w, critical=c) for (w, c), m in grouped.items()]


class MetricsHealthConfig(_Strict):
    """Inputs of `rollups.refresh_health`: time above thresholds, and how long a silent series is
    still expected (and reported as "no data")."""

    thresholds: list[ThresholdGroup] = Field(default_factory=_default_groups)
    no_data_lookback_hours: int = Field(default=24, ge=1, le=24 * 90)

    @field_validator("thresholds")
    @classmethod
    def _one_group_per_metric(cls, value: list[ThresholdGroup]):
        counts = Counter(m for g in value for m in g.metrics)
        repeated = sorted(m for m, n in counts.items() if n > 1)
        if repeated:
            raise ValueError(f"metric(s) {repeated} listed in more than one threshold group")
        return value

    def health_thresholds(self) -> list[dict]:
        """The flat [{"metric", "warning", "critical"}] list `rollups.refresh_health` takes."""
        return [{"metric": m, "warning": g.warning, "critical": g.critical} for g in self.thresholds for m in g.metrics]

    @property
    def no_data_lookback(self) -> timedelta:
        return timedelta(hours=self.no_data_lookback_hours)


class SlaConfig(_Strict):
    defaults: Targets = Field(default_factory=Targets)
    targets: list[TargetRule] = Field(default_factory=list)
    silent_job_lookback_hours: int = Field(default=168, ge=1, le=24 * 90)
    metrics: MetricsHealthConfig = Field(default_factory=MetricsHealthConfig)

    @property
    def silent_job_lookback(self) -> timedelta:
        return timedelta(hours=self.silent_job_lookback_hours)

    def rules_json(self) -> str:
        """The rules as the SQL takes them: file order in `ord`, the defaults last as a catch-all."""
        rules = [{"ord": i, **r.model_dump()} for i, r in enumerate(self.targets)]
        rules.append({"ord": len(rules), **{f: None for f in MATCH_FIELDS}, **self.defaults.model_dump()})
        return json.dumps(rules)


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "sla.yaml")


def parse_config(raw, source: str = "sla config") -> SlaConfig:
    return yaml_config.validate(SlaConfig, raw, source)


def load_config(path: Path | str | None = None) -> SlaConfig:
    """Read and validate the YAML file; a missing file gives the defaults of SPEC §5."""
    return yaml_config.load(SlaConfig, Path(path) if path else default_path())
