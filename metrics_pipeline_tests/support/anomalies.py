"""Series with a daily pattern, written straight into `rollup_5m`, for the anomaly tests.

The scorer reads `rollup_5m.avg` only, so most tests put 5-minute buckets there directly (a day of a
series is 288 rows, instantly); the end-to-end tests load raw points through the real loader and
rollups instead.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib.warehouse import partitioning

SCHEMA = "metrics"
STEP = 300
#: the start of the synthetic history: a Monday 00:00 UTC
ORIGIN = datetime(2026, 11, 2, tzinfo=timezone.utc)


def add_series(conn: psycopg.Connection, metric: str, resource: str, *, source: str = "cloudwatch",
               unit: str = "percent", labels: dict[str, str] | None = None) -> int:
    """Register a series (as the loader would) and return its id."""
    return conn.execute(
        f"INSERT INTO {SCHEMA}.series (source, metric, resource, labels, unit) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING series_id", (source, metric, resource, json.dumps(labels or {}), unit)).fetchone()[0]


def put_buckets(conn: psycopg.Connection, series_id: int, start: datetime, values) -> None:
    """`values` as consecutive 5-minute buckets of `series_id` from `start` (NaN: no bucket), replacing
    what was there: one row per bucket of rollup_5m (count 1, every statistic the value)."""
    values = np.asarray(values, dtype=float)
    times = [start + timedelta(seconds=STEP * i) for i in range(len(values))]
    keep = [(t, float(v)) for t, v in zip(times, values) if np.isfinite(v)]
    if not times:
        return
    partitioning.ensure_partitions(conn, SCHEMA, "rollup_5m", times[0], times[-1] + timedelta(seconds=STEP))
    with conn.transaction():
        conn.execute(f"DELETE FROM {SCHEMA}.rollup_5m WHERE series_id = %s AND bucket >= %s AND bucket <= %s",
                     (series_id, times[0], times[-1]))
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {SCHEMA}.rollup_5m (series_id, bucket, count, sum, min, max, avg, last) "
                "VALUES (%s, %s, 1, %s, %s, %s, %s, %s)",
                [(series_id, t, v, v, v, v, v) for t, v in keep])


def daily(n: int, *, seed: int = 0, level: float = 40.0, amplitude: float = 20.0, noise: float = 2.0,
          phase_hours: float = 0.0) -> np.ndarray:
    """`n` 5-minute buckets of a daily cycle (peak mid-afternoon) with Gaussian noise, from ORIGIN."""
    rng = np.random.default_rng(seed)
    hours = np.arange(n) * STEP / 3600 + phase_hours
    return level + amplitude * np.sin((hours - 9) / 24 * 2 * np.pi) + rng.normal(0, noise, n)


def buckets_per_hour() -> int:
    return 3600 // STEP


def put_scores(conn: psycopg.Connection, series_id: int, start: datetime, surprise, score=None, *, value: float = 90.0,
               description: str = "expected 20–35 %, saw 92 %", threshold: float = 0.5613) -> None:
    """Rows of `anomaly_scores` for consecutive buckets from `start`, as the scorer would write them:
    `score` defaults to the surprise at the first bucket of each run above the threshold, halved
    elsewhere (the detector fires once an event); flagged where score >= threshold."""
    surprise = np.asarray(surprise, dtype=float)
    if score is None:
        above = surprise >= threshold
        first = above & ~np.concatenate(([False], above[:-1]))
        score = np.where(first, surprise, surprise / 2)
    score = np.asarray(score, dtype=float)
    times = [start + timedelta(seconds=STEP * i) for i in range(len(surprise))]
    partitioning.ensure_partitions(conn, SCHEMA, "anomaly_scores", times[0], times[-1] + timedelta(seconds=STEP))
    with conn.cursor() as cur:
        cur.executemany(
            f"""INSERT INTO {SCHEMA}.anomaly_scores (series_id, bucket, value, expected, lower, upper, score, surprise,
                                                      flagged, description)
                VALUES (%s, %s, %s, 27.5, 20, 35, %s, %s, %s, %s)
                ON CONFLICT (series_id, bucket) DO UPDATE SET score = EXCLUDED.score, surprise = EXCLUDED.surprise,
                    flagged = EXCLUDED.flagged, description = EXCLUDED.description""",
            [(series_id, t, value, float(sc), float(su), bool(sc >= threshold), description if sc >= threshold else None)
             for t, sc, su in zip(times, score, surprise)])
