"""The SQL behind the data-quality checks, and the small markdown tables their metadata shows."""

from __future__ import annotations

import dataclasses
from datetime import datetime

import psycopg
from psycopg.rows import dict_row

#: Quarantine ratio thresholds (share of the hour's records refused).
QUARANTINE_WARN = 0.01
QUARANTINE_ERROR = 0.05
#: Completeness below this is reported.
MIN_COMPLETENESS = 0.9
#: Units whose values can never be negative.
NON_NEGATIVE_UNITS = ("bytes", "bytes_per_second", "count", "count_per_second", "seconds", "milliseconds", "ratio")
MAX_ROWS = 20


def out_of_range(conn: psycopg.Connection, schema: str, source: str, start: datetime, end: datetime) -> list[dict]:
    """Series of `source` with samples outside their unit's range in [start, end)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT s.metric, s.resource, s.unit, count(*) AS samples, min(p.value) AS min, max(p.value) AS max,
                       min(p.ts) AS first_at
                FROM {schema}.points p JOIN {schema}.series s ON s.series_id = p.series_id
                WHERE s.source = %(source)s AND p.ts >= %(start)s AND p.ts < %(end)s
                  AND ((s.unit = 'percent' AND (p.value < 0 OR p.value > 100))
                       OR (s.unit = 'ratio' AND p.value > 1)
                       OR (s.unit = ANY(%(non_negative)s) AND p.value < 0))
                GROUP BY s.metric, s.resource, s.unit ORDER BY samples DESC, s.metric, s.resource""",
            {"source": source, "start": start, "end": end, "non_negative": list(NON_NEGATIVE_UNITS)},
        ).fetchall()


@dataclasses.dataclass(frozen=True)
class QuarantineRatio:
    loaded: int
    quarantined: int
    reasons: list[dict]

    @property
    def share(self) -> float:
        total = self.loaded + self.quarantined
        return self.quarantined / total if total else 0.0


def quarantine_ratio(conn: psycopg.Connection, schema: str, start: datetime, end: datetime) -> QuarantineRatio:
    loaded = conn.execute(
        f"SELECT count(*) FROM {schema}.ingestion_runs WHERE started_at >= %s AND started_at < %s", (start, end)
    ).fetchone()[0]
    with conn.cursor(row_factory=dict_row) as cur:
        reasons = cur.execute(
            f"""SELECT reason, count(*) AS records, min(source_file) AS example_file FROM {schema}.quarantine
                WHERE source = 'ingestion_logs' AND record_hour >= %s AND record_hour < %s
                GROUP BY reason ORDER BY records DESC, reason""",
            (start, end),
        ).fetchall()
    return QuarantineRatio(loaded, sum(r["records"] for r in reasons), reasons)


def incomplete_series(conn: psycopg.Connection, schema: str, start: datetime, end: datetime) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT s.source, s.metric, s.resource, h.bucket, h.no_data, h.received, h.expected,
                       round(h.completeness::numeric, 3) AS completeness, h.max_gap_s
                FROM {schema}.series_health_hourly h JOIN {schema}.series s ON s.series_id = h.series_id
                WHERE h.bucket >= %s AND h.bucket < %s AND (h.no_data OR h.completeness < %s)
                ORDER BY h.no_data DESC, h.completeness, s.source, s.metric, s.resource""",
            (start, end, MIN_COMPLETENESS),
        ).fetchall()


def rows_table(rows: list[dict], limit: int = MAX_ROWS) -> str:
    """A markdown table of the first `limit` rows (all keys as columns)."""
    if not rows:
        return "none"
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(_cell(row[c]) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more not shown")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def occurrence_table(occurrences, limit: int = MAX_ROWS) -> str:
    """Firing and pending alerts: which series, when, how far past the threshold."""
    rows = [
        {"alertname": o.rule.name, "severity": o.rule.severity, "state": "firing" if o.hold.firing else "pending",
         "source": o.series.source, "metric": o.series.metric, "resource": o.series.resource,
         "pending_since": o.active_at, "fired_at": o.starts_at or "", "resolved_at": o.ends_at or "",
         "peak": o.hold.peak, "threshold": f"{o.rule.op} {o.rule.threshold:g} for {o.rule.hold}"}
        for o in occurrences
    ]
    return rows_table(rows, limit)
