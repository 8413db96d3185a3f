"""The splitter's promise, as properties: any split of a window fetches exactly the rows of the
unsplit window, or the fetch fails because one step alone holds a full answer.

The "server" here is a function over a list of (time, series) rows that answers like WhaTap: rows of
[s, e) in time order, silently cut at its cap. The WhaTap double does the same over HTTP
(test_row_caps.py); this lets hypothesis try thousands of shapes of data quickly.
"""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.whatap.errors import WhatapRowsCut
from metrics_pipeline.lib.whatap.split import Page, Splitter, halves, see_cap

STEP = 5_000


def server(rows: list[tuple[int, int]], cap: int, calls: list):
    """fetch(s, e) over `rows`, cut at `cap` rows in time order, as a Page like the client builds.
    `calls` gets (s, e, cut) for every request."""
    def fetch(s: int, e: int) -> Page:
        inside = sorted(r for r in rows if s <= r[0] < e)
        calls.append((s, e, len(inside) > cap))
        inside = inside[:cap]
        latest: dict = {}
        for t, series in inside:
            latest[series] = max(t, latest.get(series, t))
        return Page(inside, len(inside), min(latest.values(), default=None))
    return fetch


def splitter(caps: dict | None = None) -> Splitter:
    return Splitter({} if caps is None else caps, Counter(), clock=lambda: 4e9)  # every piece is settled


def busiest_step(rows) -> int:
    return max(Counter(t for t, _ in rows).values(), default=0)


@st.composite
def series_rows(draw, contiguous: bool):
    """Rows of up to 12 series over `steps` 5-second steps; contiguous: each series reports from the
    window's start until it stops (agents going quiet); otherwise at random steps."""
    steps = draw(st.integers(2, 64))
    rows = []
    for series in range(draw(st.integers(1, 12))):
        if contiguous:
            rows += [(t * STEP, series) for t in range(draw(st.integers(0, steps)))]
        else:
            rows += [(t * STEP, series) for t in draw(st.sets(st.integers(0, steps - 1), max_size=steps))]
    return steps, rows


@settings(max_examples=300, deadline=None)
@given(data=series_rows(contiguous=False), cap=st.integers(1, 200), span_steps=st.integers(1, 64))
def test_an_answer_reaching_our_limit_is_always_split_to_exactly_the_unsplit_rows(data, cap, span_steps):
    steps, rows = data
    caps: dict = {}
    see_cap(caps, "mxql", cap)  # ours: the `limit` we send
    calls: list = []
    try:
        got = splitter(caps).collect("mxql", "test", 0, steps * STEP, span=span_steps * STEP, step=STEP,
                                     fetch=server(rows, cap, calls))
    except WhatapRowsCut:
        assert busiest_step(rows) >= cap  # only a single step holding a full answer cannot be split
    else:
        assert Counter(got) == Counter(rows) and busiest_step(rows) < cap


@settings(max_examples=300, deadline=None)
@given(data=series_rows(contiguous=True), cap=st.integers(1, 200), span_steps=st.sampled_from([2, 4, 8, 16]))
def test_a_silent_server_cap_below_our_limit_is_found_and_every_row_fetched(data, cap, span_steps):
    """Whenever each step fits in one answer, every row arrives. (A step holding more rows than a
    cap the server never revealed elsewhere cannot be fetched at all: then the fetch fails, or
    returns a subset and never a row that does not exist.)"""
    steps, rows = data
    steps = -(-steps // span_steps) * span_steps  # whole planned pieces, as hours are
    caps: dict = {}
    see_cap(caps, "mxql", 100_000)  # ours is far above the server's
    calls: list = []
    try:
        got = splitter(caps).collect("mxql", "test", 0, steps * STEP, span=span_steps * STEP, step=STEP,
                                     fetch=server(rows, cap, calls))
    except WhatapRowsCut:
        assert busiest_step(rows) >= cap
        return
    if busiest_step(rows) < cap:
        assert Counter(got) == Counter(rows)
        if any(cut for _, _, cut in calls):
            assert caps["mxql"] == cap  # a cut was proven, and its row count is the server's cap
    else:
        assert not Counter(got) - Counter(rows)


def test_a_quiet_series_costs_one_check_of_two_halves_and_nothing_is_lost():
    rows = [(t * STEP, 0) for t in range(720)] + [(t * STEP, 1) for t in range(300)]  # series 1 stops at 25 min
    calls: list = []
    s = splitter()
    got = s.collect("mxql", "test", 0, 720 * STEP, span=720 * STEP, step=STEP, fetch=server(rows, 10**6, calls))
    assert Counter(got) == Counter(rows) and len(calls) == 3 and not s.splits and not s.caps


def test_pieces_still_filling_are_not_checked_for_a_silent_cap():
    rows = [(t * STEP, 0) for t in range(100)]
    calls: list = []
    s = Splitter({}, Counter(), clock=lambda: 720 * STEP / 1000)  # "now" is the window's end
    assert len(s.collect("mxql", "test", 0, 720 * STEP, span=720 * STEP, step=STEP,
                         fetch=server(rows, 10**6, calls))) == 100
    assert len(calls) == 1


@given(start=st.integers(0, 10**6), steps=st.integers(0, 10**4), step=st.sampled_from([5_000, 300_000]))
def test_halves_cover_a_piece_exactly_on_step_boundaries(start, steps, step):
    start *= step
    parts = halves(start, start + steps * step, step)
    if steps < 2:
        assert parts is None
    else:
        (a, m), (m2, b) = parts
        assert (a, b) == (start, start + steps * step) and m == m2 and a < m < b and (m - a) % step == 0


@pytest.mark.parametrize("rows, cap", [(5, 5), (9, 5)])
def test_see_cap_keeps_the_smallest(rows, cap):
    caps = {"mxql": cap}
    see_cap(caps, "mxql", rows)
    assert caps["mxql"] == min(rows, cap)
