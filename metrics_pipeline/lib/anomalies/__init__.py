"""Anomaly detection per series (issue 20): an online detector in plain numpy, and NAB's scoring rules.

- ``detector``: ``score(state, timestamps, values) -> (Scores, state)``, the one function both the
  ``anomalies score`` command and the (hourly) asset call; the state is explicit and serialisable
  (``state_to_bytes``), so an hour's work is proportional to that hour.
- ``csvio``: the command's CSV path (NAB's ``timestamp,value`` in, ``timestamp,value,anomaly_score`` out).
- ``nab``: the Numenta Anomaly Benchmark's scoring rules, used by ``benchmarks/anomaly.py``.
- ``describe``: the band a person reads ("expected 20–35 %, saw 92 %").
- the pipeline's half (imported where used, not here): ``config`` (``config/anomalies.yaml``), ``scores``
  (hours of ``rollup_5m`` scored from stored states, for the asset ``anomaly_scores``), ``alerts``
  (episodes -> ``AnomalyDetected`` rows of the alert engine, for the check ``anomalies``).

See docs/anomalies.md for the method, its parameters, its costs and its measured limits.
"""

from __future__ import annotations

import math

from metrics_pipeline.lib.anomalies.detector import (
    DetectorConfig,
    DetectorState,
    Scores,
    new_state,
    score,
    score_series,
    state_from_bytes,
    state_from_dict,
    state_to_bytes,
    state_to_dict,
)

__all__ = [
    "DetectorConfig", "DetectorState", "Scores", "describe", "new_state", "score", "score_series",
    "state_from_bytes", "state_from_dict", "state_to_bytes", "state_to_dict",
]


def _fmt(x: float) -> str:
    """Three significant digits, thousands separated: 92, 35.5, 0.0123, 123,456."""
    if math.isfinite(x) and abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def describe(value: float, lower: float, upper: float, unit: str = "") -> str:
    """The band a person reads: ``describe(92, 20, 35, "%")`` is ``"expected 20–35 %, saw 92 %"``.

    Args:
        value: the value seen.
        lower: the lower end of the band of normal values (``Scores.lower``).
        upper: its upper end (``Scores.upper``).
        unit: appended to the numbers (``%`` for percent, or a unit such as ``ms``).
    """
    suffix = f" {unit}" if unit else ""
    if not (math.isfinite(lower) and math.isfinite(upper)):
        return f"saw {_fmt(value)}{suffix} (still learning what is normal)"
    return f"expected {_fmt(lower)}–{_fmt(upper)}{suffix}, saw {_fmt(value)}{suffix}"
