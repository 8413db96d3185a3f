"""Answers WhaTap cuts (row caps, merged points) are split around, or fail loudly (issue 16, item 8).

Everything runs against the WhaTap double over HTTP; the double cuts answers itself (`row_cap`, a
cap of its own below our `limit`, never announced; `apm_merge_above_ms`), as the real service does.
"""

from collections import Counter

import pytest

from metrics_pipeline.dev.doubles.whatap import HOUR_MS, value
from metrics_pipeline.lib.whatap.client import WhatapClient, WhatapError
from metrics_pipeline_tests.support.whatap import DAY_ROWS, DISK_HEAVY, running_double

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
DISK_MQL = "CATEGORY server_disk\nTAGLOAD\nSELECT [time, oid, oname, usedPercent, mountPoint]"


def client(double) -> WhatapClient:
    return WhatapClient(double.url, backoff_s=0.01)


def keys(rows) -> Counter:
    return Counter((r["time"], r["oid"], r["mountPoint"]) for r in rows)


def every_disk_row(start, end) -> Counter:
    return Counter((t, DISK_HEAVY.agents[0].oid, d) for t in range(start, end, 5_000) for d in SEVEN)


SEVEN = DISK_HEAVY.agents[0].disks


def test_the_issues_24_hour_server_disk_window_returns_all_120960_rows_not_100000():
    """Issue 16: one 24-hour request for 7 disks got 100,000 of 120,960 rows and a warning."""
    with running_double([DISK_HEAVY], row_cap=100_000) as double:
        c = client(double)
        rows = c.mxql(DISK_HEAVY, T0, T0 + 24 * HOUR_MS, DISK_MQL)
    assert len(rows) == DAY_ROWS and keys(rows) == every_disk_row(T0, T0 + 24 * HOUR_MS)
    assert double.cut_answers == 0  # every request stayed under the cap
    assert not c.stats.skipped


def test_a_silent_server_cap_below_our_limit_is_found_and_split_around():
    """The server cuts at 2,000 rows (our limit is 100,000) and says nothing: hourly answers of
    5,040 rows come back with 2,000. The rows stop early, the halves prove the cut, the cap is
    learned, and every later hour is split at once."""
    with running_double([DISK_HEAVY], row_cap=2_000) as double:
        c = client(double)
        rows = c.mxql(DISK_HEAVY, T0, T0 + 6 * HOUR_MS, DISK_MQL)
    assert keys(rows) == every_disk_row(T0, T0 + 6 * HOUR_MS)
    assert c.stats.caps["mxql"] == 2_000
    # Only the first hour is cut (1 hour, then its two 30-minute halves); the 15 minutes that fitted
    # are the span of every later piece.
    assert c.stats.splits["mxql"] == 3 and double.cut_answers == 3
    assert c.stats.calls["mxql"] == 1 + 2 + 4 + 5 * 4


def test_an_answer_reaching_our_own_limit_is_split_not_trusted():
    with running_double([DISK_HEAVY]) as double:
        c = client(double)
        rows = c.mxql(DISK_HEAVY, T0, T0 + HOUR_MS, DISK_MQL, limit=1_000)
    assert keys(rows) == every_disk_row(T0, T0 + HOUR_MS)
    assert c.stats.caps["mxql"] == 1_000 and c.stats.splits["mxql"] >= 3


@pytest.mark.parametrize("switches, limit", [({"row_cap": 5}, 100_000), ({}, 7)], ids=["server-cap", "our-limit"])
def test_an_answer_cut_within_one_5_second_step_fails_naming_what_was_cut(switches, limit):
    """7 disks share each 5-second step: a cap of 5 (the server's) or 7 (ours) cannot be split around."""
    with running_double([DISK_HEAVY], **switches) as double, pytest.raises(WhatapError) as raised:
        client(double).mxql(DISK_HEAVY, T0, T0 + HOUR_MS, DISK_MQL, limit=limit)
    message = str(raised.value)
    assert type(raised.value).__name__ == "WhatapRowsCut"
    assert "mxql server_disk for project 1301" in message and "2026-01-01T00:00" in message
    assert "rows past it were cut" in message and "one 5-second step" in message
    assert DISK_HEAVY.token not in message


def test_sm_stat_answers_cut_by_a_server_cap_are_split_too():
    with running_double(row_cap=20) as double:  # 3 servers x 12 five-minute rows an hour = 36 > 20
        c = client(double)
        project = c.projects(double.account_token)[1]
        rows = c.sm_stat(project, T0, T0 + 2 * HOUR_MS, "m5")
    assert Counter((r["oid"], r["time"]) for r in rows) == Counter(
        (a.oid, t) for a in double.projects[1202].agents for t in range(T0, T0 + 2 * HOUR_MS, 300_000))
    assert double.cut_answers >= 1 and c.stats.splits["sm_stat"] >= 1


def test_apm_series_cut_by_a_server_cap_are_split_too():
    with running_double(row_cap=15) as double:  # 2 agents x 12 points an hour = 24 > 15
        c = client(double)
        project = c.projects(double.account_token)[0]
        points = c.apm_series(project, "thread_count", T0, T0 + HOUR_MS)
    assert sorted((oid, t) for oid, _, t, _ in points) == sorted(
        (a.oid, t) for a in double.projects[1201].agents for t in range(T0, T0 + HOUR_MS, 300_000))
    assert c.stats.splits["apm_series"] >= 1


def test_apm_series_merged_to_a_coarser_interval_are_split_until_5_minute_points_come_back():
    with running_double(apm_merge_above_ms=20 * 60_000) as double:  # over 20 minutes: one point an hour
        c = client(double)
        project = c.projects(double.account_token)[0]
        points = c.apm_series(project, "apdex", T0, T0 + 2 * HOUR_MS)
    assert len(points) == 2 * 24
    oid, _, t, raw = points[5]
    assert raw == value(1201, oid, "apdex", t)
    assert c.stats.splits["apm_series"] >= 2


def test_apm_series_merged_even_over_one_step_fail_the_fetch():
    with running_double(apm_merge_above_ms=60_000) as double:
        c = client(double)
        project = c.projects(double.account_token)[0]
        with pytest.raises(WhatapError, match=r"apm:apdex for project 1201: .*points merged to a 3600-second interval"):
            c.apm_series(project, "apdex", T0, T0 + HOUR_MS)

