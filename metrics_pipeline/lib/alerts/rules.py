"""Alert rules (`config/alerts.yaml`), validated with errors that name the rule and the key.

Every key, its default and the error a bad value gives: `config/alerts.example.yaml` and `docs/configuration.md`.
`kind: sla` rules read `sla_hourly` instead of points: `column` is one of its columns
(`failure_rate`, `duration_p95_s`, `sla_breaches`, `time_since_last_success_s`) and `match` applies
to company, zone, source_system and object. Without a file, the SPEC §6 defaults below apply;
a file's `rules` replace them unless it says `include_defaults: true`.
"""

from __future__ import annotations

import os
import re
import string
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator, model_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.alerts.evaluate import OPERATORS
from metrics_pipeline.lib.yaml_config import ConfigError

CONFIG_ENV = "METRICS_PIPELINE_ALERTS_CONFIG"
SLA_COLUMNS = ("failure_rate", "duration_p95_s", "duration_max_s", "sla_breaches", "time_since_last_success_s", "failures")
SLA_MATCH = ("company", "zone", "source_system", "object")
TEMPLATE_FIELDS = {"alertname", "resource", "metric", "source", "value", "threshold", "for", "severity", "labels"}
#: Labels the pipeline sets itself; a rule may not override them.
RESERVED_LABELS = {"alertname", "severity", "source", "metric", "resource", "series_id"}

Duration = Annotated[timedelta, BeforeValidator(lambda v: yaml_config.parse_duration(v))]
RuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]
LabelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=100)]


#: `{name}` or `{labels[key]}`: no attribute access and no other indexing, which would let a template
#: walk from any value to module globals and `os.environ`, and send secrets out with the alert.
_TEMPLATE_FIELD = re.compile(r"^(?P<root>[a-z]+)(\[[A-Za-z0-9_]+\])?$")


def _check_template(text: str) -> str:
    try:
        parsed = [(f, spec) for _, f, spec, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ValueError(f"broken template {text!r}: {exc}") from None
    for field, spec in parsed:
        root = re.split(r"[.\[]", field, maxsplit=1)[0]
        if root not in TEMPLATE_FIELDS:
            raise ValueError(f"unknown template field {{{field}}}; use {', '.join(sorted(TEMPLATE_FIELDS))}")
        match = _TEMPLATE_FIELD.match(field)
        if not match or (match.group(2) and root != "labels") or "{" in (spec or ""):
            raise ValueError(f"template field {{{field}}} may only be a name or labels[name] "
                             "(no attributes, no nested fields)")
    return text


Template = Annotated[str, BeforeValidator(lambda v: _check_template(str(v)))]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Rule(_Strict):
    name: RuleName
    kind: Literal["metric", "sla"] = "metric"
    metrics: list[Annotated[str, StringConstraints(min_length=1)]] = Field(default_factory=list)
    source: str | None = None
    column: Literal[SLA_COLUMNS] | None = None  # type: ignore[valid-type]
    match: dict[LabelName, str] = Field(default_factory=dict)
    op: Literal[tuple(OPERATORS)] = ">"  # type: ignore[valid-type]
    threshold: float
    hold: Duration = Field(default=timedelta(0), alias="for")
    severity: Literal["warning", "critical"]
    max_gap: Duration | None = None
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[LabelName, Template] = Field(default_factory=dict)

    @field_validator("match")
    @classmethod
    def _regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match.{label}: {pattern!r} is not a regular expression ({exc})") from None
        return value

    @field_validator("labels")
    @classmethod
    def _not_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        clash = sorted(set(value) & RESERVED_LABELS)
        if clash:
            raise ValueError(f"labels {clash} are set by the pipeline and cannot be overridden")
        return value

    @model_validator(mode="after")
    def _kind_fields(self):
        if self.kind == "metric":
            if not self.metrics:
                raise ValueError("a metric rule needs `metrics` (a list of metric names)")
            if self.column is not None:
                raise ValueError("`column` is for kind: sla rules")
        else:
            if self.column is None:
                raise ValueError(f"a kind: sla rule needs `column`, one of {', '.join(SLA_COLUMNS)}")
            if self.metrics or self.source:
                raise ValueError("`metrics` and `source` are for kind: metric rules")
            bad = sorted(set(self.match) - set(SLA_MATCH))
            if bad:
                raise ValueError(f"an sla rule matches on {', '.join(SLA_MATCH)}, not {bad}")
        if self.max_gap is not None and self.max_gap <= timedelta(0):
            raise ValueError("max_gap must be positive")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether a series' (or SLA row's) labels satisfy every matcher (full regex match)."""
        return all(re.fullmatch(p, labels.get(k, "")) is not None for k, p in self.match.items())


def _metric_rule(name, metrics, threshold, hold, severity, what):
    return Rule(
        name=name, metrics=metrics, threshold=threshold, hold=hold, severity=severity,
        annotations={
            "summary": f"{what} above {threshold:g} % on {{resource}}",
            "description": f"{{metric}} on {{resource}} reached {{value:.1f}} % and stayed above {threshold:g} % for {{for}}",
        },
    )


CPU = ["host_cpu_percent", "aws_ec2_cpuutilization", "whatap_server_cpu"]
MEMORY = ["host_memory_percent", "whatap_server_memory"]
DISK = ["host_filesystem_used_percent", "whatap_server_disk_used", "whatap_server_disk_usedpercent"]

#: SPEC §6 defaults.
DEFAULT_RULES: tuple[Rule, ...] = (
    _metric_rule("CpuHigh", CPU, 80, timedelta(minutes=5), "warning", "CPU"),
    _metric_rule("CpuHigh", CPU, 95, timedelta(minutes=1), "critical", "CPU"),
    _metric_rule("MemoryHigh", MEMORY, 85, timedelta(minutes=5), "warning", "Memory"),
    _metric_rule("MemoryHigh", MEMORY, 95, timedelta(minutes=1), "critical", "Memory"),
    _metric_rule("DiskUsageHigh", DISK, 80, timedelta(minutes=5), "warning", "Disk usage"),
    _metric_rule("DiskUsageHigh", DISK, 90, timedelta(minutes=5), "critical", "Disk usage"),
    Rule(name="IngestionFailureRateHigh", kind="sla", column="failure_rate", threshold=0.05, severity="warning",
         annotations={"summary": "ingestion failure rate above 5 % for {resource}",
                      "description": "{resource}: {value:.0%} of runs failed in the hour"}),
    Rule(name="IngestionDurationSlaBreached", kind="sla", column="sla_breaches", threshold=0, severity="warning",
         annotations={"summary": "ingestion runs over their duration target for {resource}",
                      "description": "{resource}: {value:.0f} run(s) exceeded the duration SLA in the hour"}),
)


class AlertsConfig(_Strict):
    include_defaults: bool = False
    rules: list[Rule] = Field(default_factory=lambda: list(DEFAULT_RULES))
    #: How late each source's data normally lands (e.g. `host: 2m`, `cloudwatch: 20m`): a hold whose
    #: series went quiet is resolved only once the clock minus this is past its gap tolerance, so the
    #: data lagging the clock never ends a condition. Sources not listed keep the engine's defaults.
    data_lag: dict[Annotated[str, StringConstraints(pattern=r"^[a-z_][a-z0-9_]*$", max_length=100)], Duration] = Field(
        default_factory=dict)

    @model_validator(mode="after")
    def _defaults_and_unique(self):
        seen = set()
        for rule in self.rules:
            key = (rule.name, rule.severity, rule.kind, tuple(sorted(rule.match.items())), tuple(rule.metrics))
            if key in seen:
                raise ValueError(f"rule {rule.name!r} ({rule.severity}) is defined twice for the same series")
            seen.add(key)
        return self

    @property
    def effective_rules(self) -> list[Rule]:
        if self.include_defaults and list(self.rules) != list(DEFAULT_RULES):
            return [*DEFAULT_RULES, *self.rules]
        return list(self.rules)


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "alerts.yaml")


def parse_config(raw, source: str = "alerts config") -> AlertsConfig:
    """Validate parsed YAML; errors say `rules[2] (CpuHigh).threshold: ...`."""
    try:
        return yaml_config.validate(AlertsConfig, raw, source)
    except ConfigError as exc:
        message = str(exc)
        rules = raw.get("rules") if isinstance(raw, dict) else None
        if isinstance(rules, list):
            def name(match: re.Match) -> str:
                i = int(match.group(1))
                rule = rules[i] if i < len(rules) else None
                label = rule.get("name") if isinstance(rule, dict) else None
                return f"rules[{i}] ({label})" if label else match.group(0)

            message = re.sub(r"rules\[(\d+)\]", name, message)
        raise ConfigError(message) from None


def load_config(path: Path | str | None = None) -> AlertsConfig:
    """Read and validate the YAML file; a missing file gives the SPEC §6 default rules."""
    path = Path(path) if path else default_path()
    if not path.exists():
        return AlertsConfig()
    return parse_config(yaml_config.read_yaml(path), str(path))
