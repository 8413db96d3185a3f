"""Builders for WhaTap tests: a running double, the issue's disk-heavy server, configuration files."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import yaml

from metrics_pipeline.dev.doubles.whatap import (
    Agent,
    Project,
    WhatapDouble,
    demo_projects,
)

#: A server with 7 disks: 7 x 17,280 = 120,960 `server_disk` rows a day at MXQL's 5 s (issue 16).
SEVEN_DISKS = tuple(f"/d{i}" for i in range(7))
DISK_HEAVY = Project(1301, "storage", "SMS", "INFRA", "prj-token-1301-d4e5",
                     (Agent(-777001, "nas-01", disks=SEVEN_DISKS),))
DAY_ROWS = 7 * 17_280


@contextlib.contextmanager
def running_double(projects: list[Project] | None = None, **switches) -> Iterator[WhatapDouble]:
    """A WhaTap double on 127.0.0.1 (demo projects unless given); `.url` is its base URL."""
    double = WhatapDouble(projects or demo_projects(), **switches)
    double.url = double.start()
    try:
        yield double
    finally:
        double.stop()


def token_env(code: int) -> str:
    return f"TEST_WHATAP_TOKEN_{code}"


def write_config(path: Path, double: WhatapDouble, monkeypatch, *, by: str = "account", **config) -> Path:
    """A WhaTap YAML naming token variables, the variables set from the double's tokens.

    Args:
        by: "account" (the account token discovers every project) or "project" (each project of the
            double listed with its own token, no account token: the documented alternative).
    """
    if by == "account":
        monkeypatch.setenv("TEST_WHATAP_ACCOUNT_TOKEN", double.account_token)
        refs = {"account_token_env": "TEST_WHATAP_ACCOUNT_TOKEN"}
    else:
        for project in double.projects.values():
            monkeypatch.setenv(token_env(project.code), project.token)
        refs = {"projects": [{"code": code, "token_env": token_env(code)} for code in double.projects]}
    path.write_text(yaml.safe_dump({"base_url": double.url, **refs, **config}))
    return path
