"""`for` semantics at data resolution: edge cases, and a property test against a plain loop."""

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.alerts.evaluate import OPERATORS, holds, lookback

S = 1_000_000_000  # one second in ns
FIVE_MIN, GAP = timedelta(minutes=5), timedelta(seconds=2.5)


def series(*segments):
    """Concatenate (seconds, value) segments of 1-second samples starting at t=0."""
    values = np.concatenate([np.full(n, v, dtype=float) for n, v in segments])
    return np.arange(len(values), dtype=np.int64) * S, values


def test_cpu_above_80_for_six_minutes_fires_after_five_and_resolves_when_it_drops():
    ts, values = series((60, 50.0), (360, 85.0), (60, 50.0))
    (hold,) = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert hold.active_at == 60 * S
    assert hold.fired_at == (60 + 300) * S      # the first sample 5 minutes into the hold
    assert hold.resolved_at == 420 * S          # the first sample below the threshold
    assert hold.peak == 85.0 and hold.samples == 360


def test_exactly_at_the_threshold_holds_only_for_non_strict_comparisons():
    ts, values = series((600, 80.0))
    assert holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP) == []
    (hold,) = holds(ts, values, op=">=", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert hold.fired_at == 300 * S and hold.resolved_at is None  # still firing at the end of the data


def test_a_condition_held_just_short_of_the_duration_stays_pending():
    ts, values = series((299, 90.0), (10, 10.0))  # samples at 0..298 s: 298 s < 300 s
    (hold,) = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert not hold.firing and hold.resolved_at == 299 * S


def test_flapping_never_fires_and_each_return_restarts_the_clock():
    ts, values = series(*[(30, 90.0), (30, 10.0)] * 20)
    found = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert len(found) == 20 and not any(h.firing for h in found)


def test_a_gap_breaks_the_hold_and_resolves_a_firing_alert():
    ts, values = series((400, 90.0))
    ts = np.concatenate([ts[:200], ts[200:] + 120 * S])  # two minutes without samples at t=200 s
    first, second = holds(ts, values, op=">", threshold=80, hold=timedelta(minutes=3), max_gap=GAP)
    assert first.fired_at == 180 * S
    assert first.resolved_at == int(199 * S + GAP.total_seconds() * S)  # resolved when the gap is known
    # After the gap the clock restarts: 3 minutes after the first sample that follows it.
    assert second.active_at == 320 * S and second.fired_at == (320 + 180) * S and second.resolved_at is None


def test_data_that_stops_resolves_by_absence_once_complete_data_passes_the_gap():
    ts, values = series((400, 90.0))
    (still,) = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP, until_ns=401 * S)
    assert still.resolved_at is None
    (gone,) = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP, until_ns=600 * S)
    assert gone.resolved_at == int(399 * S + GAP.total_seconds() * S)


def test_for_zero_fires_on_the_first_holding_sample_and_below_rules_track_the_minimum():
    ts, values = series((5, 50.0), (3, 4.0), (2, 2.0))
    (hold,) = holds(ts, values, op="<", threshold=5, hold=timedelta(0), max_gap=GAP)
    assert hold.fired_at == 5 * S and hold.peak == 2.0 and hold.resolved_at is None


def test_a_hold_across_a_partition_boundary_fires_once_at_the_same_sample():
    hour = 3600
    ts, values = series((hour - 180, 50.0), (420, 90.0), (600, 50.0))  # 90 % from H-3min to H+4min
    whole = holds(ts, values, op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert [h.fired_at for h in whole] == [(hour + 120) * S]
    # The first hour alone sees a pending hold; the second, with its lookback, the same firing.
    first = holds(ts[ts < hour * S], values[ts < hour * S], op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert [h.fired_at for h in first] == [None]
    back = hour * S - int(lookback(FIVE_MIN, GAP).total_seconds() * S)
    second = holds(ts[ts >= back], values[ts >= back], op=">", threshold=80, hold=FIVE_MIN, max_gap=GAP)
    assert second == whole


def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="unknown comparison"):
        holds(np.array([0]), np.array([1.0]), op="=>", threshold=1, hold=FIVE_MIN, max_gap=GAP)
    with pytest.raises(ValueError, match="sorted"):
        holds(np.array([2, 1]), np.array([1.0, 1.0]), op=">", threshold=0, hold=FIVE_MIN, max_gap=GAP)


def _reference(ts, values, op, threshold, hold_ns, gap_ns):
    """A plain state machine, sample by sample: what the vectorised version must equal."""
    out, run = [], None
    for i, (t, v) in enumerate(zip(ts, values)):
        continuous = i > 0 and t - ts[i - 1] <= gap_ns
        if run is not None and not continuous:
            run["resolved_at"] = int(ts[i - 1]) + gap_ns
            out.append(run)
            run = None
        if OPERATORS[op](v, threshold):
            if run is None:
                run = {"active_at": int(t), "fired_at": None, "resolved_at": None, "last_at": int(t), "n": 0}
            run["last_at"], run["n"] = int(t), run["n"] + 1
            if run["fired_at"] is None and t - run["active_at"] >= hold_ns:
                run["fired_at"] = int(t)
        elif run is not None:
            run["resolved_at"] = int(t)
            out.append(run)
            run = None
    if run is not None:
        out.append(run)
    return [(r["active_at"], r["fired_at"], r["resolved_at"], r["last_at"], r["n"]) for r in out]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.integers(1, 6), st.floats(0, 100)), min_size=1, max_size=80),
    op=st.sampled_from(sorted(OPERATORS)),
    threshold=st.sampled_from([20.0, 50.0, 80.0]),
    hold_s=st.integers(0, 20),
)
def test_vectorised_holds_equal_a_sample_by_sample_state_machine(steps, op, threshold, hold_s):
    ts = np.cumsum([d for d, _ in steps]).astype(np.int64) * S
    values = np.array([v for _, v in steps])
    gap = timedelta(seconds=3)
    got = holds(ts, values, op=op, threshold=threshold, hold=timedelta(seconds=hold_s), max_gap=gap)
    want = _reference(ts, values, op, threshold, hold_s * S, 3 * S)
    assert [(h.active_at, h.fired_at, h.resolved_at, h.last_at, h.samples) for h in got] == want
