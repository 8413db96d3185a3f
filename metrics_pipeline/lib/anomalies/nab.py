"""The Numenta Anomaly Benchmark's scoring rules, implemented from their description.

NAB (Lavin & Ahmad 2015) scores a detector per labelled anomaly window rather than per row: the first
detection inside a window earns a reward on a scaled sigmoid of how early it came, a window without one
costs the false-negative weight, and every detection outside all windows costs the false-positive weight
(less right after a window). One threshold for the whole corpus turns scores into detections; NAB picks
the one that maximises the summed raw score over every distinct score value, and normalises the total so
that emitting nothing scores 0 and a perfect detector 100.

The rules that move scores by several points when done otherwise, as NAB's scorer applies them:
- the first ``min(floor(0.15 * rows), 750)`` rows of a file are probationary: not scored either way;
- a window is entered on the row whose timestamp equals its start and left after the row equal to its
  end, walking the file in its own order (two files here have duplicate or backward timestamps);
- inside a window (rows ``a..b``, width ``w``) a detection at row ``i`` earns
  ``tp * S(-(b - i + 1) / w) / S(-1)``, only the best one of the window counting;
- outside, after a window ending at row ``b`` of width ``w``: ``fp * S(|b - i| / (w - 1))``; before
  any window: ``-fp``; every such detection counts;
- ``S(x) = 2 / (1 + exp(5 x)) - 1`` for ``x < 3`` and ``-1`` from 3 on.

The sweep is exact and linear after one sort: each false positive is an event at its score, and each
window contributes an event at each row whose score beats every earlier row of the window (the rows that
become the window's earliest detection as the threshold falls), with the telescoping difference of the
window's value. The total at a threshold is the null total plus the events at or above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

PROBATION_PERCENT = 0.15
PROBATION_MAX_ROWS = 750  # 0.15 * 5000


@dataclass(frozen=True)
class Profile:
    """Weights of one NAB application profile."""

    name: str
    tp: float
    fn: float
    fp: float


PROFILES: dict[str, Profile] = {
    "standard": Profile("standard", tp=1.0, fn=1.0, fp=0.11),
    "reward_low_FP_rate": Profile("reward_low_FP_rate", tp=1.0, fn=1.0, fp=0.22),
    "reward_low_FN_rate": Profile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11),
}


def scaled_sigmoid(x: float) -> float:
    """NAB's ``S(x)``: about +1 at -1 (a window's start), 0 at its end, -1 from 3 on."""
    if x >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * x)) - 1.0


def probationary_length(rows: int) -> int:
    """Rows at the start of a file that are not scored."""
    return int(min(math.floor(PROBATION_PERCENT * rows), PROBATION_MAX_ROWS))


@dataclass
class ScoredFile:
    """One file prepared for scoring under a profile: per scorable row, its score, its window (-1
    outside every window) and what a detection there is worth."""

    name: str
    rows: int
    scores: np.ndarray
    window: np.ndarray
    value: np.ndarray
    row_index: np.ndarray
    windows: int  # windows with at least one scorable row


def prepare_file(name: str, timestamps: Sequence[str], scores: Sequence[float],
                 windows: Sequence[Sequence[str]], profile: Profile) -> ScoredFile:
    """The worth of a detection at every row of one file, NAB's way.

    Args:
        name: the file's name (for reports).
        timestamps: the rows' timestamps in file order, in the same text form as the windows' limits
            once normalised (``YYYY-MM-DD HH:MM:SS``; a ``.000000`` suffix on either side is ignored).
        scores: the detector's score per row.
        windows: the labelled ``[start, end]`` windows, in time order.
        profile: the weights.
    """
    def norm(text: str) -> str:
        text = str(text).strip()
        return text[:-7] if text.endswith(".000000") else text

    stamps = [norm(t) for t in timestamps]
    if len(stamps) != len(scores):
        raise ValueError(f"{name}: {len(stamps)} timestamps but {len(scores)} scores")
    limits = [(norm(a), norm(b)) for a, b in windows]
    first_index: dict[str, int] = {}
    for i, t in enumerate(stamps):
        first_index.setdefault(t, i)
    for a, b in limits:
        if a not in first_index or b not in first_index:
            raise ValueError(f"{name}: window [{a}, {b}] does not start and end on rows of the file")
    max_tp = scaled_sigmoid(-1.0)
    probation = probationary_length(len(stamps))
    value = np.empty(len(stamps))
    window = np.full(len(stamps), -1, dtype=np.int64)
    pending = list(limits)
    current: tuple[str, str] | None = None
    current_id = -1
    right = width = prev_right = prev_width = None
    next_id = 0
    for i, t in enumerate(stamps):
        if pending and current is None and t == pending[0][0]:
            current = pending.pop(0)
            right = first_index[current[1]]
            width = float(right - first_index[current[0]] + 1)
            current_id, next_id = next_id, next_id + 1
        if current is not None:
            value[i] = profile.tp * scaled_sigmoid(-(right - i + 1) / width) / max_tp
            window[i] = current_id
        elif prev_right is None:
            value[i] = -profile.fp
        else:
            value[i] = profile.fp * scaled_sigmoid(abs(prev_right - i) / (prev_width - 1))
        if current is not None and t == current[1]:
            prev_right, prev_width = i, width
            current, current_id = None, -1
    keep = np.arange(len(stamps)) >= probation
    scored_windows = len(set(window[keep][window[keep] >= 0].tolist()))
    return ScoredFile(name, len(stamps), np.asarray(scores, dtype=float)[keep], window[keep], value[keep],
                      np.flatnonzero(keep), scored_windows)


@dataclass
class CorpusScore:
    """The result of one profile over a corpus at its best threshold."""

    profile: Profile
    threshold: float
    raw: float
    raw_null: float
    raw_perfect: float
    normalised: float
    windows: int
    detected: int
    false_positives: int
    per_file: dict[str, dict[str, float]] = field(default_factory=dict)


def sweep(files: Sequence[ScoredFile], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """Raw corpus totals at every distinct score, highest threshold first.

    Returns:
        ``(thresholds, totals)``: ``thresholds[0]`` is +inf (no detection, the null total), then every
        distinct score in decreasing order, with the summed raw score when rows scoring at least that
        value are detections.
    """
    event_scores: list[np.ndarray] = []
    event_deltas: list[np.ndarray] = []
    null_total = 0.0
    for f in files:
        null_total -= profile.fn * f.windows
        outside = f.window < 0
        event_scores.append(f.scores[outside])
        event_deltas.append(f.value[outside])
        inside = np.flatnonzero(~outside)
        if inside.size == 0:
            continue
        # Rows of each window in file order; a record beats every earlier row of its window.
        wins = f.window[inside]
        scores = f.scores[inside]
        values = f.value[inside]
        rec_scores, rec_deltas = [], []
        start = 0
        while start < len(inside):
            stop = start
            while stop < len(inside) and wins[stop] == wins[start]:
                stop += 1
            s = scores[start:stop]
            prior_max = np.maximum.accumulate(np.concatenate(([-np.inf], s[:-1])))
            records = np.flatnonzero(s > prior_max)
            rv = values[start:stop][records]
            # Falling thresholds reach records from the highest score (the latest record) back to the
            # earliest; each one replaces the next record's value (the last replaces -fn).
            following = np.concatenate((rv[1:], [-profile.fn]))
            rec_scores.append(s[records])
            rec_deltas.append(rv - following)
            start = stop
        event_scores.extend(rec_scores)
        event_deltas.extend(rec_deltas)
    scores = np.concatenate(event_scores) if event_scores else np.empty(0)
    deltas = np.concatenate(event_deltas) if event_deltas else np.empty(0)
    order = np.argsort(-scores, kind="stable")
    scores, deltas = scores[order], deltas[order]
    totals = null_total + np.cumsum(deltas)
    last_of_group = np.ones(len(scores), dtype=bool)
    last_of_group[:-1] = scores[1:] != scores[:-1]
    return (np.concatenate(([np.inf], scores[last_of_group])),
            np.concatenate(([null_total], totals[last_of_group])))


def score_at(files: Sequence[ScoredFile], profile: Profile, threshold: float) -> tuple[float, int, int, dict]:
    """The raw total with detections at ``score >= threshold``, computed directly (no sweep).

    Returns:
        ``(raw, windows detected, false positives, per-file raw totals and counts)``.
    """
    raw, detected, fps, per_file = 0.0, 0, 0, {}
    for f in files:
        hit = f.scores >= threshold
        outside = f.window < 0
        fp_value = float(f.value[hit & outside].sum())
        file_raw, file_detected = fp_value, 0
        for w in np.unique(f.window[~outside]):
            rows = (f.window == w) & hit
            if rows.any():
                file_raw += float(f.value[np.flatnonzero(rows)[0]])
                file_detected += 1
            else:
                file_raw -= profile.fn
        file_fp = int((hit & outside).sum())
        per_file[f.name] = {"raw": file_raw, "detected": file_detected, "windows": f.windows, "fp": file_fp}
        raw += file_raw
        detected += file_detected
        fps += file_fp
    return raw, detected, fps, per_file


def score_corpus(results: Mapping[str, tuple[Sequence[str], Sequence[float]]],
                 labels: Mapping[str, Sequence[Sequence[str]]], profile: Profile) -> CorpusScore:
    """NAB's normalised score of one detector's results under one profile.

    Args:
        results: per file name (as in the labels), its timestamps and scores in file order.
        labels: per file name, its windows (NAB's ``combined_windows.json``).
        profile: the weights.
    """
    files = [prepare_file(name, ts, sc, labels.get(name, []), profile) for name, (ts, sc) in results.items()]
    thresholds, totals = sweep(files, profile)
    best = int(np.argmax(totals))  # the first (highest) threshold among equal totals, as NAB's sort keeps
    threshold = float(thresholds[best])
    raw, detected, fps, per_file = score_at(files, profile, threshold)
    windows = sum(len(labels.get(name, [])) for name in results)
    raw_null = -profile.fn * sum(f.windows for f in files)
    raw_perfect = profile.tp * windows
    normalised = 100.0 * (raw - raw_null) / (raw_perfect - raw_null) if raw_perfect != raw_null else 0.0
    return CorpusScore(profile, threshold, raw, raw_null, raw_perfect, normalised, windows, detected, fps, per_file)
