"""The WhaTap client against the WhaTap double on 127.0.0.1 (a real socket, no patched requests)."""

import logging

import pytest

from metrics_pipeline.dev.doubles.whatap import HOUR_MS, WhatapDouble, value
from metrics_pipeline.lib.whatap.client import ClientStats, WhatapAuthError, WhatapClient, WhatapError, number

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.fixture(params=[{}, {"apm_shape": "data", "auth_status": 403, "string_numbers": True}], ids=["variant-a", "variant-b"])
def double(request):
    server = WhatapDouble(**request.param)
    url = server.start()
    server.url = url
    yield server
    server.stop()


def client(double, **kw):
    return WhatapClient(double.url, backoff_s=0.01, **kw)


def test_projects_are_discovered_with_the_account_token_and_tokens_never_printed(double):
    projects = client(double).projects(double.account_token)
    assert [(p.code, p.product_type) for p in projects] == [(1201, "APM"), (1202, "SMS"), (1203, "SMS")]
    assert "prj-token" not in repr(projects)


def test_sm_stat_splits_long_windows_into_hours_and_returns_every_point(double):
    c = client(double)
    project = c.projects(double.account_token)[1]
    rows = list(c.sm_stat(project, T0, T0 + 3 * HOUR_MS, "m5"))
    assert c.stats.calls["sm_stat"] == 3
    assert len(rows) == 3 * 12 * 3  # 3 agents, 12 five-minute points an hour, 3 hours
    first = [r for r in rows if r["oid"] == -1830021144][0]
    assert first["time"] == T0 and number(first["cpu"], c.stats, "cpu") == value(1202, -1830021144, "cpu", T0)


def test_mxql_rows_and_the_http_200_error_body(double):
    c = client(double)
    project = c.projects(double.account_token)[1]
    rows = c.mxql(project, T0, T0 + 60_000, "CATEGORY server_disk\nTAGLOAD\nSELECT [time, oid, oname, mountPoint, usedPercent]")
    assert {(r["oname"], r["mountPoint"]) for r in rows} >= {("db-01", "/"), ("db-01", "/data")}
    with pytest.raises(WhatapError, match="mxql for project 1202 returned an error: unknown category"):
        c.mxql(project, T0, T0 + 60_000, "CATEGORY nonsense\nTAGLOAD")
    double.fail_next("error_body")
    with pytest.raises(WhatapError, match="injected failure"):
        c.mxql(project, T0, T0 + 60_000, "CATEGORY server_base\nTAGLOAD")


def test_both_apm_series_shapes_parse_to_the_same_points(double):
    c = client(double)
    project = c.projects(double.account_token)[0]
    points = list(c.apm_series(project, "thread_count", T0, T0 + HOUR_MS))
    assert len(points) == 2 * 12
    oid, oname, t, raw = points[0]
    assert (oid, oname, t) == (904112233, "web-01-8080", T0)
    assert number(raw, c.stats, "apm") == value(1201, 904112233, "thread_count", T0)


def test_429_500_and_slow_responses_are_retried(double):
    c = client(double, timeout=0.5)
    project = c.projects(double.account_token)[1]
    double.fail_next("429")
    double.fail_next("500")
    double.fail_next("slow", seconds=1.0)
    assert len(list(c.sm_stat(project, T0, T0 + HOUR_MS))) == 36
    assert c.stats.calls["sm_stat"] == 4 and c.stats.errors["sm_stat"] == 3


def test_retries_are_bounded(double):
    c = client(double, max_attempts=3)
    project = c.projects(double.account_token)[1]
    double.fail_next("500", times=5)
    with pytest.raises(WhatapError, match=r"sm_stat for project 1202 failed after 3 attempts \(HTTP 500\)"):
        list(c.sm_stat(project, T0, T0 + HOUR_MS))


def test_bad_tokens_fail_at_once_without_retrying_or_echoing_the_token(double, caplog):
    caplog.set_level(logging.DEBUG)
    c = client(double)
    with pytest.raises(WhatapAuthError) as exc:
        c.projects("wrong-account-token-123")
    assert "wrong-account-token-123" not in str(exc.value) and c.stats.calls["projects"] == 1
    project = c.projects(double.account_token)[1]
    forged = type(project)(project.code, project.name, project.product_type, project.platform, "stolen-token-999")
    with pytest.raises(WhatapAuthError, match=f"project 1202 on sm_servers \\(HTTP {double.auth_status}\\)"):
        c.servers(forged)
    assert "stolen-token-999" not in caplog.text and "prj-token" not in caplog.text


def test_over_limit_ranges_get_a_clear_error():
    double = WhatapDouble()
    url = double.start()
    try:
        import requests

        project = double.projects[1202]
        r = requests.get(f"{url}/open/json/stat/sm_stat", params={"stime": T0, "etime": T0 + 2 * HOUR_MS},
                         headers={"x-whatap-token": project.token, "x-whatap-pcode": "1202"}, timeout=5)
        assert r.status_code == 400 and "exceeds the limit of 60 minutes" in r.json()["message"]
    finally:
        double.stop()


def test_unparseable_values_are_counted_with_their_reason():
    stats = ClientStats()
    assert number("12.5", stats, "cpu") == 12.5 and number(" 3 ", stats, "cpu") == 3.0
    assert number("n/a", stats, "cpu") is None and number(None, stats, "cpu") is None
    assert number("NaN", stats, "cpu") is None and number(True, stats, "cpu") is None
    assert stats.skipped == {"cpu: not a number": 1, "cpu: missing or boolean value": 2, "cpu: not finite": 1}
