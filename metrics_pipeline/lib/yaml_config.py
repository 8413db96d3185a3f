"""YAML configuration files validated by pydantic models, with errors that name the file and key."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|sec|seconds?|m|min|minutes?|h|hours?|d|days?)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text, *, bare_number_unit: str | None = None) -> timedelta:
    """`30s`, `5m`, `48h`, `7d` (Prometheus style) as a timedelta.

    Args:
        text: the configured value.
        bare_number_unit: unit of a bare number ("d" for retention's `7`); None refuses bare numbers.
    """
    if isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if bare_number_unit is None:
            raise ValueError(f"{text!r} needs a unit, like 30s, 5m, 1h or 7d")
        return timedelta(seconds=float(text) * _UNIT_SECONDS[bare_number_unit])
    match = _DURATION.match(str(text).strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 1h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)[0]])


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file and the key."""


def members_of(allowed: tuple[str, ...], what: str):
    """An AfterValidator for a list field whose items must come from `allowed`."""

    def check(value: list[str]) -> list[str]:
        bad = sorted(set(value) - set(allowed))
        if bad:
            raise ValueError(f"{what} {bad}; use {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _location(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validate(model: type[M], raw: Any, source: str) -> M:
    """`raw` (parsed YAML) as `model`, or ConfigError listing every bad key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = _location(error["loc"]) or "(top level)"
            message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
            problems.append(f"{where}: {message}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def read_yaml(path: Path) -> Any:
    """Parse `path`, or ConfigError naming the file."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load(model: type[M], path: Path) -> M:
    """Read and validate `path`; a missing file gives the model's defaults ("not configured")."""
    if not path.exists():
        return model()
    return validate(model, read_yaml(path), str(path))
