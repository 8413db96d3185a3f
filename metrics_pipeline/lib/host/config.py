"""Host source configuration (YAML): which tenant owns which hosts' landing files.

One key, `tenants`: ordered rules, each a list of glob patterns (`fnmatch`, case-sensitive) over the
host's directory in the landing zone (`host/<date>/<HH>/<dir>/`, `lib.host.agent.host_dir`: the
agent's host name with characters outside `A-Za-z0-9._-` written as `_`) and the tenant of the files
below a matching directory. The first matching rule names the tenant of every sample in the file.

Precedence, decided here once for the loader and the live path alike:
1. a matching rule: the operator's configuration. It wins over the tenant an agent writes in its
   lines (`collect --tenant`): it is the one place where an operator says who owns which hosts, so a
   stale or mistyped flag on one machine cannot put its series in another tenant's view. Rules match
   the directory a file lies in, never the host name its lines claim. Lines whose own tenant was
   replaced are counted (`tenant_overrides`).
2. otherwise the agent's `--tenant`, written in each line;
3. otherwise none (unless a sample carries a `tenant` label of its own, which loads as it always
   did): the series are seen only by BI logins that are not restricted to tenants.

Every key, its default and the error a bad value gives: `config/host.example.yaml` and
`docs/configuration.md`.
"""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from metrics_pipeline.lib import settings, yaml_config
from metrics_pipeline.lib.tenants import tenant_problem

CONFIG_ENV = "METRICS_PIPELINE_HOST_CONFIG"
#: Characters a host directory can hold, plus the glob characters `*`, `?`, `[`, `]`, `!`.
_PATTERN = re.compile(r"^[A-Za-z0-9._\-*?\[\]!]{1,255}$")


def _tenant(value: str) -> str:
    problem = tenant_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _pattern(value: str) -> str:
    if not _PATTERN.match(value):
        raise ValueError(
            f"{value[:100]!r} can never match a host directory: those hold only A-Z, a-z, 0-9, '.', '_' and '-' "
            "(other characters of a host name are written as '_'); use them with the glob characters * ? [ ]")
    return value


Tenant = Annotated[str, AfterValidator(_tenant)]
Pattern = Annotated[str, AfterValidator(_pattern)]


class TenantRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    hosts: list[Pattern] = Field(min_length=1)
    tenant: Tenant

    @field_validator("hosts", mode="before")
    @classmethod
    def _one_pattern_as_a_list(cls, value):
        return [value] if isinstance(value, str) else value


class HostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    tenants: list[TenantRule] = Field(default_factory=list)

    def tenant_of(self, directory: str) -> str | None:
        """The tenant the configuration gives the files of host directory `directory`, or None."""
        for rule in self.tenants:
            if any(fnmatch.fnmatchcase(directory, pattern) for pattern in rule.hosts):
                return rule.tenant
        return None


def default_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or settings.project_root() / "config" / "host.yaml")


def load_config(path: Path | str | None = None) -> HostConfig:
    """Read and validate the YAML file; a missing file means no rules (tenants come from the agents)."""
    return yaml_config.load(HostConfig, Path(path) if path else default_path())
