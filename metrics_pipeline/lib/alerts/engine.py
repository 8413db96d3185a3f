"""Evaluate metric alert rules over a window of the warehouse and record alerts (SPEC §6).

For a window [start, end) (the partition just materialised), each rule reads the raw points of
the series it selects from `start - lookback` (so holds crossing `start` are seen whole, see
`evaluate.lookback`) to `end`, finds the holds at the data's resolution, and records every
**firing** hold that overlaps the window in `alerts`, one row per occurrence:

* identity: (fingerprint, starts_at). The fingerprint hashes the alert's labels (alertname,
  severity, source, metric, resource, the series' labels, the rule's labels), so the same alert on
  the same series always has the same fingerprint, and Alertmanager can group and de-duplicate;
* `starts_at` is the sample at which the hold had lasted `for`; `ends_at` the sample where it
  stopped holding (NULL while firing); an occurrence that started in an earlier window continues
  the row recorded then instead of opening a second one;
* re-running a window gives the same rows: occurrences that start in the window are upserted,
  rows that start in the window and are no longer produced (the data changed) are deleted, in one
  transaction. A row whose state or end changed is marked for delivery again.
Pending holds are returned (check metadata) but not recorded: Alertmanager never sees pending.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import string
from datetime import datetime, timedelta, timezone

import numpy as np
import psycopg

from metrics_pipeline.lib.alerts.evaluate import Hold, holds, lookback
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


def _dt(ns: int | None) -> datetime | None:
    return None if ns is None else datetime.fromtimestamp(ns / _NS, tz=timezone.utc)


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * _NS)


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


def _points(conn, schema, series_ids, start, end) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each series' samples in [start, end) as (epoch ns, values) arrays, converted in bulk: an hour
    of 1-second samples for many hosts is millions of rows, too many for per-row datetimes."""
    rows = conn.execute(
        f"SELECT series_id, (extract(epoch FROM ts) * 1000000)::bigint, value FROM {schema}.points "
        "WHERE series_id = ANY(%s) AND ts >= %s AND ts < %s ORDER BY series_id, ts",
        (series_ids, start, end),
    ).fetchall()
    if not rows:
        return {}
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)) * 1000
    values = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
    bounds = np.flatnonzero(np.diff(ids)) + 1
    return {int(i[0]): (t, v) for i, t, v in zip(np.split(ids, bounds), np.split(ts, bounds), np.split(values, bounds))}


#: SLA rules read hourly rows: consecutive buckets are an hour apart.
SLA_SOURCE = "ingestion_logs"
SLA_GAP = timedelta(hours=1)


def _sla_rows(conn, schema, rule: Rule, start, end) -> tuple[list[Series], dict[int, tuple[np.ndarray, np.ndarray]]]:
    """Each (company, zone, source_system, object) of sla_hourly as a pseudo-series of `rule.column`.

    A bucket without a value (no runs: failure_rate is NULL) does not meet any condition."""
    rows = conn.execute(
        f"SELECT company, zone, source_system, object, bucket, {rule.column} FROM {schema}.sla_hourly "
        "WHERE bucket >= %s AND bucket < %s ORDER BY company, zone, source_system, object, bucket",
        (start, end),
    ).fetchall()
    groups: dict[tuple, list] = {}
    for company, zone, system, obj, bucket, value in rows:
        groups.setdefault((company, zone, system, obj), []).append((bucket, value))
    series, data = [], {}
    for i, (key, samples) in enumerate(groups.items()):
        labels = dict(zip(("company", "zone", "source_system", "object"), key))
        if not rule.matches(labels):
            continue
        s = Series(-(i + 1), SLA_SOURCE, rule.column, "/".join(key), {**labels, "tenant": key[0]})
        series.append(s)
        data[s.series_id] = (np.array([_ns(b) for b, _ in samples], dtype=np.int64),
                             np.array([np.nan if v is None else float(v) for _, v in samples]))
    return series, data


def _max_gap(rule: Rule, ts: np.ndarray) -> timedelta:
    if rule.max_gap is not None:
        return rule.max_gap
    spacing = float(np.median(np.diff(ts))) / _NS if len(ts) > 1 else 60.0
    return timedelta(seconds=max(1.0, GAP_FACTOR * spacing))


def evaluate_window(conn: psycopg.Connection, schema: str, rules: list[Rule], start: datetime, end: datetime,
                    now: datetime, source: str | None = None) -> WindowResult:
    """Firing and pending occurrences of the metric `rules` over [start, end) (nothing written),
    on the series of `source` only when given (each source's partition evaluates its own series)."""
    result = WindowResult()
    until = _ns(min(end, now))
    for rule in rules:
        if rule.kind == "sla":
            if source not in (None, SLA_SOURCE):
                continue
            reach = lookback(rule.hold, SLA_GAP)
            series, data = _sla_rows(conn, schema, rule, start - reach, end)
        else:
            series = select_series(conn, schema, rule, source)
            if not series:
                continue
            # Lookback: `for` plus a generous gap; the exact gap is per series, known once its data is read.
            reach = lookback(rule.hold, rule.max_gap or timedelta(minutes=10))
            data = _points(conn, schema, [s.series_id for s in series], start - reach, end)
        result.series += len(series)
        for s in series:
            if s.series_id not in data:
                continue
            ts, values = data[s.series_id]
            result.samples += int(((ts >= _ns(start)) & (ts < _ns(end))).sum())
            labels = alert_labels(rule, s)
            fp = fingerprint(labels)
            gap = SLA_GAP if rule.kind == "sla" else _max_gap(rule, ts)
            for hold in holds(ts, values, op=rule.op, threshold=rule.threshold, hold=rule.hold,
                              max_gap=gap, until_ns=until):
                ends = hold.resolved_at if hold.resolved_at is not None else until + 1
                if ends < _ns(start):
                    continue  # over before the window (a resolution exactly at its start is still its news)
                occurrence = Occurrence(rule, s, hold, labels, fp)
                if hold.firing and hold.fired_at < _ns(end):
                    result.firing.append(occurrence)
                elif not hold.firing and hold.resolved_at is None:
                    result.pending.append(occurrence)
    return result


def record(conn: psycopg.Connection, schema: str, result: WindowResult, rules: list[Rule], start: datetime,
           end: datetime, *, source: str | None = None, run_id: str | None = None, asset_key: str | None = None,
           partition_key: str | None = None, generator_url: str | None = None) -> WindowResult:
    """Write `result.firing` into `alerts` for [start, end), idempotently (call inside a transaction)."""
    names = sorted({r.name for r in rules})
    kept: set[tuple[str, datetime]] = set()
    for occ in result.firing:
        annotations = {k: render(v, occ.rule, occ.series, occ.hold) for k, v in occ.rule.annotations.items()}
        annotations["pending_since"] = occ.active_at.isoformat()
        starts_at = occ.starts_at
        if starts_at < start:
            # Fired in an earlier window: continue the row recorded then (its start is the true one).
            row = conn.execute(
                f"SELECT starts_at FROM {schema}.alerts WHERE fingerprint = %s AND starts_at < %s "
                "AND (ends_at IS NULL OR ends_at >= %s) ORDER BY starts_at DESC LIMIT 1",
                (occ.fingerprint, start, occ.starts_at),
            ).fetchone()
            if row:
                starts_at = row[0]
        state = "firing" if occ.ends_at is None else "resolved"
        conn.execute(
            f"""INSERT INTO {schema}.alerts (fingerprint, alertname, state, severity, labels, annotations, starts_at,
                                             ends_at, generator_url, run_id, asset_key, partition_key)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (fingerprint, starts_at) DO UPDATE SET
                    state = EXCLUDED.state, ends_at = EXCLUDED.ends_at, annotations = EXCLUDED.annotations,
                    labels = EXCLUDED.labels, run_id = EXCLUDED.run_id, generator_url = EXCLUDED.generator_url,
                    asset_key = EXCLUDED.asset_key, partition_key = EXCLUDED.partition_key, updated_at = now(),
                    -- a changed state or end must reach every target again
                    last_sent_at = CASE WHEN {schema}.alerts.state IS DISTINCT FROM EXCLUDED.state
                                          OR {schema}.alerts.ends_at IS DISTINCT FROM EXCLUDED.ends_at
                                        THEN NULL ELSE {schema}.alerts.last_sent_at END,
                    webhook_sent_at = CASE WHEN {schema}.alerts.state IS DISTINCT FROM EXCLUDED.state
                                             OR {schema}.alerts.ends_at IS DISTINCT FROM EXCLUDED.ends_at
                                           THEN NULL ELSE {schema}.alerts.webhook_sent_at END""",
            (occ.fingerprint, occ.rule.name, state, occ.rule.severity, json.dumps(occ.labels), json.dumps(annotations),
             starts_at, occ.ends_at, generator_url, run_id, asset_key, partition_key),
        )
        kept.add((occ.fingerprint, starts_at))
        result.written += 1
    # Rows of these rules (and this source) that started in this window but are no longer
    # produced: the data changed since they were recorded.
    stale = conn.execute(
        f"SELECT fingerprint, starts_at FROM {schema}.alerts WHERE alertname = ANY(%s) AND starts_at >= %s "
        "AND starts_at < %s AND (%s::text IS NULL OR labels ->> 'source' = %s)",
        (names, start, end, source, source),
    ).fetchall()
    for fp, starts_at in stale:
        if (fp, starts_at) not in kept:
            conn.execute(f"DELETE FROM {schema}.alerts WHERE fingerprint = %s AND starts_at = %s", (fp, starts_at))
            result.removed += 1
    return result


def evaluate_and_record(warehouse: Warehouse, rules: list[Rule], start: datetime, end: datetime, *, now: datetime | None = None,
                        source: str | None = None, **context) -> WindowResult:
    """Evaluate and record the metric rules over [start, end) in one transaction."""
    schema = warehouse.schema
    start, end = windows.utc(start, "start"), windows.utc(end, "end")
    now = windows.utc(now or datetime.now(timezone.utc), "now")
    with warehouse.connect() as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"metrics_pipeline.alerts:{schema}",))
        result = evaluate_window(conn, schema, rules, start, end, now, source)
        return record(conn, schema, result, rules, start, end, source=source, **context)
