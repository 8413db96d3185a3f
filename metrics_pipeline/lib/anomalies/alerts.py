"""`AnomalyDetected` alerts from the stored scores, through the alert engine's table and delivery.

An **episode** of a series starts at a flagged bucket (its score reached the threshold: the detector
fires once, at the start of an event) and lasts while the surprise stays at or above the threshold,
with no gap over 2.5 buckets: a run of the condition `surprise >= threshold`, found by
`lib.alerts.evaluate.holds` like any alert rule's, that holds a flagged bucket. It fires, as a
`warning`, once it has lasted `min_duration` from that bucket; as a `critical` (a second alert, which
Alertmanager's inhibition rule puts over the warning) once its peak score has reached
`critical_score` and it has lasted `critical_after`. Both resolve at the first bucket back to normal.
A run without a flagged bucket (an event that already fired within the last day and is no more
surprising) raises nothing: the detector's own rule against paging twice for one event.

The rows are the engine's (`lib.alerts.engine.record`): identity (fingerprint, starts_at), an upsert
of the episodes each evaluated span owns and a delete of the others, so re-runs, runs in any order
and late data leave exactly the episodes of the scores as they are now, never duplicates. A span is
widened until no run crosses either end, as the engine does for samples; the newest bucket scored
for the series' source is not the end of an episode (it is firing while the source is scored).

Annotations carry the band a person reads, from the first flagged bucket: `summary`
("aws_ec2_cpuutilization on i-0a1b: expected 20–35 %, saw 92 %"), `description`, `band`, `score`.
Mutes (`config/anomalies.yaml`) drop an episode whose series they match at its start.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib.alerts import engine
from metrics_pipeline.lib.alerts.evaluate import Hold, holds
from metrics_pipeline.lib.alerts.rules import Rule
from metrics_pipeline.lib.anomalies.config import AnomaliesConfig
from metrics_pipeline.lib.anomalies.scores import STEP, SeriesInfo, series_info
from metrics_pipeline.lib.warehouse import replace_window as windows
from metrics_pipeline.lib.warehouse.db import Warehouse

ALERTNAME = "AnomalyDetected"
_NS = 1_000_000_000
#: buckets further apart than this break an episode (a missing bucket does not; two do)
MAX_GAP_NS = int(2.5 * STEP * _NS)
#: when a whole source stops being scored, its episodes are judged against the clock minus this
#: (an hour is scored minutes after it closes; the in-progress hour as its rollups refresh)
SCORING_LAG = timedelta(hours=2)
_INITIAL = timedelta(hours=2)


def rules(config: AnomaliesConfig) -> dict[str, Rule]:
    """The engine's view of the two alerts (name, severity; annotations are the episode's own)."""
    return {severity: Rule(name=ALERTNAME, metrics=["(any)"], op=">=", threshold=config.threshold,
                           hold=config.min_duration, severity=severity)
            for severity in ("warning", "critical")}


def labels_of(rule: Rule, series: SeriesInfo) -> dict[str, str]:
    labels = engine.alert_labels(rule, _engine_series(series))
    labels["series_id"] = str(series.series_id)  # reserved: rules cannot set it; it finds the series back
    return labels


def _engine_series(series: SeriesInfo) -> engine.Series:
    return engine.Series(series.series_id, series.source, series.metric, series.resource, series.labels)


@dataclasses.dataclass
class _Rows:
    ts: np.ndarray  # epoch ns
    surprise: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    description: list[str | None]


def _fetch(conn, schema: str, bounds: dict[int, tuple[int, int]]) -> dict[int, _Rows]:
    """Each series' rows in its own [lo, hi) (epoch ns)."""
    if not bounds:
        return {}
    ids = sorted(bounds)
    rows = conn.execute(
        f"""SELECT a.series_id, (extract(epoch FROM a.bucket) * 1000000)::bigint, a.surprise, a.score, a.flagged,
                   a.description
            FROM unnest(%s::integer[], %s::timestamptz[], %s::timestamptz[]) AS b(sid, lo, hi)
            JOIN {schema}.anomaly_scores a ON a.series_id = b.sid AND a.bucket >= b.lo AND a.bucket < b.hi
            ORDER BY 1, 2""",
        (ids, [dt(bounds[i][0]) for i in ids], [dt(bounds[i][1]) for i in ids])).fetchall()
    grouped: dict[int, list] = {i: [] for i in ids}
    for r in rows:
        grouped[r[0]].append(r)
    return {sid: _rows(group) for sid, group in grouped.items()}


def _rows(rows: list[tuple]) -> _Rows:
    return _Rows(np.array([r[1] for r in rows], dtype=np.int64) * 1000, np.array([r[2] for r in rows], dtype=float),
                 np.array([r[3] for r in rows], dtype=float), np.array([r[4] for r in rows], dtype=bool),
                 [r[5] for r in rows])


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def dt(ns: int) -> datetime:
    """Epoch nanoseconds as a UTC datetime."""
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


def _ns(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * 1000


@dataclasses.dataclass(frozen=True)
class Episode:
    """One episode of a series, as holds of its two alerts (times in epoch ns)."""

    series: SeriesInfo
    warning: Hold | None  # None while it has not lasted min_duration (pending)
    critical: Hold | None
    started_at: int  # the first flagged bucket
    peak_score: float
    description: str  # the band at the first flagged bucket
    pending: Hold | None = None


def episodes(series: SeriesInfo, rows: _Rows, config: AnomaliesConfig, until_ns: int | None) -> list[Episode]:
    """The episodes in one series' rows (sorted by time), pending ones included."""
    if not len(rows.ts):
        return []
    found = []
    min_ns = int(config.min_duration.total_seconds() * _NS)
    crit_ns = int(config.critical_after.total_seconds() * _NS)
    for run in holds(rows.ts, rows.surprise, op=">=", threshold=config.threshold, hold=timedelta(0),
                     max_gap=timedelta(seconds=MAX_GAP_NS / _NS), until_ns=until_ns):
        a = int(np.searchsorted(rows.ts, run.active_at))
        b = int(np.searchsorted(rows.ts, run.last_at))
        flagged = np.flatnonzero(rows.flagged[a:b + 1])
        if not len(flagged):
            continue
        f = a + int(flagged[0])
        start = int(rows.ts[f])
        scores = rows.score[f:b + 1]
        peak = float(scores.max())
        description = rows.description[f] or ""
        k = int(np.searchsorted(rows.ts, start + min_ns, side="left"))
        if k > b:  # not (yet) long enough
            found.append(Episode(series, None, None, start, peak, description,
                                 pending=Hold(start, None, run.resolved_at, run.last_at, peak, b + 1 - f)))
            continue
        warning = Hold(start, int(rows.ts[k]), run.resolved_at, run.last_at, peak, b + 1 - f)
        ts = rows.ts[f:b + 1]
        strong = (np.maximum.accumulate(scores) >= config.critical_score) & (ts >= start + crit_ns) & (ts >= rows.ts[k])
        critical = None
        if strong.any():
            c = f + int(np.argmax(strong))
            critical = Hold(start, int(rows.ts[c]), run.resolved_at, run.last_at, peak, b + 1 - f)
        found.append(Episode(series, warning, critical, start, peak, description))
    return found


def annotations(episode: Episode) -> dict[str, str]:
    s = episode.series
    what = f"{s.metric} on {s.resource}" + (f" ({s.labels['statistic']})" if s.labels.get("statistic") else "")
    band = episode.description or "unusual for this series"
    since = dt(episode.started_at)
    return {
        "summary": f"{what}: {band}",
        "description": (f"{what} is unusual for this series since {since:%Y-%m-%d %H:%M} UTC: {band} "
                        f"(anomaly score {episode.peak_score:.2f}; see v_anomalies)"),
        "band": band,
        "score": f"{episode.peak_score:.2f}",
    }


@dataclasses.dataclass
class _Span:
    series: SeriesInfo
    lo: int
    hi: int
    rows: _Rows
    open_lo: bool = True
    open_hi: bool = True


def _spans(conn, schema: str, series: list[SeriesInfo], start: int, end: int, edges: dict[str, int | None],
           threshold: float, max_rounds: int = 40) -> list[_Span]:
    """Each series' rows around [start, end), widened until no run of the condition crosses an end."""
    width = int(_INITIAL.total_seconds() * _NS)
    spans = {s.series_id: _Span(s, start - width, end + width, None) for s in series}
    todo = {sid: (sp.lo, sp.hi) for sid, sp in spans.items()}
    for _ in range(max_rounds):
        if not todo:
            break
        got = _fetch(conn, schema, todo)
        widened = {}
        for sid, (lo, hi) in todo.items():
            sp = spans[sid]
            sp.lo, sp.hi, sp.rows = lo, hi, got[sid]
            edge = edges.get(sp.series.source)
            horizon = edge + 1000 if edge is not None else hi
            ts = sp.rows.ts
            if not len(ts):
                sp.open_lo = sp.open_hi = False
                continue
            cond = sp.rows.surprise >= threshold
            sp.open_lo = bool(cond[0]) and int(ts[0]) - lo <= MAX_GAP_NS
            sp.open_hi = bool(cond[-1]) and hi - int(ts[-1]) <= MAX_GAP_NS and hi < horizon
            span = max(hi - lo, MAX_GAP_NS)
            new = (lo - span if sp.open_lo else lo, min(hi + span, horizon) if sp.open_hi else hi)
            if new != (lo, hi):
                widened[sid] = new
        todo = widened
    return list(spans.values())


def _edges(conn, schema: str, sources: list[str], lo: datetime, hi: datetime) -> dict[str, int | None]:
    """Per source, the newest bucket scored in [lo, hi): how far its scores reach (bounded, so that
    evaluating an old hour never scans the days since)."""
    if not sources:
        return {}
    rows = conn.execute(
        f"""SELECT s.source, max(a.bucket) FROM {schema}.anomaly_scores a JOIN {schema}.series s USING (series_id)
            WHERE a.bucket >= %s AND a.bucket < %s AND s.source = ANY(%s) GROUP BY 1""", (lo, hi, sources)).fetchall()
    return {source: _ns(at) for source, at in rows}


def _candidates(conn, schema: str, start: datetime, end: datetime, threshold: float) -> set[int]:
    """Series that may own an episode around the window: unusual in it, or with an anomaly alert
    starting in it or still open across it."""
    unusual = conn.execute(
        f"SELECT DISTINCT series_id FROM {schema}.anomaly_scores WHERE bucket >= %s AND bucket < %s AND surprise >= %s",
        (start, end, threshold)).fetchall()
    alerted = conn.execute(
        f"""SELECT DISTINCT (labels ->> 'series_id')::integer FROM {schema}.alerts
            WHERE alertname = %s AND starts_at < %s AND (starts_at >= %s OR ends_at IS NULL OR ends_at > %s)""",
        (ALERTNAME, end, start, start)).fetchall()
    return {sid for (sid,) in unusual} | {sid for (sid,) in alerted if sid is not None}


def evaluate_window(conn: psycopg.Connection, schema: str, config: AnomaliesConfig, start: datetime, end: datetime,
                    now: datetime) -> tuple[engine.WindowResult, list[tuple], list[tuple], list[Episode]]:
    """The episodes around [start, end) (nothing written): the engine's result, owned spans and
    vanished fingerprints (`engine.record`'s input), and the episodes overlapping the window."""
    result = engine.WindowResult()
    owned: list[tuple] = []
    seen: list[Episode] = []
    by_severity = rules(config)
    ids = sorted(_candidates(conn, schema, start, end, config.threshold))
    info = series_info(conn, schema, ids)
    chosen = [info[i] for i in ids if i in info and config.enabled and config.selects(info[i].fields())]
    start_ns, end_ns = _ns(start), _ns(end)
    edges = _edges(conn, schema, sorted({s.source for s in chosen}), start - SCORING_LAG, end + timedelta(days=1))
    floor = _ns(now - SCORING_LAG)
    for sp in _spans(conn, schema, chosen, start_ns, end_ns, edges, config.threshold):
        s = sp.series
        edge = edges.get(s.source)
        owned_hi = None if edge is None or sp.hi > edge else sp.hi
        until = max(edge or 0, floor) if owned_hi is None else sp.hi
        found = episodes(s, sp.rows, config, until)
        result.series += 1
        result.samples += int(((sp.rows.ts >= start_ns) & (sp.rows.ts < end_ns)).sum())
        firing: dict[str, list[engine.Occurrence]] = {"warning": [], "critical": []}
        fields = s.fields()
        for episode in found:
            muted = config.muted(fields, dt(episode.started_at)) is not None
            if episode.pending is not None:
                if not muted and episode.pending.resolved_at is None and episode.pending.last_at >= start_ns:
                    rule = by_severity["warning"]
                    labels = labels_of(rule, s)
                    result.pending.append(engine.Occurrence(rule, _engine_series(s), episode.pending, labels,
                                                            engine.fingerprint(labels), annotations(episode)))
                continue
            if muted:
                continue
            overlaps = False
            for severity in ("warning", "critical"):
                hold = getattr(episode, severity)
                if hold is None:
                    continue
                rule = by_severity[severity]
                labels = labels_of(rule, s)
                occ = engine.Occurrence(rule, _engine_series(s), hold, labels, engine.fingerprint(labels),
                                        annotations(episode))
                if sp.lo <= hold.fired_at and (owned_hi is None or hold.fired_at < owned_hi):
                    firing[severity].append(occ)
                if hold.fired_at < end_ns and (hold.resolved_at is None or hold.resolved_at > start_ns):
                    result.firing.append(occ)
                    overlaps = True
            if overlaps:
                seen.append(episode)
        for severity, rule in by_severity.items():
            labels = labels_of(rule, s)
            owned.append((rule, engine.fingerprint(labels), labels, _engine_series(s), sp.lo, owned_hi, firing[severity]))
    # Alerts starting in the window whose series is no longer scored (excluded since, or disabled): gone.
    # Every series with an alert starting in the window is a candidate, so the others are all evaluated.
    vanished = []
    sources = {src for (src,) in conn.execute(
        f"SELECT DISTINCT labels ->> 'source' FROM {schema}.alerts WHERE alertname = %s AND starts_at >= %s "
        "AND starts_at < %s", (ALERTNAME, start, end)).fetchall()}
    for src in sorted(sources):
        for rule in by_severity.values():
            vanished.append((rule, src, start, end, {engine.fingerprint(labels_of(rule, s)) for s in chosen}))
    return result, owned, vanished, seen


def evaluate_and_record(warehouse: Warehouse, config: AnomaliesConfig, start: datetime, end: datetime, *,
                        now: datetime | None = None, **context) -> tuple[engine.WindowResult, list[Episode]]:
    """Evaluate the episodes around [start, end) and reconcile the `alerts` rows their spans own, in
    one transaction under the alert engine's lock. `context`: run_id, asset_key, partition_key,
    generator_url (as `engine.record` takes them)."""
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    with warehouse.connect() as conn, conn.transaction():
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"metrics_pipeline.alerts:{schema}",))
        result, owned, vanished, seen = evaluate_window(conn, schema, config, start, end, now)
        engine.record(conn, schema, owned, vanished, result, **context)
    return result, seen
