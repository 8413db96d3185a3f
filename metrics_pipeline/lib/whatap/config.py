"""WhaTap source configuration (YAML), validated; tokens only ever come from the environment.

Every key, its default and the error a bad value gives: `config/whatap.example.yaml` and `docs/configuration.md`.
The file holds variable *names*; a token in the file itself is refused.

A project may name its `tenant`: every series of that project gets the label `tenant` (BI logins
restricted to tenants see only theirs). With an account token, a project may be listed for its tenant
alone (no `token_env`): the account's project list gives its token.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.points import MAX_NAME_BYTES, text_problem

CONFIG_ENV = "METRICS_PIPELINE_WHATAP_CONFIG"
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError("must be the NAME of an environment variable (A-Z, 0-9, _), never a token itself")
    return value


def _storable(value: str) -> str:
    problem = text_problem(value, max_bytes=MAX_NAME_BYTES)
    if problem:
        raise ValueError(problem)
    return value


EnvName = Annotated[str, AfterValidator(_env_name)]
#: As CloudWatch's `accounts[].tenant`: 1-200 characters PostgreSQL can store.
Tenant = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_storable)]
Collections = Annotated[list[str], yaml_config.members_of(("sm_stat", "mxql", "apm"), "unknown collection(s)")]
Categories = Annotated[list[str], yaml_config.members_of(
    ("server_base", "server_disk", "server_network", "app_counter"), "unsupported MXQL categories")]
ApmMetrics = Annotated[list[str], yaml_config.members_of(
    ("thread_count", "thread_daemon", "thread_peak_count", "threadpool_active", "threadpool_queue", "apdex"),
    "unsupported APM series")]


class ProjectRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: int
    token_env: EnvName | None = None  # None: the account token's project list gives the token
    tenant: Tenant | None = None  # label `tenant` of every series of the project


class WhatapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    base_url: str = "https://api.whatap.io"
    account_token_env: EnvName | None = None
    projects: list[ProjectRef] = Field(default_factory=list)
    resolution: str = Field(default="m5", pattern=r"^(m5|s5|h1)$")
    collect: Collections = Field(default_factory=lambda: ["sm_stat", "mxql", "apm"])
    mxql_categories: Categories = Field(default_factory=lambda: ["server_base", "server_disk", "server_network", "app_counter"])
    apm_metrics: ApmMetrics = Field(default_factory=lambda: ["thread_count", "threadpool_active", "threadpool_queue", "apdex"])
    # MXQL `limit` (rows per answer; WhaTap's own cap is 100,000 and may be lower): an answer that
    # reaches it, or a smaller cap the server revealed, is split (lib/whatap/split.py)
    mxql_limit: int = Field(default=100_000, ge=1, le=100_000)
    fetch_delay_minutes: int = Field(default=5, ge=0, le=59)
    late_rerun_hours: int = Field(default=2, ge=1, le=23)
    refresh_current_hour_minutes: int = Field(default=10, ge=0, le=60)
    catchup_hours: int = Field(default=6, ge=0, le=168)
    max_attempts: int = Field(default=5, ge=1, le=20)
    timeout_seconds: float = Field(default=30, gt=0, le=600)

    @field_validator("projects")
    @classmethod
    def _projects(cls, value: list[ProjectRef], info: ValidationInfo) -> list[ProjectRef]:
        seen: set[int] = set()
        for ref in value:
            if ref.code in seen:
                raise ValueError(f"project {ref.code} is listed twice")
            seen.add(ref.code)
            if ref.token_env is None and not info.data.get("account_token_env"):
                raise ValueError(f"project {ref.code} has no token_env: name the variable holding its token, "
                                 "or set account_token_env so that the account's project list gives it")
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
