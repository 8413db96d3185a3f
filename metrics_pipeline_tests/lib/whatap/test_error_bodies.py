"""HTTP 200 answers that carry `message` / `msg` / `error` instead of data are errors, never empty data
(issue 16, item 9; the decision and why: docs/whatap.md, lib/whatap/responses.py)."""

import pytest

from metrics_pipeline.dev.doubles.whatap import HOUR_MS
from metrics_pipeline.lib.whatap import responses
from metrics_pipeline.lib.whatap.client import WhatapClient, WhatapError
from metrics_pipeline_tests.support.whatap import running_double

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z

CALLS = {  # endpoint as errors name it -> (path fragment the fault is for, call)
    "projects": ("/projects", lambda c, d, p: c.projects(d.account_token)),
    "project": ("/json/project", lambda c, d, p: c.project(1202, p.token)),
    "sm_servers": ("sm_servers", lambda c, d, p: c.servers(p)),
    "sm_stat": ("sm_stat", lambda c, d, p: c.sm_stat(p, T0, T0 + HOUR_MS)),
    "mxql": ("mxql", lambda c, d, p: c.mxql(p, T0, T0 + HOUR_MS, "CATEGORY server_base\nTAGLOAD\nSELECT [time, oid, cpu]")),
    "apm:apdex": ("/apdex/", lambda c, d, p: c.apm_series(p, "apdex", T0, T0 + HOUR_MS)),
}
SAID = {"message_body": "injected message: no data permission", "msg_body": "injected msg: request rejected",
        "msg_row": "injected msg row", "error_body": "injected failure"}


@pytest.fixture(scope="module")
def shared_double():
    with running_double() as server:
        yield server


@pytest.fixture
def double(shared_double):
    yield shared_double
    shared_double.faults.clear()  # a test that failed early must not leave its fault to the next


@pytest.mark.parametrize("kind", sorted(SAID))
@pytest.mark.parametrize("endpoint", sorted(CALLS))
def test_a_200_carrying_a_message_instead_of_data_fails_the_call_naming_endpoint_and_message(double, endpoint, kind):
    fragment, call = CALLS[endpoint]
    c = WhatapClient(double.url, backoff_s=0.01)
    project = double.projects[1201 if endpoint.startswith("apm") else 1202]
    double.fail_next(kind, path=fragment)
    with pytest.raises(WhatapError) as raised:
        call(c, double, project)
    assert not double.faults
    message = str(raised.value)
    who = "the account" if endpoint == "projects" else f"project {project.code}"
    assert message.startswith(f"WhaTap {endpoint} for {who} returned an error: {SAID[kind]}")
    assert c.stats.calls[endpoint] == 1  # not retried: the same request gets the same answer
    assert double.account_token not in message and "prj-token" not in message


@pytest.mark.parametrize("payload, expect, problem", [
    ({"servers": []}, ("servers",), None),
    ({"servers": [], "message": "success", "code": 200}, ("servers",), None),  # a wrapper's message beside data
    ({"servers": [], "error": "token expired"}, ("servers",), "returned an error: token expired"),
    ({"message": "no permission"}, ("servers",), "returned an error: no permission"),
    ({"msg": "rejected"}, ("data",), "returned an error: rejected"),
    ({}, ("servers",), "answered without data (no servers; keys: none)"),
    ({"code": 0, "result": []}, ("objects", "data"), "answered without data (no objects or data; keys: code, result)"),
    (None, ("servers",), "answered without data (an empty body)"),
    (12.5, ("servers",), "answered without data (float)"),
    ([], list, None),
    ([{"time": 1, "oid": 2, "message": "a log line"}], list, None),  # `message` as a column
    ([{"_head_": {"cols": 3}}, {"time": 1, "oid": 2, "cpu": 3.0}], list, None),
    ([{"time": 1, "oid": 2}, {"msg": "boom"}], list, "returned an error: boom"),  # at any position
    ([{"message": "limit exceeded"}], list, "returned an error: limit exceeded"),
    ([{"error": ""}], list, None),
    ({"message": "bad query"}, list, "returned an error: bad query"),
    ({"rows": []}, list, "answered without data (an object with keys rows)"),
])
def test_what_counts_as_data(payload, expect, problem):
    assert responses.problem(payload, expect) == problem
