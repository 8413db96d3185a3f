"""`config/anomalies.yaml`: which series are scored, and when an anomaly becomes an alert.

Every key, its default and the error a bad value gives: `config/anomalies.example.yaml` and
`docs/configuration.md`. A missing file gives the defaults: every series of every point source is
scored, and a bucket is flagged at the benchmark's threshold. A broken file fails the
`anomaly_scores` runs (and its `anomalies` check) with the file and the key named; nothing else
reads it, so every other asset keeps running.

Two stages, two sets of keys:
* **scoring** (the asset): `sources`, `metrics`, `match`, `exclude` choose the series; `threshold`,
  `min_change`, `outside_band` and `warm_up` decide which buckets are `flagged` in `v_anomalies`. A change applies to the hours
  scored from then on (re-materialise older hours to re-judge them);
* **alerting** (the check): an episode starts at a flagged bucket and lasts while the surprise stays
  at or above `threshold`; it fires once it has lasted `min_duration`, as `warning`, and as
  `critical` once its peak score reaches `critical_score` and it has lasted `critical_after`.
  `mutes` silence series by label (until a time, or for good). Read by every check run.
"""

from __future__ import annotations

import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.yaml_config import ConfigError  # noqa: F401 - re-exported for callers

CONFIG_ENV = "METRICS_PIPELINE_ANOMALIES_CONFIG"
#: The NAB standard-profile optimum of the detector (docs/anomalies.md, "Results on NAB"): the
#: threshold at which the benchmark scores it, chosen as NAB chooses it. Not tuned on our own data.
DEFAULT_THRESHOLD = 0.5613
#: What every point source is called (lib/sources.py), for `sources`.
KNOWN_SOURCES = ("host", "cloudwatch", "whatap", "custom")
#: Keys a matcher may name besides the series' own labels.
SERIES_FIELDS = ("source", "metric", "resource", "tenant")

Duration = Annotated[timedelta, BeforeValidator(lambda v: yaml_config.parse_duration(v))]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$", max_length=100)]


def _regexes(value: dict[str, str] | list[str], what: str):
    for pattern in (value.values() if isinstance(value, dict) else value):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"{what}: {pattern!r} is not a regular expression ({exc})") from None
    return value


Matcher = Annotated[dict[LabelName, str], BeforeValidator(lambda v: v if not isinstance(v, dict) else
                                                          {str(k): str(x) for k, x in v.items()})]


def matches(matcher: dict[str, str], fields: dict[str, str]) -> bool:
    """Every label regex of `matcher` matches the whole value of that field (like PromQL `=~`)."""
    return all(re.fullmatch(pattern, fields.get(key) or "") is not None for key, pattern in matcher.items())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Mute(_Strict):
    """Series whose anomalies raise no alert: by label, for good or until a time."""

    match: Matcher
    until: datetime | None = None
    reason: str = ""

    @field_validator("match")
    @classmethod
    def _valid(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("a mute needs at least one label matcher")
        return _regexes(value, "match")

    @field_validator("until")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)  # a bare date-time is UTC, like every bucket
        return value

    def mutes(self, fields: dict[str, str], at: datetime) -> bool:
        return matches(self.match, fields) and (self.until is None or at < self.until)


class AnomaliesConfig(_Strict):
    #: false: the asset scores nothing (and says so), the check raises nothing
    enabled: bool = True
    #: point sources whose series are scored (default: every one)
    sources: list[str] = Field(default_factory=lambda: list(KNOWN_SOURCES))
    #: metric names, regular expressions matching the whole name (default: every metric)
    metrics: list[str] = Field(default_factory=list)
    #: label matchers every scored series must satisfy
    match: Matcher = Field(default_factory=dict)
    #: series matching any of these are not scored
    exclude: list[Matcher] = Field(default_factory=list)
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0, le=1)
    #: a flagged bucket differs from the expected value by at least this share of the larger of the
    #: two: the tiny moves of a flat series (a disk filling by hundredths of a percent, a gauge's
    #: last-digit jitter) are not anomalies, however rare the detector finds them
    min_change: float = Field(default=0.01, ge=0, lt=1)
    #: true: only a bucket outside the band of normal values is flagged (fewer, plainer anomalies; an
    #: unusual run or pattern within the band is not)
    outside_band: bool = False
    warm_up: Duration = timedelta(days=1)
    min_duration: Duration = timedelta(0)
    critical_score: float = Field(default=0.9, gt=0, le=1)
    critical_after: Duration = timedelta(minutes=30)
    mutes: list[Mute] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _sources(cls, value: list[str]) -> list[str]:
        bad = sorted(set(value) - set(KNOWN_SOURCES))
        if bad:
            raise ValueError(f"unknown source(s) {bad}; use {', '.join(KNOWN_SOURCES)}")
        return value

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: list[str]) -> list[str]:
        return _regexes(value, "metrics")

    @field_validator("match")
    @classmethod
    def _match(cls, value: dict[str, str]) -> dict[str, str]:
        return _regexes(value, "match")

    @field_validator("exclude")
    @classmethod
    def _exclude(cls, value: list[dict[str, str]]) -> list[dict[str, str]]:
        for i, matcher in enumerate(value):
            if not matcher:
                raise ValueError(f"exclude[{i}] is empty: it would exclude every series")
            _regexes(matcher, f"exclude[{i}]")
        return value

    @field_validator("warm_up", "min_duration", "critical_after")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("must not be negative")
        return value

    @model_validator(mode="after")
    def _critical_above_threshold(self):
        if self.critical_score < self.threshold:
            raise ValueError(f"critical_score ({self.critical_score}) must be at least threshold ({self.threshold})")
        return self

    def selects(self, fields: dict[str, str]) -> bool:
        """Whether a series (its labels plus source, metric, resource, tenant) is scored."""
        if fields.get("source") not in self.sources:
            return False
        if self.metrics and not any(re.fullmatch(p, fields.get("metric") or "") for p in self.metrics):
            return False
        return matches(self.match, fields) and not any(matches(m, fields) for m in self.exclude)

    def muted(self, fields: dict[str, str], at: datetime) -> Mute | None:
        """The first mute that silences this series at `at`, if any."""
        return next((m for m in self.mutes if m.mutes(fields, at)), None)


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "anomalies.yaml")


def load_config(path: Path | str | None = None) -> AnomaliesConfig:
    """Read and validate the YAML file; a missing file gives the defaults. Errors name the file and key:
    `anomalies.yaml: threshold: Input should be less than or equal to 1`."""
    return yaml_config.load(AnomaliesConfig, Path(path) if path else default_path())
