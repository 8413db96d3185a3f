"""Prometheus-like `for` semantics, evaluated at the data's own resolution (SPEC §6).

For one series and one rule, every sample is a point of evaluation (1 s host samples, 60 s
CloudWatch datapoints), not a coarse average:

* the condition holds on a sample when `value <op> threshold` (strict or not, as the rule says:
  exactly at the threshold, `>` does not hold and `>=` does);
* a *hold* is a run of consecutive holding samples with no gap between them: two samples further
  apart than `max_gap` break it, because nothing is known in between ("gaps do not count as held");
  `max_gap` may differ per sample (a series whose resolution changes over its history);
* a NaN value (an SLA hour without runs has no failure rate) never meets a condition, whatever the
  operator (`NaN != 0` is true in IEEE arithmetic, not here): it is a non-holding sample;
* a hold is **pending** from its first sample (`active_at`) and **fires** at its first sample at
  least `hold` after `active_at` (`for: 0` fires at once);
* a firing alert **resolves** at the first sample where the condition no longer holds, or, when the
  data stops, `max_gap` after the last holding sample (Prometheus resolves a vanished series too).
  A hold still going at the end of the data is still firing (`resolved_at` None) or still pending.

Everything is vectorised per series with numpy: an hour of 1-second samples is 3,600 values.
Which samples an evaluation reads, so that its holds are exact whatever the run schedule, is the
engine's business (`engine.py`).
"""

from __future__ import annotations

import dataclasses
import operator
from datetime import timedelta

import numpy as np

OPERATORS = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne}


@dataclasses.dataclass(frozen=True)
class Hold:
    """One run of the condition on one series. Times are epoch nanoseconds (numpy int64)."""

    active_at: int            # first holding sample: pending from here
    fired_at: int | None      # first sample `hold` after active_at; None = never fired (pending only)
    resolved_at: int | None   # first non-holding sample, or last holding + max_gap; None = still holding
    last_at: int              # last holding sample
    peak: float               # most extreme value of the hold (max for > / >=, min for < / <=)
    samples: int

    @property
    def firing(self) -> bool:
        return self.fired_at is not None


def lookback(hold: timedelta, max_gap: timedelta) -> timedelta:
    """How much data before a window an evaluation needs to decide holds that cross its start."""
    return hold + max_gap


def holds(ts_ns: np.ndarray, values: np.ndarray, *, op: str, threshold: float, hold: timedelta,
          max_gap: timedelta | np.ndarray, until_ns: int | None = None) -> list[Hold]:
    """Every hold of the condition in one series' samples (sorted by time), pending or firing.

    Args:
        ts_ns: sample times, epoch nanoseconds, strictly increasing.
        values: sample values.
        op: one of OPERATORS.
        threshold: the rule's threshold.
        hold: the rule's `for` duration.
        max_gap: the longest spacing between two samples that still counts as continuous: one
            timedelta, or per sample the tolerance (ns) of the spacing that starts at it (so the
            silence after a series' last sample is judged as any other spacing from it).
        until_ns: the data is complete up to this time (e.g. the window end, or now): a hold whose
            last sample is more than `max_gap` before it has stopped (resolved by absence).
    Returns:
        The holds in time order.
    """
    if op not in OPERATORS:
        raise ValueError(f"unknown comparison {op!r}; use one of {', '.join(OPERATORS)}")
    ts_ns = np.asarray(ts_ns, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if len(ts_ns) != len(values):
        raise ValueError("ts_ns and values differ in length")
    n = len(ts_ns)
    if n == 0:
        return []
    if n > 1 and not (np.diff(ts_ns) > 0).all():
        raise ValueError("samples must be sorted by time, without duplicates")
    if isinstance(max_gap, timedelta):
        gap_ns = np.full(n, int(max_gap.total_seconds() * 1e9), dtype=np.int64)
    else:
        gap_ns = np.asarray(max_gap, dtype=np.int64)
        if len(gap_ns) != n:
            raise ValueError("max_gap differs in length from ts_ns")
    hold_ns = int(hold.total_seconds() * 1e9)
    with np.errstate(invalid="ignore"):
        cond = OPERATORS[op](values, threshold) & np.isfinite(values)
    # continuous[i]: sample i follows sample i-1 closely enough to continue a hold.
    continuous = np.zeros(n, dtype=bool)
    continuous[1:] = np.diff(ts_ns) <= gap_ns[:-1]
    prev_holds = np.concatenate([[False], cond[:-1]]) & continuous
    next_holds = np.concatenate([cond[1:] & continuous[1:], [False]])
    starts = np.flatnonzero(cond & ~prev_holds)
    ends = np.flatnonzero(cond & ~next_holds)
    # The first sample of each run at least `hold` after its start (fires if still inside the run).
    fire_idx = np.searchsorted(ts_ns, ts_ns[starts] + hold_ns, side="left")
    # Peak per run: reduce over [start, next start) with non-holding samples neutralised.
    extreme_max = op in (">", ">=", "==", "!=")
    neutral = np.where(cond, values, -np.inf if extreme_max else np.inf)
    peaks = (np.maximum if extreme_max else np.minimum).reduceat(neutral, starts) if len(starts) else []
    found = []
    for a, b, k, peak in zip(starts, ends, fire_idx, peaks):
        fired_at = int(ts_ns[k]) if k <= b else None
        if b + 1 < n:
            # The next sample either breaks the condition, or comes after a gap.
            resolved_at = int(ts_ns[b + 1]) if continuous[b + 1] else int(ts_ns[b]) + int(gap_ns[b])
        elif until_ns is not None and until_ns - int(ts_ns[b]) > int(gap_ns[b]):
            resolved_at = int(ts_ns[b]) + int(gap_ns[b])
        else:
            resolved_at = None
        found.append(Hold(int(ts_ns[a]), fired_at, resolved_at, int(ts_ns[b]), float(peak), int(b + 1 - a)))
    return found
