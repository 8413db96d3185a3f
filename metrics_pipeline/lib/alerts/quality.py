"""The data-quality questions the asset checks ask of an hour (SPEC §6), one SQL query each.

Each takes the `Warehouse` and a window and returns plain rows; the checks in `defs/alerts/checks.py`
turn them into pass/fail and metadata.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from psycopg.rows import dict_row

from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.warehouse.db import Warehouse

#: Quarantine ratio thresholds (share of the hour's records refused).
QUARANTINE_WARN = 0.01
QUARANTINE_ERROR = 0.05
#: Completeness below this is reported.
MIN_COMPLETENESS = 0.9
#: Units whose values can never be negative.
NON_NEGATIVE_UNITS = ("bytes", "bytes_per_second", "count", "count_per_second", "seconds", "milliseconds", "ratio")
MAX_ROWS = markdown.MAX_ROWS


def out_of_range(warehouse: Warehouse, source: str, start: datetime, end: datetime) -> list[dict]:
    """Series of `source` with samples outside their unit's range in [start, end)."""
    schema = warehouse.schema
    with warehouse.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT s.metric, s.resource, s.unit, count(*) AS samples, min(p.value) AS min, max(p.value) AS max,
                       min(p.ts) AS first_at
                FROM {schema}.points_in(%(start)s, %(end)s) p JOIN {schema}.series s ON s.series_id = p.series_id
                WHERE s.source = %(source)s
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


def quarantine_ratio(warehouse: Warehouse, start: datetime, end: datetime) -> QuarantineRatio:
    """Ingestion records of [start, end) loaded and quarantined, with the quarantine reasons."""
    schema = warehouse.schema
    with warehouse.connect() as conn:
        return _quarantine_ratio(conn, schema, start, end)


def _quarantine_ratio(conn, schema: str, start: datetime, end: datetime) -> QuarantineRatio:
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


def incomplete_series(warehouse: Warehouse, start: datetime, end: datetime) -> list[dict]:
    """Series silent in [start, end) or below MIN_COMPLETENESS of their expected samples."""
    schema = warehouse.schema
    with warehouse.connect() as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT s.source, s.metric, s.resource, h.bucket, h.no_data, h.received, h.expected,
                       round(h.completeness::numeric, 3) AS completeness, h.max_gap_s
                FROM {schema}.series_health_hourly h JOIN {schema}.series s ON s.series_id = h.series_id
                WHERE h.bucket >= %s AND h.bucket < %s AND (h.no_data OR h.completeness < %s)
                ORDER BY h.no_data DESC, h.completeness, s.source, s.metric, s.resource""",
            (start, end, MIN_COMPLETENESS),
        ).fetchall()


def occurrence_table(occurrences, limit: int = MAX_ROWS) -> str:
    """Firing and pending alerts: which series, when, how far past the threshold."""
    rows = [
        {"alertname": o.rule.name, "severity": o.rule.severity, "state": "firing" if o.hold.firing else "pending",
         "source": o.series.source, "metric": o.series.metric, "resource": o.series.resource,
         "pending_since": o.active_at, "fired_at": o.starts_at or "", "resolved_at": o.ends_at or "",
         "peak": o.hold.peak, "threshold": f"{o.rule.op} {o.rule.threshold:g} for {o.rule.hold}"}
        for o in occurrences
    ]
    return markdown.records_table(rows, limit=limit)


def sla_rows_missing(warehouse: Warehouse, start: datetime, end: datetime) -> int:
    """`sla_hourly` rows of [start, end) that missed their SLA."""
    with warehouse.connect() as conn:
        return conn.execute(
            f"SELECT count(*) FROM {warehouse.schema}.sla_hourly WHERE bucket >= %s AND bucket < %s AND NOT sla_met",
            (start, end),
        ).fetchone()[0]
