"""The ``anomalies score`` command's path: a NAB-format CSV in, the same rows with a score out.

Input is ``timestamp,value`` with a header (NAB's format; extra columns are ignored, a value that is not a
number is skipped by the detector and scores 0). Output is ``timestamp,value,anomaly_score``, the timestamp
and value written as they were read, the score with full precision (``--explain`` adds the surprise, the
expected value and the band). The step is the median interval between rows unless given.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metrics_pipeline.lib.anomalies.detector import DetectorConfig, Scores, score_series


@dataclass
class Series:
    """One CSV series: the text of its timestamps and values, and their parsed forms."""

    stamps: list[str]
    texts: list[str]
    times: np.ndarray  # datetime64[ns]
    values: np.ndarray


def read_series(path: str | Path) -> Series:
    """Read ``timestamp,value`` rows (a header first)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = csv.reader(fh)
        header = [h.strip().lower() for h in next(rows, [])]
        if "timestamp" not in header or "value" not in header:
            raise ValueError(f"{path}: the header must name the columns timestamp and value, not {header}")
        ti, vi = header.index("timestamp"), header.index("value")
        stamps, texts = [], []
        for n, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) <= max(ti, vi):
                raise ValueError(f"{path}, line {n}: expected a timestamp and a value")
            stamps.append(row[ti].strip())
            texts.append(row[vi].strip())
    try:
        times = np.array(stamps, dtype="datetime64[ns]")
    except ValueError:
        import pandas as pd  # ISO 8601 with a time zone, or another form pandas understands

        times = pd.to_datetime(pd.Series(stamps), utc=True, format="ISO8601").dt.tz_localize(None).to_numpy()
    values = np.array([_number(t) for t in texts], dtype=float)
    return Series(stamps, texts, times, values)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def infer_step(times: np.ndarray) -> float:
    """The median positive interval between rows, in seconds (300 when there is none)."""
    seconds = np.diff(times.astype("datetime64[ns]").astype(np.int64)) / 1e9
    seconds = seconds[seconds > 0]
    return float(np.median(seconds)) if seconds.size else 300.0


def score_file(series: Series, step: float | None = None) -> tuple[Scores, DetectorConfig]:
    """Score a whole series from its first row, as the asset scores a series from its first bucket."""
    config = DetectorConfig(step=step or infer_step(series.times))
    return score_series(series.times, series.values, config), config


def write_scores(path: str | Path, series: Series, scores: Scores, explain: bool = False) -> None:
    """Write ``timestamp,value,anomaly_score`` (plus ``surprise,expected,lower,upper`` with ``explain``)."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        extra = ["surprise", "expected", "lower", "upper"] if explain else []
        out.writerow(["timestamp", "value", "anomaly_score", *extra])
        columns = [scores.score] + ([scores.surprise, scores.expected, scores.lower, scores.upper] if explain else [])
        for i, (stamp, text) in enumerate(zip(series.stamps, series.texts)):
            out.writerow([stamp, text, *(repr(float(c[i])) if not math.isnan(c[i]) else "" for c in columns)])
