"""Score hours of `rollup_5m` with the detector and keep its state: the library half of `anomaly_scores`.

One hour at a time, in order, each in its own transaction (a range run is a loop over its hours):
1. read the hour's complete 5-minute buckets (`rollup_5m.avg`) of the configured series;
2. take each series' state *before* the hour: the one stored at the hour (normal case), or the latest
   earlier one with the buckets since replayed (the series was silent, or those hours were never
   scored), or, for a series without any stored state, a new state that first learns from up to
   `LEARN_FROM` of the series' earlier buckets (for a series that started within that span this is
   exactly the state in-order scoring would have: a new series, or one scored out of order);
3. score the hour, replace its rows (one window replace: delete the hour, insert what was scored),
   and store the state at the next hour's start (and at this hour's, when it was rebuilt).
So an hour costs work proportional to that hour, and re-running it gives the same rows bit for bit
(`detector.score` resumes exactly).

Late data (SPEC §12). When re-scoring an hour changes the state it leaves for the next one, the hours
already scored after it were scored from a state that no longer holds: the first of them is marked
stale (`anomaly_hours.stale_since`), and `stale()` tells the `anomaly_rescore_sensor` to re-score
from there to the latest hour, in order, in one run. Scoring an hour clears its own mark.

A series whose state has expired (`config/retention.yaml` `anomaly_state`, 3 days) and whose hour
already has rows keeps those rows: re-scoring it from a fresh state would give different rows. Its
counts are reported as `kept`. Its first hour is the exception (nothing before it to remember): it is
re-scored from a new state, so a backfill from the start of history recomputes everything in order.
The in-progress hour is scored up to its last complete bucket.

Writers serialise on one advisory lock per warehouse: an hour's reads (states, buckets) and writes
(rows, states, stale marks) are one consistent step, whatever other runs do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib import anomalies
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig
from metrics_pipeline.lib.warehouse import partitioning
from metrics_pipeline.lib.warehouse import replace_window as windows
from metrics_pipeline.lib.warehouse.db import Warehouse

STEP = 300  # rollup_5m's bucket, seconds
BUCKET = timedelta(seconds=STEP)
HOUR = timedelta(hours=1)
#: How much earlier history a series without a stored state learns from before its first scored
#: hour: three days, so that the daily patterns are known (SPEC §12), 864 buckets at most.
LEARN_FROM = timedelta(days=3)
DETECTOR = anomalies.DetectorConfig(step=STEP)
#: series units as a person reads them in "expected 20–35 %, saw 92 %"
UNIT_SYMBOLS = {"percent": "%", "seconds": "s", "milliseconds": "ms", "bytes": "B", "bytes_per_second": "B/s",
                "count": "", "count_per_second": "/s"}


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    series_id: int
    source: str
    metric: str
    resource: str
    unit: str
    tenant: str | None
    labels: dict[str, str]

    def fields(self) -> dict[str, str]:
        """What a configuration matcher sees: the labels, plus source, metric, resource and tenant."""
        return {**self.labels, "source": self.source, "metric": self.metric, "resource": self.resource,
                "tenant": self.tenant or ""}


@dataclasses.dataclass
class HourResult:
    """What scoring one hour did."""

    hour: datetime
    series: int = 0  # series with complete buckets in the hour, scored or kept
    rows: int = 0
    flagged: int = 0
    resumed: int = 0  # from the state stored at the hour
    replayed: int = 0  # from an earlier state, the buckets since replayed
    started: int = 0  # without a stored state: a new one, after learning from the history before
    kept: int = 0  # series whose rows were kept: their state has expired
    states_changed: int = 0  # states left for the next hour that differ from those stored before
    marked_stale: datetime | None = None  # the later hour this run made stale
    skipped: str | None = None
    seconds: float = 0.0

    def as_row(self) -> tuple:
        return (f"{self.hour:%Y-%m-%d %H:%M}", self.series, self.rows, self.flagged, self.resumed, self.replayed,
                self.started, self.kept, self.states_changed,
                f"{self.marked_stale:%Y-%m-%d %H:%M}" if self.marked_stale else "", self.skipped or "")


@dataclasses.dataclass(frozen=True)
class Stale:
    """Hours to score again: from `first` (the earliest stale hour) to `last` (the latest scored)."""

    first: datetime
    last: datetime
    since: datetime  # when the earliest mark was set


def unit_symbol(unit: str) -> str:
    return UNIT_SYMBOLS.get(unit, unit)


def _lock(conn: psycopg.Connection, schema: str) -> None:
    digest = hashlib.sha256(f"metrics_pipeline.anomalies:{schema}".encode()).digest()
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (int.from_bytes(digest[:8], "big", signed=True),))


def series_info(conn: psycopg.Connection, schema: str, ids: list[int]) -> dict[int, SeriesInfo]:
    """The series of `ids` that exist, by id."""
    rows = conn.execute(f"SELECT series_id, source, metric, resource, unit, tenant, labels FROM {schema}.series "
                        "WHERE series_id = ANY(%s)", (ids,)).fetchall()
    return {r[0]: SeriesInfo(r[0], r[1], r[2], r[3], r[4] or "", r[5], {k: str(v) for k, v in (r[6] or {}).items()})
            for r in rows}


def _split(rows: list[tuple]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """(series_id, epoch seconds, value) rows sorted by series and time -> per series (times, values)."""
    if not rows:
        return {}
    sid = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    ts = np.fromiter((r[1] for r in rows), dtype=np.float64, count=len(rows))
    values = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    cut = np.flatnonzero(np.diff(sid)) + 1
    return {int(i[0]): (t, v) for i, t, v in zip(np.split(sid, cut), np.split(ts, cut), np.split(values, cut))}


def _buckets(conn, schema: str, lo: datetime, hi: datetime) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    rows = conn.execute(
        f"""SELECT series_id, extract(epoch FROM bucket)::float8, avg FROM {schema}.rollup_5m
            WHERE bucket >= %s AND bucket < %s ORDER BY series_id, bucket""", (lo, hi)).fetchall()
    return _split(rows)


def _history(conn, schema: str, since: dict[int, datetime], before: datetime) -> dict[int, tuple]:
    """Each series' buckets in [its own `since`, `before`): what a state resumed from earlier replays."""
    if not since:
        return {}
    ids = sorted(since)
    rows = conn.execute(
        f"""SELECT r.series_id, extract(epoch FROM r.bucket)::float8, r.avg
            FROM unnest(%s::integer[], %s::timestamptz[]) AS b(sid, lo)
            JOIN {schema}.rollup_5m r ON r.series_id = b.sid AND r.bucket >= b.lo AND r.bucket < %s
            ORDER BY 1, 2""", (ids, [since[i] for i in ids], before)).fetchall()
    return _split(rows)


def _states(conn, schema: str, ids: list[int], hour: datetime) -> dict[int, tuple[datetime, bytes]]:
    """Each series' latest stored state at or before `hour`: (its hour, the bytes)."""
    if not ids:
        return {}
    rows = conn.execute(
        f"""SELECT i.sid, st.hour, st.state FROM unnest(%s::integer[]) AS i(sid)
            CROSS JOIN LATERAL (SELECT s.hour, s.state FROM {schema}.anomaly_state s
                                WHERE s.series_id = i.sid AND s.hour <= %s ORDER BY s.hour DESC LIMIT 1) st""",
        (ids, hour), binary=True).fetchall()
    return {sid: (at.astimezone(timezone.utc), bytes(blob)) for sid, at, blob in rows}


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@dataclasses.dataclass
class _Scored:
    ids: list[int] = dataclasses.field(default_factory=list)
    buckets: list[float] = dataclasses.field(default_factory=list)
    columns: list[np.ndarray] = dataclasses.field(default_factory=list)  # value, expected, lower, upper, score, surprise
    flagged: list[np.ndarray] = dataclasses.field(default_factory=list)
    descriptions: list[str | None] = dataclasses.field(default_factory=list)
    states: list[tuple] = dataclasses.field(default_factory=list)  # (series_id, hour, blob, digest, samples, since)


def _score_series(info: SeriesInfo, state, t: np.ndarray, x: np.ndarray, config: AnomaliesConfig, out: _Scored):
    scores, new = anomalies.score(state, t, x)
    warm_from = new.origin + config.warm_up.total_seconds()
    with np.errstate(invalid="ignore"):  # NaN expected (warming up): never flagged
        moved = np.abs(x - scores.expected) >= config.min_change * np.maximum(np.abs(x), np.abs(scores.expected))
        outside = (x < scores.lower) | (x > scores.upper)
    flagged = (scores.score >= config.threshold) & (t >= warm_from) & moved & (outside | (not config.outside_band))
    unit = unit_symbol(info.unit)
    out.ids.extend([info.series_id] * len(t))
    out.buckets.extend(t.tolist())
    out.columns.append(np.vstack([x, scores.expected, scores.lower, scores.upper, scores.score, scores.surprise]))
    out.flagged.append(flagged)
    out.descriptions.extend(describe(float(x[i]), float(scores.lower[i]), float(scores.upper[i]), unit, bool(outside[i]))
                            if flagged[i] else None for i in range(len(t)))
    return new


def describe(value: float, lower: float, upper: float, unit: str, outside: bool) -> str:
    """The band a person reads; a bucket flagged within it (the detector's level, burst or seasonal view
    found its run unusual, not its value) says so."""
    text = anomalies.describe(value, lower, upper, unit)
    return text if outside else f"{text} (within the band: the run of values is unusual, not this one)"


def _state_row(series_id: int, hour: datetime, state) -> tuple:
    blob = anomalies.state_to_bytes(state)
    since = _dt(state.origin) if state.count else None
    return (series_id, hour, blob, hashlib.sha256(blob).digest(), state.count, since)


_INSERT_ROWS = """
INSERT INTO {schema}.anomaly_scores (series_id, bucket, value, expected, lower, upper, score, surprise, flagged,
                                     description)
SELECT sid, to_timestamp(t), v, nullif(e, 'NaN'), nullif(lo, 'NaN'), nullif(hi, 'NaN'), s, u, f, d
FROM unnest(%b::integer[], %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::float8[],
            %b::float8[], %b::boolean[], %b::text[]) AS r(sid, t, v, e, lo, hi, s, u, f, d)
"""

# A state is replaced only when it differs; RETURNING lists the states that are new or changed.
_UPSERT_STATES = """
INSERT INTO {schema}.anomaly_state (series_id, hour, state, digest, samples, learning_since)
SELECT * FROM unnest(%b::integer[], %b::timestamptz[], %b::bytea[], %b::bytea[], %b::bigint[], %b::timestamptz[])
ON CONFLICT (series_id, hour) DO UPDATE SET state = EXCLUDED.state, digest = EXCLUDED.digest,
    samples = EXCLUDED.samples, learning_since = EXCLUDED.learning_since, written_at = now()
WHERE {schema}.anomaly_state.digest IS DISTINCT FROM EXCLUDED.digest
RETURNING hour
"""

_MARK_STALE = """
UPDATE {schema}.anomaly_hours SET stale_since = coalesce(stale_since, now())
WHERE hour = (SELECT min(hour) FROM {schema}.anomaly_hours WHERE hour >= %s)
RETURNING hour
"""

_RECORD_HOUR = """
INSERT INTO {schema}.anomaly_hours (hour, scored_at, series, rows, flagged, kept, stale_since)
VALUES (%s, now(), %s, %s, %s, %s, NULL)
ON CONFLICT (hour) DO UPDATE SET scored_at = now(), series = EXCLUDED.series, rows = EXCLUDED.rows,
    flagged = EXCLUDED.flagged, kept = EXCLUDED.kept, stale_since = NULL
"""


def _write(conn, schema: str, hour: datetime, scored: _Scored, kept: list[int]) -> list[datetime]:
    """Replace the hour's rows (except the kept series'), store the states; returns the hours of the
    states that are new or changed."""
    end = hour + HOUR
    conn.execute(f"DELETE FROM {schema}.anomaly_scores WHERE bucket >= %s AND bucket < %s AND series_id <> ALL(%s)",
                 (hour, end, kept))
    if scored.ids:
        cols = np.hstack(scored.columns)
        conn.execute(_INSERT_ROWS.format(schema=schema), (
            scored.ids, scored.buckets, *(cols[i].tolist() for i in range(6)),
            np.concatenate(scored.flagged).tolist(), scored.descriptions))
    if not scored.states:
        return []
    cols = list(zip(*scored.states))
    changed = conn.execute(_UPSERT_STATES.format(schema=schema), [list(c) for c in cols]).fetchall()
    return [at.astimezone(timezone.utc) for (at,) in changed]


def _score_hour(conn, schema: str, hour: datetime, config: AnomaliesConfig, now: datetime) -> HourResult:
    t0 = time.perf_counter()
    end = hour + HOUR
    result = HourResult(hour)
    # Buckets end 5 minutes after they start: the in-progress hour is scored up to its last complete one.
    upto = min(end, now - BUCKET + timedelta(microseconds=1))
    with conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        _lock(conn, schema)
        found = _buckets(conn, schema, hour, upto) if upto > hour else {}
        info = series_info(conn, schema, sorted(found))
        chosen = {sid: info[sid] for sid in sorted(found) if sid in info and config.selects(info[sid].fields())}
        states = _states(conn, schema, list(chosen), hour)
        missing = [sid for sid in chosen if sid not in states]
        kept: list[int] = []
        if missing:  # scored before, and its states expired since: keep its rows, unless this is its first hour
            scored_before = [sid for (sid,) in conn.execute(
                f"SELECT DISTINCT series_id FROM {schema}.anomaly_scores WHERE bucket >= %s AND bucket < %s "
                "AND series_id = ANY(%s)", (hour, end, missing)).fetchall()]
            kept = [sid for (sid,) in conn.execute(
                f"""SELECT i.sid FROM unnest(%s::integer[]) AS i(sid) WHERE EXISTS (
                        SELECT 1 FROM {schema}.rollup_5m r WHERE r.series_id = i.sid AND r.bucket < %s)""",
                (scored_before, hour)).fetchall()] if scored_before else []
        replay = {sid: states[sid][0] for sid in chosen if sid in states and states[sid][0] < hour}
        replay.update({sid: hour - LEARN_FROM for sid in missing if sid not in kept})
        history = _history(conn, schema, replay, hour)
        scored = _Scored()
        for sid, series in chosen.items():
            if sid in kept:
                result.kept += 1
                continue
            state = anomalies.state_from_bytes(states[sid][1]) if sid in states else anomalies.new_state(DETECTOR)
            if sid in replay:
                if sid in states:
                    result.replayed += 1
                else:
                    result.started += 1
                if sid in history:
                    _, state = anomalies.score(state, *history[sid])
                # The state before this hour, rebuilt (empty for a new series): stored, so that a re-run
                # of this hour resumes from it, and an earlier hour scored later corrects it (stale).
                scored.states.append(_state_row(sid, hour, state))
            else:
                result.resumed += 1
            t, x = found[sid]
            new = _score_series(series, state, t, x, config, scored)
            scored.states.append(_state_row(sid, end, new))
        result.series = len(chosen)
        result.rows = len(scored.ids)
        result.flagged = int(sum(int(f.sum()) for f in scored.flagged))
        changed = _write(conn, schema, hour, scored, kept)
        result.states_changed = sum(1 for at in changed if at == end)
        conn.execute(_RECORD_HOUR.format(schema=schema), (hour, result.series, result.rows, result.flagged, result.kept))
        if result.states_changed:
            marked = conn.execute(_MARK_STALE.format(schema=schema), (end,)).fetchone()
            result.marked_stale = marked[0].astimezone(timezone.utc) if marked else None
    result.seconds = time.perf_counter() - t0
    return result


def score_window(warehouse: Warehouse, start: datetime, end: datetime, config: AnomaliesConfig, *,
                 now: datetime | None = None) -> list[HourResult]:
    """Score every hour of [start, end) in order (one transaction each) and keep the states.

    Args:
        warehouse: the warehouse (migrated).
        start, end: timezone-aware, on whole hours.
        config: `config/anomalies.yaml` (`load_config()`): which series, the threshold and warm-up.
        now: the clock (tests); buckets not complete by then are left for a later run.
    Returns:
        One HourResult per hour.
    """
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    windows.check_aligned("anomaly_scores", start, end, HOUR)
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    hours = [start + i * HOUR for i in range(int((end - start) / HOUR))]
    if not config.enabled:
        return [HourResult(h, skipped="disabled in config/anomalies.yaml") for h in hours]
    results = []
    with warehouse.connect() as conn:
        partitioning.ensure_partitions(conn, schema, "anomaly_scores", start, end)
        partitioning.ensure_partitions(conn, schema, "anomaly_state", start, end + HOUR)
        oldest = partitioning.oldest_partition_start(conn, schema, "rollup_5m")
        for hour in hours:
            if oldest is None or hour + HOUR <= oldest:
                results.append(HourResult(hour, skipped="no rollup_5m for this hour (never loaded or expired): rows kept"))
                continue
            results.append(_score_hour(conn, schema, hour, config, now))
    return results


def stale(warehouse: Warehouse, *, before: datetime | None = None) -> Stale | None:
    """The hours to score again, if any: from the earliest stale hour to the latest hour scored
    (both before `before`, e.g. the in-progress hour, which its own runs keep re-scoring)."""
    schema = warehouse.schema
    limit = before or datetime.max.replace(tzinfo=timezone.utc)
    with warehouse.connect() as conn:
        first, since = conn.execute(
            f"SELECT hour, stale_since FROM {schema}.anomaly_hours WHERE stale_since IS NOT NULL AND hour < %s "
            "ORDER BY hour LIMIT 1", (limit,)).fetchone() or (None, None)
        if first is None:
            return None
        (last,) = conn.execute(f"SELECT max(hour) FROM {schema}.anomaly_hours WHERE hour < %s", (limit,)).fetchone()
    return Stale(first.astimezone(timezone.utc), last.astimezone(timezone.utc), since)
