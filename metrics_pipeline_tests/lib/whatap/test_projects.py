"""Projects configured by project token are what the account token would discover (issue 16, item 7)."""

import json

import pandas as pd
import pytest

from metrics_pipeline.dev.doubles.whatap import Agent, Project, demo_projects
from metrics_pipeline.lib.whatap import collect
from metrics_pipeline.lib.whatap.client import WhatapClient, WhatapError
from metrics_pipeline.lib.whatap.config import load_config
from metrics_pipeline_tests.support.whatap import running_double, write_config

START = pd.Timestamp("2026-01-05 10:00", tz="UTC").to_pydatetime()
END = pd.Timestamp("2026-01-05 11:00", tz="UTC").to_pydatetime()
DB_PROJECT = Project(1299, "oracle-prod", "DB", "ORACLE", "prj-token-1299-e0f1", (Agent(5501, "ora-01"),))


@pytest.mark.parametrize("code, expected", [(1201, ("web-prod", "APM")), (1202, ("hosts-seoul", "SMS")),
                                            (1299, ("oracle-prod", "DB"))])
def test_a_project_token_alone_tells_the_projects_type_and_name(code, expected):
    with running_double([*demo_projects(), DB_PROJECT]) as double:
        project = WhatapClient(double.url).project(code, double.projects[code].token)
    assert (project.code, project.name, project.product_type) == (code, *expected)
    assert double.projects[code].token not in repr(project)


def frame(double, tmp_path, monkeypatch, by):
    config = load_config(write_config(tmp_path / f"{by}.yaml", double, monkeypatch, by=by))
    points, stats = collect.fetch(config, START, END)
    columns = ["metric", "resource", "labels", "unit", "ts", "value"]
    points = points[columns].astype({c: str for c in ("metric", "resource", "labels", "unit")})
    points["labels"] = [json.dumps(json.loads(text), sort_keys=True) for text in points["labels"]]
    return points.sort_values(columns).reset_index(drop=True), stats


def test_the_same_projects_yield_the_same_series_by_account_token_or_by_project_tokens(tmp_path, monkeypatch):
    with running_double() as double:
        by_account, _ = frame(double, tmp_path, monkeypatch, "account")
        by_project, stats = frame(double, tmp_path, monkeypatch, "project")
    assert stats.projects == 3 and len(by_project) > 0
    pd.testing.assert_frame_equal(by_project, by_account)
    apm = by_project[by_project["metric"].str.startswith("whatap_apm_")]
    assert set(apm["metric"]) >= {"whatap_apm_thread_count", "whatap_apm_apdex", "whatap_apm_tps"}
    labels = [json.loads(text) for text in by_project["labels"]]
    names = {label["project_code"]: label["project_name"] for label in labels}
    assert names == {"1201": "web-prod", "1202": "hosts-seoul", "1203": "hosts-frankfurt"}


def test_discovered_projects_of_other_products_are_skipped_and_listed(tmp_path, monkeypatch):
    with running_double([*demo_projects(), DB_PROJECT]) as double:
        config = load_config(write_config(tmp_path / "w.yaml", double, monkeypatch, collect=["sm_stat", "apm"]))
        _, stats = collect.fetch(config, START, END)
    assert stats.projects == 3 and stats.skipped_projects == {"1299 (oracle-prod)": "DB"}
    assert not any(p.endswith("1299") for _, p in double.requests if "sm_" in p)


def test_a_configured_project_of_another_product_fails_naming_it(tmp_path, monkeypatch):
    with running_double([DB_PROJECT]) as double:
        config = load_config(write_config(tmp_path / "w.yaml", double, monkeypatch, by="project"))
        with pytest.raises(WhatapError, match=r"project 1299 \(oracle-prod\) is a DB project: only APM and server"):
            collect.fetch(config, START, END)
