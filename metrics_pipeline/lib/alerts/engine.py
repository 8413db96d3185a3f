"""Evaluate alert rules against the warehouse and keep `alerts` equal to one evaluation over the
whole of every series, whatever the run schedule (SPEC §6, §12).

A run evaluates a window [start, end) (the partition just loaded, a range, or the part of the hour
in progress that is new). For every rule and selected series it reads the raw samples around the
window and **widens the span it reads until no hold crosses either end** (a hold that began hours
before the window, or goes on after it, is read whole, backwards and forwards), so every hold whose
firing time falls in the span is computed exactly as an evaluation over the entire series would.
Then it reconciles: for that series' fingerprint, the rows starting inside the span are exactly
the span's firing holds (upserted), and nothing else (deleted). Rows outside the span are not
this run's to touch. Re-runs, runs in any order, range runs, late data: each run leaves the rows it
owns equal to the whole-series truth for the data as it is now, so the table converges.

What makes that independent of the schedule:

* **Gap tolerance** (`max_gap`, when the rule sets none) is GAP_FACTOR times the series' nominal
  sampling interval for the day (`series_intervals`, kept by the loads), never the spacing of what
  one run happened to read.
* **The data edge is not the end of a condition.** A hold that reaches a series' newest sample is
  firing while the series is not silent: silence is measured against the source's data edge (the
  newest sample any series of that source has) or, when the whole source is quiet, against the
  clock minus how late that source's data normally lands (`data_lag`, e.g. 2 minutes for host
  files, 20 for CloudWatch). Only a series silent for longer than its gap tolerance beyond that is
  resolved, at its last sample + the tolerance (Prometheus resolves a vanished series after its
  5-minute staleness the same way).
* NaN and missing values never meet a condition (`evaluate.holds`).

Identity of a row: (fingerprint, starts_at). The fingerprint hashes the alert's labels; `starts_at`
is the sample at which the hold had lasted `for`; `ends_at` the first sample where it stopped
holding (NULL while firing). A row whose state or end changes is marked for delivery again; one
whose nothing changed is not. Pending holds are returned (check metadata), never recorded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib.alerts.evaluate import OPERATORS, Hold, holds
from metrics_pipeline.lib.alerts.rules import Rule
from metrics_pipeline.lib.warehouse import replace_window as windows
from metrics_pipeline.lib.warehouse.db import Warehouse

#: max_gap when a rule does not set one: this many times the series' median spacing.
GAP_FACTOR = 2.5
_NS = 1_000_000_000


@dataclasses.dataclass(frozen=True)
class Series:
    series_id: int
    source: str
    metric: str
    resource: str
    labels: dict[str, str]


@dataclasses.dataclass(frozen=True)
class Occurrence:
    rule: Rule
    series: Series
    hold: Hold
    labels: dict[str, str]
    fingerprint: str
    #: annotations of this occurrence itself, over the rule's rendered templates (the anomaly check's
    #: readable band, lib/anomalies/alerts.py)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def starts_at(self) -> datetime | None:
        return _dt(self.hold.fired_at)

    @property
    def ends_at(self) -> datetime | None:
        return _dt(self.hold.resolved_at)

    @property
    def active_at(self) -> datetime:
        return _dt(self.hold.active_at)


@dataclasses.dataclass
class WindowResult:
    firing: list[Occurrence] = dataclasses.field(default_factory=list)    # fired, overlapping the window
    pending: list[Occurrence] = dataclasses.field(default_factory=list)   # holding, not (yet) for long enough
    series: int = 0
    samples: int = 0
    written: int = 0
    removed: int = 0


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_US = 1_000  # PostgreSQL keeps microseconds: ns values here are whole microseconds


def _dt(ns: int | None) -> datetime | None:
    return None if ns is None else _EPOCH + timedelta(microseconds=int(ns) // _US)


def _ns(ts: datetime) -> int:
    delta = ts - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * _NS + delta.microseconds * _US


def alert_labels(rule: Rule, series: Series) -> dict[str, str]:
    labels = {k: str(v) for k, v in series.labels.items()}
    labels.update(rule.labels)
    labels.update({"alertname": rule.name, "severity": rule.severity, "source": series.source,
                   "metric": series.metric, "resource": series.resource})
    return labels


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


class _Fields(dict):
    def __missing__(self, key):  # a template may name a label the series does not have
        return ""


def render(template: str, rule: Rule, series: Series, hold: Hold) -> str:
    fields = _Fields(alertname=rule.name, resource=series.resource, metric=series.metric, source=series.source,
                     value=hold.peak, threshold=rule.threshold, severity=rule.severity,
                     labels=_Fields(series.labels), **{"for": _duration_text(rule.hold)})
    try:
        return string.Formatter().vformat(template, (), fields)
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        return f"{template} (template error: {exc})"


def _duration_text(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def select_series(conn: psycopg.Connection, schema: str, rule: Rule, source: str | None = None) -> list[Series]:
    """The series `rule` selects, limited to `source` (the asset being checked) when given."""
    if rule.source and source and rule.source != source:
        return []
    source = source or rule.source
    rows = conn.execute(
        f"SELECT series_id, source, metric, resource, labels FROM {schema}.series "
        "WHERE metric = ANY(%s) AND (%s::text IS NULL OR source = %s)",
        (rule.metrics, source, source),
    ).fetchall()
    found = [Series(i, s, m, r, labels) for i, s, m, r, labels in rows]
    return [s for s in found if rule.matches({**s.labels, "resource": s.resource, "source": s.source})]


def _fetch_points(conn, schema, bounds: dict[int, tuple[int, int]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each series' samples in its own [lo, hi) (epoch ns) as (ts, values) arrays, converted in bulk:
    an hour of 1-second samples for many hosts is millions of rows, too many for per-row datetimes."""
    if not bounds:
        return {}
    ids = list(bounds)
    rows = conn.execute(
        f"""SELECT b.sid, (extract(epoch FROM p.ts) * 1000000)::bigint, p.value
            FROM unnest(%s::integer[], %s::timestamptz[], %s::timestamptz[]) AS b(sid, lo, hi)
            -- both tiers (migration 0026). OFFSET 0 keeps the series condition inside the lateral
            -- subquery, where it reaches each table as an index condition: flattened into this level
            -- it would be a join condition, which PostgreSQL does not push into a UNION ALL.
            CROSS JOIN LATERAL (SELECT q.ts, q.value FROM {schema}.points_in(b.lo, b.hi) q
                                WHERE q.series_id = b.sid OFFSET 0) p
            ORDER BY b.sid, p.ts""",
        (ids, [_dt(bounds[i][0]) for i in ids], [_dt(bounds[i][1]) for i in ids]),
    ).fetchall()
    found = {i: (np.empty(0, dtype=np.int64), np.empty(0)) for i in ids}
    if not rows:
        return found
    sid = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)) * 1000
    values = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    cut = np.flatnonzero(np.diff(sid)) + 1
    for i, t_, v in zip(np.split(sid, cut), np.split(ts, cut), np.split(values, cut)):
        found[int(i[0])] = (t_, v)
    return found


#: SLA rules read hourly rows: consecutive buckets are an hour apart.
SLA_SOURCE = "ingestion_logs"
SLA_GAP = timedelta(hours=1)
#: Nominal interval of a series with no recorded interval (a day with a single sample).
DEFAULT_INTERVAL = timedelta(seconds=60)
#: How late a source's data normally lands, when the configuration does not say.
DEFAULT_DATA_LAG = {"host": timedelta(minutes=2), "custom": timedelta(minutes=2), "cloudwatch": timedelta(minutes=20),
                    "whatap": timedelta(minutes=15), SLA_SOURCE: timedelta(hours=2)}
FALLBACK_DATA_LAG = timedelta(minutes=10)
_DAY_NS = 86_400 * _NS
_EPOCH_DAY = datetime(1970, 1, 1).date()


def _sla_groups(conn, schema, rule: Rule, lo: int, hi: int) -> list[Series]:
    rows = conn.execute(
        f"SELECT DISTINCT company, zone, source_system, object FROM {schema}.sla_hourly "
        "WHERE bucket >= %s AND bucket < %s ORDER BY 1, 2, 3, 4",
        (_dt(lo), _dt(hi)),
    ).fetchall()
    series = []
    for key in rows:
        labels = dict(zip(("company", "zone", "source_system", "object"), key))
        if rule.matches(labels):
            # A stable pseudo-id per group (only used to key this evaluation's arrays).
            pseudo = -int(hashlib.sha256("/".join(key).encode()).hexdigest()[:12], 16)
            series.append(Series(pseudo, SLA_SOURCE, rule.column, "/".join(key), {**labels, "tenant": key[0]}))
    return series


def _fetch_sla(conn, schema, rule: Rule, series: list[Series], bounds: dict[int, tuple[int, int]]):
    """Each SLA group's `rule.column` per hour in its [lo, hi); a bucket without a value is NaN."""
    by_id = {s.series_id: s for s in series}
    found = {}
    for sid, (lo, hi) in bounds.items():
        s = by_id[sid]
        rows = conn.execute(
            f"SELECT bucket, {rule.column} FROM {schema}.sla_hourly WHERE company = %s AND zone = %s "
            "AND source_system = %s AND object = %s AND bucket >= %s AND bucket < %s ORDER BY bucket",
            (s.labels["company"], s.labels["zone"], s.labels["source_system"], s.labels["object"], _dt(lo), _dt(hi)),
        ).fetchall()
        found[sid] = (np.array([_ns(b) for b, _ in rows], dtype=np.int64),
                      np.array([np.nan if v is None else float(v) for _, v in rows], dtype=np.float64))
    return found


def _source_edge(conn, schema, source: str, rule: Rule) -> int | None:
    """The newest sample of `source` (any series): how far that source's data has landed."""
    if rule.kind == "sla":
        row = conn.execute(f"SELECT max(bucket) FROM {schema}.sla_hourly").fetchone()
    else:
        row = conn.execute(
            f"""SELECT max(last.ts) FROM {schema}.series s
                CROSS JOIN LATERAL {schema}.latest_point(s.series_id) last
                WHERE s.source = %s""",
            (source,),
        ).fetchone()
    return _ns(row[0]) if row and row[0] is not None else None


def _intervals(conn, schema, series_ids: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per series: its recorded (day number, interval ns) pairs, days ascending."""
    if not series_ids:
        return {}
    rows = conn.execute(
        f"SELECT series_id, day, interval_s FROM {schema}.series_intervals WHERE series_id = ANY(%s) "
        "ORDER BY series_id, day",
        (series_ids,),
    ).fetchall()
    grouped: dict[int, list] = {}
    for sid, day, seconds in rows:
        grouped.setdefault(sid, []).append(((day - _EPOCH_DAY).days, int(seconds * _NS)))
    return {sid: (np.array([d for d, _ in v], dtype=np.int64), np.array([i for _, i in v], dtype=np.int64))
            for sid, v in grouped.items()}


def _gaps(rule: Rule, ts: np.ndarray, known: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Per sample, the gap tolerance (ns) of the spacing that starts at it."""
    if rule.kind == "sla":
        return np.full(len(ts), int(SLA_GAP.total_seconds() * _NS), dtype=np.int64)
    if rule.max_gap is not None:
        return np.full(len(ts), int(rule.max_gap.total_seconds() * _NS), dtype=np.int64)
    if known is None or not len(known[0]):
        interval = np.full(len(ts), int(DEFAULT_INTERVAL.total_seconds() * _NS), dtype=np.int64)
    else:
        days, per_day = known
        # The interval of the sample's day, else of the nearest earlier recorded day, else the first.
        idx = np.clip(np.searchsorted(days, ts // _DAY_NS, side="right") - 1, 0, len(days) - 1)
        interval = per_day[idx]
    return np.maximum((interval * GAP_FACTOR).astype(np.int64), _NS)


def _max_gap_ns(rule: Rule, known: tuple[np.ndarray, np.ndarray] | None) -> int:
    """The largest gap tolerance the series can have anywhere (to widen spans conservatively)."""
    if rule.kind == "sla":
        return int(SLA_GAP.total_seconds() * _NS)
    if rule.max_gap is not None:
        return int(rule.max_gap.total_seconds() * _NS)
    largest = int(known[1].max()) if known is not None and len(known[1]) else int(DEFAULT_INTERVAL.total_seconds() * _NS)
    return max(int(largest * GAP_FACTOR), _NS)


@dataclasses.dataclass
class _Span:
    """What one rule reads of one series: [lo, hi), widened until no hold crosses either end."""

    series: Series
    lo: int
    hi: int
    max_gap: int
    ts: np.ndarray
    values: np.ndarray
    open_lo: bool = True
    open_hi: bool = True

    def condition(self, rule: Rule) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return OPERATORS[rule.op](self.values, rule.threshold) & np.isfinite(self.values)


def _spans(fetch, rule: Rule, series: list[Series], start: int, end: int, edge: int | None,
           gaps: dict[int, int], max_rounds: int = 40) -> list[_Span]:
    """Read each series around [start, end), widening until both ends are clean: the sample at the
    end does not meet the condition, or more than the widest gap tolerance separates it from the
    end (nothing can be continuous across), or the end is past the source's newest data. Each
    round doubles the width of the spans still open."""
    hold_ns = int(rule.hold.total_seconds() * _NS)
    horizon = edge + _US if edge is not None else end  # one microsecond past the newest sample
    spans = {s.series_id: _Span(s, start - hold_ns - gaps[s.series_id], max(end, start + 1), gaps[s.series_id],
                                np.empty(0, dtype=np.int64), np.empty(0)) for s in series}
    todo = {sid: (sp.lo, sp.hi) for sid, sp in spans.items()}
    for _ in range(max_rounds):
        if not todo:
            break
        got = fetch(todo)
        widened = {}
        for sid, (lo, hi) in todo.items():
            sp = spans[sid]
            sp.lo, sp.hi = lo, hi
            sp.ts, sp.values = got.get(sid, (np.empty(0, dtype=np.int64), np.empty(0)))
            if not len(sp.ts):
                sp.open_lo = sp.open_hi = False
                continue
            cond = sp.condition(rule)
            sp.open_lo = bool(cond[0]) and int(sp.ts[0]) - sp.lo <= sp.max_gap
            sp.open_hi = bool(cond[-1]) and sp.hi - int(sp.ts[-1]) <= sp.max_gap and sp.hi < horizon
            width = max(sp.hi - sp.lo, sp.max_gap, _NS)
            new_lo = sp.lo - width if sp.open_lo else sp.lo
            new_hi = min(sp.hi + width, horizon) if sp.open_hi else sp.hi
            if (new_lo, new_hi) != (sp.lo, sp.hi):
                widened[sid] = (new_lo, new_hi)
        todo = widened
    return list(spans.values())


def evaluate_window(conn: psycopg.Connection, schema: str, rules: list[Rule], start: datetime, end: datetime,
                    now: datetime, source: str | None = None,
                    data_lag: dict[str, timedelta] | None = None) -> tuple[WindowResult, list[tuple], list[tuple]]:
    """Holds of the `rules` around [start, end) (nothing written), on the series of `source` only
    when given. Returns the result for the window, and what each (rule, series) span owns:
    (rule, fingerprint, labels, series, lo, hi or None when open to the data edge, its firing holds);
    and per rule and source the fingerprints evaluated (rows of others starting in the window go)."""
    result = WindowResult()
    owned: list[tuple] = []
    vanished: list[tuple] = []
    # A source's data edge is the same for every rule of one evaluation (one transaction): read it
    # once per source, not once per rule (it probes the newest point of every series of the source).
    seen_edges: dict[tuple[str, str], int | None] = {}

    def edge_of(src: str, rule: Rule) -> int | None:
        key = (rule.kind, src)
        if key not in seen_edges:
            seen_edges[key] = _source_edge(conn, schema, src, rule)
        return seen_edges[key]

    lag = {**DEFAULT_DATA_LAG, **(data_lag or {})}
    start_ns, end_ns, now_ns = _ns(start), _ns(end), _ns(now)
    for rule in rules:
        if rule.kind == "sla":
            if source not in (None, SLA_SOURCE):
                continue
            reach = int((rule.hold + 2 * SLA_GAP).total_seconds() * _NS)
            series = _sla_groups(conn, schema, rule, start_ns - reach, end_ns + reach)
            known = {}

            def fetch(bounds, rule=rule, series=series):
                return _fetch_sla(conn, schema, rule, series, bounds)
            edges = {SLA_SOURCE: edge_of(SLA_SOURCE, rule)}
        else:
            series = select_series(conn, schema, rule, source)
            if not series:
                continue
            known = _intervals(conn, schema, [s.series_id for s in series])

            def fetch(bounds):
                return _fetch_points(conn, schema, bounds)
            edges = {src: edge_of(src, rule) for src in {s.source for s in series}}
        result.series += len(series)
        for src in {s.source for s in series}:
            group = [s for s in series if s.source == src]
            edge = edges[src]
            gap_max = {s.series_id: _max_gap_ns(rule, known.get(s.series_id)) for s in group}
            # Silence is judged against the source's newest data, or the clock minus its usual lag.
            until = max(edge if edge is not None else 0, now_ns - int(lag.get(src, FALLBACK_DATA_LAG).total_seconds() * _NS))
            for sp in _spans(fetch, rule, group, start_ns, end_ns, edge, gap_max):
                s = sp.series
                labels = alert_labels(rule, s)
                fp = fingerprint(labels)
                in_window = (sp.ts >= start_ns) & (sp.ts < end_ns)
                result.samples += int(in_window.sum())
                # A span that reached the source's newest data owns everything after its start, and
                # its last hold is judged against `until`; a bounded span ends at a clean end.
                owned_hi = None if edge is None or sp.hi > edge else sp.hi
                found = holds(sp.ts, sp.values, op=rule.op, threshold=rule.threshold, hold=rule.hold,
                              max_gap=_gaps(rule, sp.ts, known.get(s.series_id)),
                              until_ns=until if owned_hi is None else sp.hi)
                firing = []
                for hold in found:
                    occurrence = Occurrence(rule, s, hold, labels, fp)
                    if hold.firing:
                        if sp.lo <= hold.fired_at and (owned_hi is None or hold.fired_at < owned_hi):
                            firing.append(occurrence)
                        if hold.fired_at < end_ns and (hold.resolved_at is None or hold.resolved_at > start_ns):
                            result.firing.append(occurrence)
                    elif hold.resolved_at is None and hold.last_at >= start_ns:
                        result.pending.append(occurrence)
                owned.append((rule, fp, labels, s, sp.lo, owned_hi, firing))
            # Rows of this rule and source that start in the window, for series no longer evaluated
            # (not selected any more, or without data): gone with their series.
            vanished.append((rule, src, start, end, {fingerprint(alert_labels(rule, s)) for s in group}))
    return result, owned, vanished


def record(conn: psycopg.Connection, schema: str, owned: list[tuple], vanished: list[tuple], result: WindowResult, *,
           run_id: str | None = None, asset_key: str | None = None, partition_key: str | None = None,
           generator_url: str | None = None) -> WindowResult:
    """Make the rows each span owns equal to its firing holds (call inside a transaction)."""
    for rule, fp, labels, s, lo, hi, firing in owned:
        kept: set[datetime] = set()
        for occ in firing:
            annotations = {k: render(v, occ.rule, occ.series, occ.hold) for k, v in occ.rule.annotations.items()}
            annotations.update(occ.annotations)
            annotations["pending_since"] = occ.active_at.isoformat()
            state = "firing" if occ.ends_at is None else "resolved"
            conn.execute(
                f"""INSERT INTO {schema}.alerts (fingerprint, alertname, state, severity, labels, annotations, starts_at,
                                                 ends_at, generator_url, run_id, asset_key, partition_key)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
                        state = EXCLUDED.state, ends_at = EXCLUDED.ends_at, annotations = EXCLUDED.annotations,
                        labels = EXCLUDED.labels, run_id = EXCLUDED.run_id, generator_url = EXCLUDED.generator_url,
                        asset_key = EXCLUDED.asset_key, partition_key = EXCLUDED.partition_key, updated_at = now(),
                        -- a changed state or end must reach every target again; nothing else does
                        last_sent_at = CASE WHEN {schema}.alerts.state IS DISTINCT FROM EXCLUDED.state
                                              OR {schema}.alerts.ends_at IS DISTINCT FROM EXCLUDED.ends_at
                                            THEN NULL ELSE {schema}.alerts.last_sent_at END,
                        webhook_sent_at = CASE WHEN {schema}.alerts.state IS DISTINCT FROM EXCLUDED.state
                                                 OR {schema}.alerts.ends_at IS DISTINCT FROM EXCLUDED.ends_at
                                               THEN NULL ELSE {schema}.alerts.webhook_sent_at END""",
                (fp, rule.name, state, rule.severity, json.dumps(labels), json.dumps(annotations),
                 occ.starts_at, occ.ends_at, generator_url, run_id, asset_key, partition_key),
            )
            kept.add(occ.starts_at)
            result.written += 1
        stale = conn.execute(
            f"SELECT starts_at FROM {schema}.alerts WHERE fingerprint = %s AND starts_at >= %s "
            "AND (%s::timestamptz IS NULL OR starts_at < %s)",
            (fp, _dt(lo), _dt(hi), _dt(hi)),
        ).fetchall()
        for (starts_at,) in stale:
            if starts_at not in kept:
                conn.execute(f"DELETE FROM {schema}.alerts WHERE fingerprint = %s AND starts_at = %s", (fp, starts_at))
                result.removed += 1
    for rule, src, start, end, fps in vanished:
        rows = conn.execute(
            f"""SELECT fingerprint, starts_at FROM {schema}.alerts WHERE alertname = %s AND severity = %s
                AND labels ->> 'source' = %s AND starts_at >= %s AND starts_at < %s""",
            (rule.name, rule.severity, src, start, end),
        ).fetchall()
        for fp, starts_at in rows:
            if fp not in fps:
                conn.execute(f"DELETE FROM {schema}.alerts WHERE fingerprint = %s AND starts_at = %s", (fp, starts_at))
                result.removed += 1
    return result


def evaluate_and_record(warehouse: Warehouse, rules: list[Rule], start: datetime, end: datetime, *,
                        now: datetime | None = None, source: str | None = None,
                        data_lag: dict[str, timedelta] | None = None, **context) -> WindowResult:
    """Evaluate the rules around [start, end) and reconcile the rows their spans own, in one transaction."""
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    with warehouse.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"metrics_pipeline.alerts:{schema}",))
        result, owned, vanished = evaluate_window(conn, schema, rules, start, end, now, source, data_lag)
        return record(conn, schema, owned, vanished, result, **context)
