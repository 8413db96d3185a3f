"""A WhaTap project's `tenant` labels every series of that project (issue 17, item 5), whether the
project is configured by its own token or listed for its tenant alone next to an account token."""

import json

import pandas as pd
import pytest
import yaml

from metrics_pipeline.lib.whatap import collect
from metrics_pipeline.lib.whatap.client import WhatapError
from metrics_pipeline.lib.whatap.config import load_config
from metrics_pipeline.lib.yaml_config import ConfigError
from metrics_pipeline_tests.support.whatap import running_double, token_env, write_config

START = pd.Timestamp("2026-01-05 10:00", tz="UTC").to_pydatetime()
END = pd.Timestamp("2026-01-05 11:00", tz="UTC").to_pydatetime()
SMALL = {"collect": ["sm_stat", "apm"], "apm_metrics": ["thread_count"]}


def tenants_by_project(frame: pd.DataFrame) -> dict[str, set]:
    out: dict[str, set] = {}
    for text in frame["labels"].astype(str):
        labels = json.loads(text)
        out.setdefault(labels["project_code"], set()).add(labels.get("tenant"))
    return out


def test_projects_listed_for_their_tenant_alone_next_to_the_account_token(tmp_path, monkeypatch):
    with running_double() as double:
        path = write_config(tmp_path / "w.yaml", double, monkeypatch, **SMALL,
                            projects=[{"code": 1201, "tenant": "acme"}, {"code": 1203, "tenant": "boreal"}])
        frame, stats = collect.fetch(load_config(path), START, END)
    assert stats.projects == 3  # the account still collects every project; 1202 has no tenant
    assert tenants_by_project(frame) == {"1201": {"acme"}, "1202": {None}, "1203": {"boreal"}}


def test_a_project_configured_by_its_token_carries_its_tenant(tmp_path, monkeypatch):
    with running_double() as double:
        monkeypatch.setenv(token_env(1202), double.projects[1202].token)
        path = tmp_path / "w.yaml"
        path.write_text(yaml.safe_dump({"base_url": double.url, **SMALL,
                                        "projects": [{"code": 1202, "token_env": token_env(1202), "tenant": "acme"}]}))
        frame, _ = collect.fetch(load_config(path), START, END)
    assert tenants_by_project(frame) == {"1202": {"acme"}}
    assert (frame["labels"].astype(str).str.count('"tenant"') == 1).all()


def test_a_tenant_only_project_the_account_does_not_have_fails_naming_it(tmp_path, monkeypatch):
    with running_double() as double:
        path = write_config(tmp_path / "w.yaml", double, monkeypatch, **SMALL,
                            projects=[{"code": 4242, "tenant": "acme"}])
        with pytest.raises(WhatapError, match=r"WhaTap project 4242 is not in the account's project list: give it a token_env"):
            collect.fetch(load_config(path), START, END)


def test_a_tenant_only_project_without_the_account_token_fails_naming_the_variable(tmp_path, monkeypatch):
    with running_double() as double:
        monkeypatch.setenv(token_env(1201), double.projects[1201].token)
        monkeypatch.delenv("TEST_WHATAP_UNSET_ACCOUNT", raising=False)
        path = tmp_path / "w.yaml"
        path.write_text(yaml.safe_dump({"base_url": double.url, "account_token_env": "TEST_WHATAP_UNSET_ACCOUNT",
                                        "projects": [{"code": 1201, "token_env": token_env(1201)},
                                                     {"code": 1202, "tenant": "acme"}]}))
        with pytest.raises(WhatapError, match="project 1202 has no token_env and the account token variable "
                                              "TEST_WHATAP_UNSET_ACCOUNT is not set"):
            collect.fetch(load_config(path), START, END)


@pytest.mark.parametrize("config, message", [
    ({"projects": [{"code": 1202, "tenant": "acme"}]},
     "projects: project 1202 has no token_env: name the variable holding its token, or set account_token_env"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenant": ""}]},
     "projects[0].tenant: String should have at least 1 character"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenant": "t" * 201}]},
     "projects[0].tenant: String should have at most 200 characters"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenant": "a\x00b"}]},
     "projects[0].tenant: must not contain NUL characters"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenant": 7}]},
     "projects[0].tenant: Input should be a valid string"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenant": "a"}, {"code": 1202, "tenant": "b"}]},
     "projects: project 1202 is listed twice"),
    ({"account_token_env": "A", "projects": [{"code": 1202, "tenants": "a"}]}, "projects[0].tenants: unknown key"),
], ids=["no-token", "empty", "too-long", "nul", "number", "twice", "typo"])
def test_a_bad_project_tenant_names_the_file_and_key(tmp_path, config, message):
    path = tmp_path / "whatap.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert str(exc.value).startswith(f"{path}: ") and message in str(exc.value)


def test_the_example_configuration_is_valid():
    from pathlib import Path

    assert load_config(Path(__file__).resolve().parents[3] / "config" / "whatap.example.yaml").projects == []
