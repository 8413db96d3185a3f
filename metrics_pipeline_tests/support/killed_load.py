"""The window the killed-load tests reload, and its points: imported by the tests and by the victim
subprocess they kill (`faults/test_killed_load.py`)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd

from metrics_pipeline.lib.points import points_frame

T = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
END = T + timedelta(hours=1)
SERIES = 50  # x 3,600 one-second samples: 180,000 points, a COPY that lasts long enough to be caught


def frame(offset: float, series: int = SERIES) -> pd.DataFrame:
    """An hour of 1-second samples; `offset` shifts every value (a re-fetch that changed everything)."""
    ts = pd.date_range(T, END, freq="1s", inclusive="left")
    return points_frame([
        {"metric": "host_cpu_percent", "resource": f"host-{i:03d}", "labels": {"host": f"host-{i:03d}"},
         "unit": "percent", "ts": ts, "value": (np.arange(len(ts)) % 100) + i + offset}
        for i in range(series)
    ])
