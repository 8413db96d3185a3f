"""WhaTap source configuration (YAML), validated; tokens only ever come from the environment.

```yaml
base_url: https://api.whatap.io          # or https://api.gov.whatap.io, or an on-premises host
account_token_env: WHATAP_ACCOUNT_TOKEN   # env var with the account token: every project is discovered
projects:                                 # or/and explicit projects, each with its own token variable
  - code: 1202
    token_env: WHATAP_TOKEN_1202
resolution: m5                            # sm_stat: m5 (5 min), s5 (5 s) or h1 (1 h)
collect: [sm_stat, mxql, apm]             # which endpoints to use
mxql_categories: [server_base, server_disk, server_network, app_counter]
apm_metrics: [thread_count, threadpool_active, threadpool_queue, apdex]
fetch_delay_minutes: 5
late_rerun_hours: 2
max_attempts: 5
timeout_seconds: 30
```
The file holds variable *names*; a token in the file itself is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from metrics_pipeline.lib import settings, yaml_config

CONFIG_ENV = "METRICS_PIPELINE_WHATAP_CONFIG"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _env_name(value: str | None) -> str | None:
    if value is not None and not _ENV_NAME.match(value):
        raise ValueError("must be the NAME of an environment variable (A-Z, 0-9, _), never a token itself")
    return value


class ProjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: int
    token_env: str

    _check = field_validator("token_env")(classmethod(lambda cls, v: _env_name(v)))


class WhatapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str = "https://api.whatap.io"
    account_token_env: str | None = None
    projects: list[ProjectRef] = Field(default_factory=list)
    resolution: str = Field(default="m5", pattern=r"^(m5|s5|h1)$")
    collect: list[str] = Field(default_factory=lambda: ["sm_stat", "mxql", "apm"])
    mxql_categories: list[str] = Field(default_factory=lambda: ["server_base", "server_disk", "server_network", "app_counter"])
    apm_metrics: list[str] = Field(default_factory=lambda: ["thread_count", "threadpool_active", "threadpool_queue", "apdex"])
    fetch_delay_minutes: int = Field(default=5, ge=0, le=59)
    late_rerun_hours: int = Field(default=2, ge=1, le=23)
    refresh_current_hour_minutes: int = Field(default=10, ge=0, le=60)
    catchup_hours: int = Field(default=6, ge=0, le=168)
    max_attempts: int = Field(default=5, ge=1, le=20)
    timeout_seconds: float = Field(default=30, gt=0, le=600)

    _check_account = field_validator("account_token_env")(classmethod(lambda cls, v: _env_name(v)))

    @field_validator("collect")
    @classmethod
    def _collect(cls, value):
        bad = sorted(set(value) - {"sm_stat", "mxql", "apm"})
        if bad:
            raise ValueError(f"unknown collection(s) {bad}; use sm_stat, mxql, apm")
        return value

    @field_validator("mxql_categories")
    @classmethod
    def _categories(cls, value):
        bad = sorted(set(value) - {"server_base", "server_disk", "server_network", "app_counter"})
        if bad:
            raise ValueError(f"unsupported MXQL categories {bad}")
        return value

    @field_validator("apm_metrics")
    @classmethod
    def _apm(cls, value):
        bad = sorted(set(value) - {"thread_count", "thread_daemon", "thread_peak_count", "threadpool_active",
                                   "threadpool_queue", "apdex"})
        if bad:
            raise ValueError(f"unsupported APM series {bad}")
        return value

    @property
    def configured(self) -> bool:
        """True when some token variable is actually set in the environment."""
        names = [self.account_token_env] + [p.token_env for p in self.projects]
        return any(n and os.environ.get(n) for n in names)


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "whatap.yaml")


def load_config(path: Path | str | None = None) -> WhatapConfig:
    """Read and validate the YAML file; a missing file means "not configured"."""
    return yaml_config.load(WhatapConfig, Path(path) if path else default_path())
