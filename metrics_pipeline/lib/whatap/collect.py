"""Fetch a window from WhaTap for every configured project and normalise it to points (SPEC §2.2).

Server projects (SMS): `sm_stat` at the configured resolution and MXQL `server_base`,
`server_disk`, `server_network`; APM projects: MXQL `app_counter` and the APM series. Each value
becomes a point of series `whatap_<server|apm>_<field>` on resource `oname`, labelled with project
code and name, oid, oname, category (the endpoint or MXQL category), the disk mount or NIC, and the
project's `tenant` when the configuration gives it one.
Units follow the reference; sm_stat's traffic unit is not documented (bytes per the schema).

A project's type and name come from WhaTap, whichever token names it: the account's project list,
or, for a project configured by its own token, `/open/api/json/project`. They are not configuration:
a name typed into the file could differ from the account's (labels would then depend on how the
project was configured) and a wrong type would silently drop series. A project of another product
(DB, Kubernetes, browser, ...) is skipped and listed when the account token discovered it, and
fails the run when the configuration names it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from datetime import datetime

import numpy as np
import pandas as pd

from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.whatap.client import (
    ClientStats,
    Project,
    WhatapClient,
    WhatapError,
    number,
)
from metrics_pipeline.lib.whatap.config import WhatapConfig

APM, SERVER = "apm", "server"
PRODUCT_KINDS = {"APM": APM, "SMS": SERVER, "SERVER": SERVER, "INFRA": SERVER}

SM_STAT_FIELDS = {
    "cpu": ("whatap_server_cpu", "percent"), "memory_pused": ("whatap_server_memory", "percent"),
    "memory_swappused": ("whatap_server_swap", "percent"), "usedPercent": ("whatap_server_disk_used", "percent"),
    "ioPercent": ("whatap_server_disk_io", "percent"), "trafficIn": ("whatap_server_traffic_in", "bytes"),
    "trafficOut": ("whatap_server_traffic_out", "bytes"),
}
MXQL_FIELDS = {
    "server_base": {"cpu": "percent", "cpu_usr": "percent", "cpu_sys": "percent", "cpu_idle": "percent",
                    "cpu_load1": "count", "cpu_load5": "count", "cpu_load15": "count", "memory_pused": "percent",
                    "memory_used": "bytes", "memory_total": "bytes"},
    "server_disk": {"usedPercent": "percent", "readIops": "count_per_second", "writeIops": "count_per_second"},
    "server_network": {"in": "bytes_per_second", "out": "bytes_per_second"},
    "app_counter": {"tps": "count_per_second", "resp_time": "milliseconds", "tx_count": "count",
                    "tx_error": "count", "active_tx_count": "count", "arrival_rate": "count_per_second"},
}
MXQL_NAMES = {"server_base": "whatap_server", "server_disk": "whatap_server_disk", "server_network": "whatap_server_network",
              "app_counter": "whatap_apm"}
MXQL_SUB = {"server_disk": ("mountPoint", "mount"), "server_network": ("desc", "nic")}
APM_UNITS = {"apdex": "ratio"}


class NotConfigured(RuntimeError):
    pass


@dataclasses.dataclass
class WhatapStats:
    projects: int = 0
    agents: set = dataclasses.field(default_factory=set)
    client: ClientStats = dataclasses.field(default_factory=ClientStats)
    skipped_projects: dict = dataclasses.field(default_factory=dict)  # "code (name)" -> product type


def kind_of(project: Project) -> str | None:
    """APM or SERVER, or None for a product we do not collect."""
    return PRODUCT_KINDS.get(project.product_type.strip().upper())


def resolve_projects(config: WhatapConfig, client: WhatapClient) -> list[Project]:
    """Explicit projects (token from their variable) plus, with an account token, every project.
    A project the account list does not give is asked about with its own token; one listed without
    a token (for its tenant) must be in the account's list."""
    projects: dict[int, Project] = {}
    account_token = os.environ.get(config.account_token_env or "", "")
    if account_token:
        projects.update({p.code: p for p in client.projects(account_token)})
    for ref in config.projects:
        if ref.token_env is None:
            if ref.code not in projects:
                why = ("is not in the account's project list" if account_token else
                       f"has no token_env and the account token variable {config.account_token_env} is not set")
                raise WhatapError(f"WhaTap project {ref.code} {why}: give it a token_env, or remove it from `projects`")
            continue
        token = os.environ.get(ref.token_env, "")
        if not token:
            raise WhatapError(f"WhaTap project {ref.code}: environment variable {ref.token_env} is not set")
        known = projects.get(ref.code)
        projects[ref.code] = dataclasses.replace(known, token=token) if known else client.project(ref.code, token)
    return list(projects.values())


def fetch(config: WhatapConfig, start: datetime, end: datetime) -> tuple[pd.DataFrame, WhatapStats]:
    if not config.configured:
        raise NotConfigured("no WhaTap token variable is set")
    client = WhatapClient(config.base_url, timeout=config.timeout_seconds, max_attempts=config.max_attempts)
    stats = WhatapStats(client=client.stats)
    s_ms, e_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)
    series: dict[tuple, tuple[list, list]] = {}
    meta: dict[tuple, tuple[str, str, str, dict]] = {}

    tenants = {ref.code: ref.tenant for ref in config.projects if ref.tenant}

    def add(metric, unit, project, oid, oname, category, t_ms, raw, extra=None):
        v = number(raw, stats.client, f"{category}.{metric}")
        if v is None or not s_ms <= int(t_ms) < e_ms:
            return
        labels = {"project_code": str(project.code), "project_name": project.name, "oid": str(oid),
                  "oname": oname, "category": category, **(extra or {})}
        if project.code in tenants:
            labels["tenant"] = tenants[project.code]  # series.tenant: what tenant-restricted BI logins see
        key = (metric, oname, tuple(sorted(labels.items())))
        if key not in series:
            series[key] = ([], [])
            meta[key] = (metric, oname, unit, labels)
        series[key][0].append(int(t_ms))
        series[key][1].append(v)
        stats.agents.add((project.code, oid))

    configured = {ref.code for ref in config.projects}
    projects = []
    for project in resolve_projects(config, client):
        if kind_of(project) is not None:
            projects.append(project)
        elif project.code in configured:
            raise WhatapError(f"WhaTap project {project.code} ({project.name}) is a "
                              f"{project.product_type or 'typeless'} project: only APM and server (SMS) projects "
                              "are collected; remove it from `projects` in the WhaTap configuration")
        else:
            stats.skipped_projects[f"{project.code} ({project.name})"] = project.product_type or "none"
    stats.projects = len(projects)
    for project in projects:
        kind = kind_of(project)
        names: dict = {}
        if kind == SERVER:
            names = {str(a.get("oid")): str(a.get("oname", a.get("oid"))) for a in client.servers(project)}
            if "sm_stat" in config.collect:
                for row in client.sm_stat(project, s_ms, e_ms, config.resolution):
                    oid = row.get("oid")
                    for field, (metric, unit) in SM_STAT_FIELDS.items():
                        if field in row:
                            add(metric, unit, project, oid, names.get(str(oid), str(oid)), "sm_stat", row.get("time", -1),
                                row[field], {"resolution": config.resolution})
        categories = [c for c in config.mxql_categories if (c == "app_counter") == (kind == APM)] if "mxql" in config.collect else []
        for category in categories:
            fields = MXQL_FIELDS[category]
            mql = f"CATEGORY {category}\nTAGLOAD\nSELECT [time, oid, oname, {', '.join([*fields, *([MXQL_SUB[category][0]] if category in MXQL_SUB else [])])}]"
            for row in client.mxql(project, s_ms, e_ms, mql, config.mxql_limit):
                extra = {}
                if category in MXQL_SUB:
                    column, label = MXQL_SUB[category]
                    extra[label] = str(row.get(column, ""))
                for field, unit in fields.items():
                    if field in row:
                        add(f"{MXQL_NAMES[category]}_{field.lower()}", unit, project, row.get("oid"),
                            str(row.get("oname", row.get("oid"))), category, row.get("time", -1), row[field], extra)
        if kind == APM and "apm" in config.collect:
            for metric in config.apm_metrics:
                for oid, oname, t_ms, raw in client.apm_series(project, metric, s_ms, e_ms):
                    add(f"whatap_apm_{metric}", APM_UNITS.get(metric, "count"), project, oid, oname, "apm_series", t_ms, raw)
    frame = points_frame([
        {"metric": m, "resource": r, "labels": labels, "unit": u,
         "ts": pd.to_datetime(np.asarray(series[key][0], dtype="int64"), unit="ms", utc=True),
         "value": np.asarray(series[key][1])}
        for key, (m, r, u, labels) in meta.items()
    ])
    return frame, stats


def errors_by_endpoint(stats: WhatapStats) -> dict[str, int]:
    return dict(Counter(stats.client.errors))
