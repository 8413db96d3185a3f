"""Series, current values, history, summaries and alerts of a tenant, for the HTTP API (issue 19).

Every read goes through the BI views as the key's tenant (`reads.as_tenant`: the API's reader role
and the tenant setting of migration 0016): their tenant arms (`bi_tenant_*`, what a v_* view reads
for a restricted login; `bi.API_VIEWS`), so no query here carries a tenant condition of its own;
percentiles over spans no tier bucket has add up the rows' sketches through the API's sketch views
(migration 0017), never averaging percentiles.

Which data answers a history or a summary ("the tier") is chosen from the span, the step and what
retention still holds (`choose_tier`, `summary_tier`); the answer names the tier and the span it
covers, since a tier's buckets may widen the span asked for to whole buckets.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
from psycopg import sql
from psycopg.types.json import Jsonb

from metrics_pipeline.lib.custom.reads import as_tenant
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.retention import RetentionConfig

#: Steps one history answer may hold per series (as Prometheus' 11,000), and in all (series x steps).
MAX_POINTS = 11_000
MAX_TOTAL_POINTS = 110_000
#: Series one history or summary may cover.
MAX_SERIES = 500
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
STATISTICS = ("avg", "min", "max", "sum", "count", "last", "p50", "p95", "p99")
#: Steps start at floor(ts / step) * step in UTC (SPEC §12); the rollups' buckets (5 m, 1 h, 1 d) align with them.
ORIGIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
SERIES_COLUMNS = "series_id, source, metric, resource, unit, labels"


class BadQuery(ValueError):
    """A request this module cannot answer as asked; the message says what to change."""


@dataclass(frozen=True)
class Tier:
    name: str  # raw, 5m, 1h, 1d
    width: timedelta  # zero for raw points
    view: str
    sketches: str | None  # the API's sketch view of the tier (None for raw)

    @property
    def raw(self) -> bool:
        return not self.width


RAW = Tier("raw", timedelta(0), "bi_tenant_points", None)
TIERS = (RAW, Tier("5m", timedelta(minutes=5), "api_rollup_5m", "api_sketch_5m"),
         Tier("1h", timedelta(hours=1), "api_rollup_1h", "api_sketch_1h"),
         Tier("1d", timedelta(days=1), "api_rollup_1d", "api_sketch_1d"))


def kept(tier: Tier, retention: RetentionConfig) -> timedelta:
    """How far back `tier` is kept (retention drops whole partitions, so never less than this)."""
    return {"raw": retention.points, "5m": retention.rollup_5m, "1h": retention.rollup_1h,
            "1d": retention.rollup_1d}[tier.name]


_STEP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_step(text: str) -> timedelta:
    """`300`, `300s`, `5m`, `1h`, `1d`, `1w`: a positive whole number of seconds."""
    match = _STEP.match(text)
    if not match:
        raise BadQuery(f"step: {text[:40]!r} is not a duration (e.g. 60, 60s, 5m, 1h, 1d)")
    seconds = float(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds < 1 or seconds != int(seconds):
        raise BadQuery(f"step: {text[:40]!r} must be a whole number of seconds, at least 1")
    return timedelta(seconds=int(seconds))


def _floor(ts: datetime, width: timedelta) -> datetime:
    return ts - (ts - ORIGIN) % width


def _ceil(ts: datetime, width: timedelta) -> datetime:
    floor = _floor(ts, width)
    return floor if floor == ts else floor + width


def _aligned(ts: datetime, width: timedelta) -> bool:
    return (ts - ORIGIN) % width == timedelta(0)


def _human(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


@dataclass(frozen=True)
class Filters:
    """Which series: every given field must match (a list: any of its values); labels all match."""

    source: Sequence[str] = ()
    metric: Sequence[str] = ()
    resource: Sequence[str] = ()
    labels: dict[str, str] = field(default_factory=dict)

    def where(self, params: dict) -> list[sql.Composable]:
        conditions: list[sql.Composable] = []
        for column in ("source", "metric", "resource"):
            values = list(getattr(self, column))
            if values:
                params[f"f_{column}"] = values
                conditions.append(sql.SQL("{} = ANY({})").format(sql.Identifier(column), sql.Placeholder(f"f_{column}")))
        if self.labels:
            params["f_labels"] = Jsonb(self.labels)
            conditions.append(sql.SQL("labels @> %(f_labels)s"))
        return conditions


def _where(conditions: list[sql.Composable]) -> sql.Composable:
    return sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("true")


def _utc(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def _encode(value: int) -> str:
    return base64.urlsafe_b64encode(str(value).encode()).decode().rstrip("=")


def _decode(cursor: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode())
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise BadQuery("cursor is not one this API returned (pass next_cursor back unchanged)") from None


def _describe(row: Sequence) -> dict:
    series_id, source, metric, resource, unit, labels = row[:6]
    return {"series_id": series_id, "source": source, "metric": metric, "resource": resource, "unit": unit,
            "labels": labels or {}}


@dataclass(frozen=True)
class Page:
    items: list[dict]
    next_cursor: str | None


def _paged(warehouse: Warehouse, tenant: str, view: str, columns: str, id_column: str, conditions, params: dict,
           limit: int, cursor: str | None, descending: bool = False) -> tuple[list[tuple], str | None]:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadQuery(f"limit must be between 1 and {MAX_LIMIT:,}")
    params = {**params, "limit": limit + 1}
    if cursor:
        params["after"] = _decode(cursor)
        conditions = [*conditions, sql.SQL("{} {} %(after)s").format(sql.Identifier(id_column),
                                                                     sql.SQL("<" if descending else ">"))]
    query = sql.SQL("SELECT {columns} FROM {schema}.{view} WHERE {where} ORDER BY {id} {order} LIMIT %(limit)s").format(
        columns=sql.SQL(columns), schema=sql.Identifier(warehouse.schema), view=sql.Identifier(view),
        where=_where(conditions), id=sql.Identifier(id_column), order=sql.SQL("DESC" if descending else "ASC"))
    with as_tenant(warehouse, tenant) as conn:
        rows = conn.execute(query, params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, _encode(rows[-1][0]) if more else None


def series(warehouse: Warehouse, tenant: str, filters: Filters, *, limit: int = DEFAULT_LIMIT,
           cursor: str | None = None) -> Page:
    """The tenant's series matching `filters`, by series_id."""
    params: dict = {}
    rows, next_cursor = _paged(warehouse, tenant, "bi_tenant_series", f"{SERIES_COLUMNS}, first_seen", "series_id",
                               filters.where(params), params, limit, cursor)
    return Page([{**_describe(row), "first_seen": _utc(row[6])} for row in rows], next_cursor)


def latest(warehouse: Warehouse, tenant: str, filters: Filters, *, limit: int = DEFAULT_LIMIT,
           cursor: str | None = None) -> Page:
    """The latest raw sample of each matching series still holding one, and its age in seconds."""
    params: dict = {}
    rows, next_cursor = _paged(warehouse, tenant, "bi_tenant_latest", f"{SERIES_COLUMNS}, ts, value, age_s", "series_id",
                               filters.where(params), params, limit, cursor)
    return Page([{**_describe(row), "ts": _utc(row[6]), "value": row[7], "age_s": row[8]} for row in rows],
                next_cursor)


def alerts(warehouse: Warehouse, tenant: str, *, state: str = "firing", severity: Sequence[str] = (),
           source: Sequence[str] = (), resource: Sequence[str] = (), since: datetime | None = None,
           limit: int = DEFAULT_LIMIT, cursor: str | None = None) -> Page:
    """The tenant's alert episodes, newest first: firing ones (`state=firing`), resolved ones, or any."""
    if state not in ("firing", "resolved", "any"):
        raise BadQuery(f"state: {state[:20]!r} is not one of firing, resolved, any")
    conditions: list[sql.Composable] = []
    params: dict = {}
    if state != "any":
        conditions.append(sql.SQL("state = %(state)s"))
        params["state"] = state
    if severity:
        conditions.append(sql.SQL("severity = ANY(%(severity)s)"))
        params["severity"] = list(severity)
    for label, values in (("source", source), ("resource", resource)):
        if values:
            conditions.append(sql.SQL("labels ->> {} = ANY({})").format(sql.Literal(label), sql.Placeholder(label)))
            params[label] = list(values)
    if since is not None:
        conditions.append(sql.SQL("(ends_at IS NULL OR ends_at >= %(since)s)"))
        params["since"] = since
    rows, next_cursor = _paged(
        warehouse, tenant, "bi_tenant_alerts",
        "alert_id, alertname, severity, state, starts_at, ends_at, duration_s, labels, summary, description, "
        "fingerprint, asset_key, partition_key, generator_url", "alert_id", conditions, params, limit, cursor,
        descending=True)
    names = ("alert_id", "alertname", "severity", "state", "starts_at", "ends_at", "duration_s", "labels", "summary",
             "description", "fingerprint", "asset_key", "partition_key", "generator_url")
    items = []
    for row in rows:
        item = dict(zip(names, row, strict=True))
        item["starts_at"] = _utc(item["starts_at"])
        item["ends_at"] = _utc(item["ends_at"]) if item["ends_at"] else None
        items.append(item)
    return Page(items, next_cursor)


# -- history and summaries ---------------------------------------------------------------------

def choose_tier(start: datetime, end: datetime, step: timedelta, now: datetime,
                retention: RetentionConfig) -> tuple[Tier, datetime, datetime]:
    """The coarsest tier whose buckets make up whole steps and which still holds `start`, and the
    span it covers: [start, end) widened to whole steps (steps align in UTC from 2000-01-01)."""
    start, end = _floor(start, step), _ceil(end, step)
    usable = [t for t in TIERS if (t.raw or step % t.width == timedelta(0)) and start >= now - kept(t, retention)]
    if not usable:
        finest = next((t for t in TIERS[1:] if start >= now - kept(t, retention)), None)
        if finest is None:
            raise BadQuery(f"from: {_utc(start)} is older than every tier keeps (1d rollups: "
                           f"{_human(kept(TIERS[-1], retention))})")
        raise BadQuery(f"step {_human(step)}: raw points are kept {_human(retention.points)} and `from` is older; "
                       f"the {finest.name} rollups that hold it need a step that is a multiple of "
                       f"{_human(finest.width)}")
    return usable[-1], start, end


def _quantile(name: str) -> float | None:
    return int(name[1:]) / 100 if name.startswith("p") else None


def _raw_expression(statistic: str) -> sql.Composable:
    q = _quantile(statistic)
    if q is not None:  # the sample of rank floor(q (n - 1)), as the rollups estimate (numpy "lower")
        return sql.SQL("(array_agg(value ORDER BY value))[floor({} * (count(*) - 1))::int + 1]").format(sql.Literal(q))
    return sql.SQL({"avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)",
                    "count": "count(*)::double precision",
                    "last": "(array_agg(value ORDER BY ts DESC))[1]"}[statistic])


def _tier_expression(statistic: str) -> sql.Composable:
    return sql.SQL({"avg": "sum(sum) / sum(samples)", "min": "min(min)", "max": "max(max)", "sum": "sum(sum)",
                    "count": "sum(samples)::double precision",
                    "last": "(array_agg(last ORDER BY bucket_start DESC))[1]"}[statistic])


def _plain(schema: str, tier: Tier, statistic: str, lo: str = "start", hi: str = "end") -> sql.Composable:
    """One scan of the tier between the parameters `lo` and `hi`: per series and step, the statistic
    its rows hold (a percentile of one row) or add up exactly."""
    if tier.raw:
        expression = _raw_expression(statistic)
    else:
        expression = sql.SQL("max({})").format(sql.Identifier(statistic)) if _quantile(statistic) else \
            _tier_expression(statistic)
    ts = sql.Identifier("ts" if tier.raw else "bucket_start")
    return sql.SQL("SELECT series_id, date_bin(%(step)s, {ts}, %(origin)s) AS g, {expression} AS v FROM {schema}.{view} "
                   "WHERE series_id = ANY(%(ids)s) AND {ts} >= {lo} AND {ts} < {hi} GROUP BY 1, 2").format(
        expression=expression, schema=sql.Identifier(schema), view=sql.Identifier(tier.view), ts=ts,
        lo=sql.Placeholder(lo), hi=sql.Placeholder(hi))


def _needs_merge(tier: Tier, statistic: str, step: timedelta | None) -> bool:
    """A percentile over more than one rollup row: the rows' sketches are added up (`_merged`)."""
    return not tier.raw and _quantile(statistic) is not None and step != tier.width


# The rows' extremes and their sketches come in two statements, matched here by (series, step): a
# join of the two barrier views cost more than both (history of a week at 6 h: 8 -> 5 ms).
_MERGE_EXTREMES = """
SELECT series_id, date_bin(%(step)s, bucket_start, %(origin)s) AS g, min(min), max(max)
FROM {schema}.{view}
WHERE series_id = ANY(%(ids)s) AND bucket_start >= %(start)s AND bucket_start < %(tier_end)s
GROUP BY 1, 2
"""

_MERGE_SKETCHES = """
SELECT series_id, date_bin(%(step)s, bucket, %(origin)s) AS g, array_send(sketch_keys), array_send(sketch_counts)
FROM {schema}.{sketches}
WHERE series_id = ANY(%(ids)s) AND bucket >= %(start)s AND bucket < %(tier_end)s
ORDER BY 1, 2
"""


def sketch_value(key: int) -> float:
    """The representative of a sketch bin (migration 0005's `sketch_value`)."""
    if key > 0:
        return 0.99 * math.exp((key - 1_000_000) * 0.020000666706669)
    if key < 0:
        return -0.99 * math.exp((-key - 1_000_000) * 0.020000666706669)
    return 0.0


# PostgreSQL's binary array format (array_send): ndim, has-nulls, element type, then per dimension its
# length and lower bound; then each element as its length and its big-endian bytes. Sketch arrays are
# one-dimensional without NULLs. Read straight into numpy: letting psycopg build a Python list of every
# bin of every row cost 4x the query (a year of daily sketches of 10 series: 438,000 numbers).


def _array(data: bytes, dtype: np.dtype, out=np.int64) -> np.ndarray:
    if int.from_bytes(data[:4], "big") == 0:  # no dimension: an empty array
        return np.empty(0, dtype=out)
    return np.frombuffer(data, dtype=dtype, offset=20)["value"].astype(out)


def _elements(blobs: Sequence[bytes], wide: bool) -> tuple[np.ndarray, np.ndarray]:
    """The elements of many array_send blobs (int4[], or int8[] when `wide`), concatenated, as int64,
    and how many each blob holds: one numpy gather for them all (a year of daily sketches of 10
    series is 7,300 blobs; decoding them one by one cost as much as the query). Every element is a
    4-byte length and its value, so every value starts on a 4-byte word: blob i's element j is at
    word start_i + 5 + (2 or 3) j + 1."""
    if not blobs:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    size = 12 if wide else 8
    lengths = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
    counts = np.where(lengths >= 20, (lengths - 20) // size, 0)  # an empty array is a 12-byte header
    if np.any((lengths >= 20) & ((lengths - 20) % size != 0)):
        raise ValueError("a sketch array is not a one-dimensional array without NULLs")
    firsts = np.cumsum(lengths) // 4 - lengths // 4 + 6  # the word of each blob's first value
    before = np.cumsum(counts) - counts  # elements in the blobs before
    at = np.arange(int(counts.sum())) * (size // 4) + np.repeat(firsts - before * (size // 4), counts)
    if not wide:
        return np.frombuffer(b"".join(blobs), dtype=">i4")[at].astype(np.int64), counts
    words = np.frombuffer(b"".join(blobs), dtype=">u4")
    high, low = words[at], words[at + 1].astype(np.int64)
    return ((high.astype(np.int64) << 32) | low if high.any() else low), counts


#: Cells (groups x bins) of one pass of `_rank_keys`: 32 MB of float64 at most.
_RANK_CELLS = 1 << 22


def _rank_keys(groups: np.ndarray, n_groups: int, keys: np.ndarray, counts: np.ndarray,
               percents: Sequence[int], cells: int = _RANK_CELLS) -> np.ndarray:
    """For each of `n_groups` groups of sketch bins (element i: bin `keys[i]` holding `counts[i]`
    samples, of group `groups[i]`), the bin holding the sample of rank floor(q (n - 1)) of the
    group's samples, per percent: the first bin whose running count passes q (n - 1), in integers
    (100 count > p (n - 1)). Shape (n_groups, len(percents)); -1 for a group without samples.

    Every group at once: bins are added up by a bincount over (group, bin offset) and run through
    one cumulative sum per row, no sort and no Python loop per group (a week at 6 h merges 29 groups;
    a loop of numpy calls per group cost more than the query). The keys of a series of one sign
    span a few thousand bins; keys on both sides of +-1,000,000 are first renumbered."""
    out = np.full((n_groups, len(percents)), -1, dtype=np.int64)
    if not len(keys):
        return out
    low = int(keys.min())
    if int(keys.max()) - low < 1 << 16:
        bins, index = None, keys - low
    else:
        bins, index = np.unique(keys, return_inverse=True)
    span = int(index.max()) + 1
    if len(groups) > 1 and np.any(groups[1:] < groups[:-1]):
        order = np.argsort(groups, kind="stable")
        groups, index, counts = groups[order], index[order], counts[order]
    step = max(1, cells // span)
    for first in range(0, n_groups, step):
        last = min(n_groups, first + step)
        a, b = np.searchsorted(groups, [first, last])
        cells = np.bincount((groups[a:b] - first) * span + index[a:b], weights=counts[a:b],
                            minlength=(last - first) * span).reshape(last - first, span)
        cumulative = np.cumsum(cells, axis=1)  # float64: exact for counts below 2**53
        n = cumulative[:, -1:]
        for j, percent in enumerate(percents):
            at = np.argmax(cumulative * 100 > percent * (n - 1), axis=1)
            out[first:last, j] = np.where(n[:, 0] > 0, at + low if bins is None else bins[at], -1)
    return out


def _merged(conn, schema: str, tier: Tier, statistics: Sequence[str],
            params: dict) -> dict[tuple[int, datetime], dict]:
    """Percentiles over several rollup rows, as lib/rollups/sql/merge.sql makes a coarser tier's: the
    rows' bins added up, the bin holding the sample of rank floor(q (n - 1)), its representative
    clamped into the rows' exact [min, max]. The bins are added here with numpy: in SQL the same
    merge sorts every bin of every row (a month of daily rows of 10 series: 36,000) and took 40 ms."""
    cursor = conn.cursor(binary=True)
    names = {"schema": sql.Identifier(schema), "view": sql.Identifier(tier.view),
             "sketches": sql.Identifier(tier.sketches)}
    extremes = {(r[0], r[1]): (r[2], r[3]) for r in cursor.execute(sql.SQL(_MERGE_EXTREMES).format(**names), params)}
    rows = cursor.execute(sql.SQL(_MERGE_SKETCHES).format(**names), params).fetchall()
    if not rows:
        return {}
    # rows come ordered by (series, step): a group per run of equal (series, step)
    names_of = [r[:2] for r in rows]
    starts = [0] + [i for i in range(1, len(rows)) if names_of[i] != names_of[i - 1]]
    row_group = np.zeros(len(rows), dtype=np.int64)
    row_group[starts[1:]] = 1
    row_group = np.cumsum(row_group)
    keys, sizes = _elements([r[2] for r in rows], wide=False)
    counts, _ = _elements([r[3] for r in rows], wide=True)
    percents = [int(statistic[1:]) for statistic in statistics]
    ranked = _rank_keys(np.repeat(row_group, sizes), len(starts), keys, counts, percents)
    out: dict[tuple[int, datetime], dict] = {}
    for group, first in enumerate(starts):
        key = names_of[first]
        if key not in extremes:  # a sketch without its row: a refresh in between the two reads
            continue
        low, high = extremes[key]
        out[key] = {statistic: max(low, min(high, sketch_value(int(ranked[group, j]))))
                    if ranked[group, j] >= 0 else None for j, statistic in enumerate(statistics)}
    return out


class Points(Sequence):
    """A series' [[epoch seconds, value or None], ...] as the JSON text the server built: the API splices
    the text into its answer as it is (`text`); Python callers read it as the list it holds, parsed
    once, on first use. Parsing and re-serialising a week of hourly points of 10 series cost more than
    the query that built them."""

    __slots__ = ("text", "_parsed")

    def __init__(self, text: str):
        self.text = text
        self._parsed: list | None = None

    def _list(self) -> list:
        if self._parsed is None:
            self._parsed = orjson.loads(self.text)
        return self._parsed

    def __getitem__(self, index):
        return self._list()[index]

    def __len__(self) -> int:
        return len(self._list())

    def __eq__(self, other) -> bool:
        return self._list() == (other._list() if isinstance(other, Points) else other)

    def __repr__(self) -> str:
        return f"Points({self.text[:60]!r}{'...' if len(self.text) > 60 else ''})"


def _points(conn, schema: str, tier: Tier, statistic: str, ids: list[int], start: datetime, end: datetime,
            step: timedelta, now: datetime) -> dict[int, Sequence]:
    """{series_id: [[epoch seconds, value or None], ...]}: every step of [start, end) in time order, null
    where the series has no sample (SPEC §12).

    Steps in the hour in progress are computed from raw points whenever the step divides an hour: the
    rollups of that hour are refreshed every few minutes and would miss the newest samples. Plain
    statistics come as one JSON array per series built by the server: formatting thousands of
    numbers in Python cost more than the query itself."""
    in_progress = _floor(now, timedelta(hours=1))
    fresh = not tier.raw and end > in_progress and timedelta(hours=1) % step == timedelta(0)
    params = {"ids": ids, "start": start, "end": end, "step": step, "origin": ORIGIN,
              "tier_end": min(end, in_progress) if fresh else end, "raw_start": max(start, in_progress),
              "first": _epoch(start), "last": _epoch(end - step), "step_s": int(step.total_seconds())}
    if _needs_merge(tier, statistic, step):
        values = {key: found[statistic] for key, found in _merged(conn, schema, tier, [statistic], params).items()}
        if fresh:
            values.update(((series_id, g), v) for series_id, g, v in
                          conn.execute(_plain(schema, RAW, statistic, "raw_start", "end"), params).fetchall())
        steps = math.ceil((end - start) / step)
        out: dict[int, list] = {series_id: [[params["first"] + i * params["step_s"], None] for i in range(steps)]
                                for series_id in ids}
        for (series_id, g), value in values.items():
            out[series_id][int((g - start) / step)][1] = value
        return out
    inner = _plain(schema, tier, statistic, "start", "tier_end")
    if fresh:
        inner = sql.SQL("{} UNION ALL {}").format(inner, _plain(schema, RAW, statistic, "raw_start", "end"))
    query = sql.SQL("""
        SELECT s.series_id, json_agg(json_build_array(b.t, x.v) ORDER BY b.t)::text
        FROM unnest(%(ids)s::integer[]) AS s(series_id)
        CROSS JOIN generate_series(%(first)s::bigint, %(last)s::bigint, %(step_s)s::bigint) AS b(t)
        LEFT JOIN (SELECT series_id, extract(epoch FROM g)::bigint AS t, v FROM ({inner}) i) x
               ON x.series_id = s.series_id AND x.t = b.t
        GROUP BY s.series_id""").format(inner=inner)
    return {series_id: Points(text) for series_id, text in conn.execute(query, params).fetchall()}


def _matching(conn, schema: str, filters: Filters, what: str) -> list[tuple]:
    params: dict = {"cap": MAX_SERIES + 1}
    query = sql.SQL("SELECT {columns} FROM {schema}.bi_tenant_series WHERE {where} ORDER BY series_id LIMIT %(cap)s").format(
        columns=sql.SQL(SERIES_COLUMNS), schema=sql.Identifier(schema), where=_where(filters.where(params)))
    rows = conn.execute(query, params).fetchall()
    if len(rows) > MAX_SERIES:
        raise BadQuery(f"more than {MAX_SERIES} series match; a {what} covers at most {MAX_SERIES}: "
                       "narrow source, metric, resource or label.KEY filters")
    return rows


def history(warehouse: Warehouse, tenant: str, filters: Filters, *, start: datetime, end: datetime,
            step: timedelta, statistic: str, now: datetime, retention: RetentionConfig) -> dict:
    """Each matching series' `statistic` per step over [start, end), from the tier `choose_tier` picks."""
    if statistic not in STATISTICS:
        raise BadQuery(f"stat: {statistic[:20]!r} is not one of {', '.join(STATISTICS)}")
    if end <= start:
        raise BadQuery("`to` must be after `from`")
    tier, start, end = choose_tier(start, end, step, now, retention)
    steps = math.ceil((end - start) / step)
    if steps > MAX_POINTS:
        raise BadQuery(f"{steps:,} steps of {_human(step)} between from and to; at most {MAX_POINTS:,} points a series "
                       f"are returned: raise the step to at least {_human(readable_step((end - start) / MAX_POINTS))}")
    with as_tenant(warehouse, tenant) as conn:
        found = _matching(conn, warehouse.schema, filters, "history")
        if steps * len(found) > MAX_TOTAL_POINTS:
            raise BadQuery(f"{len(found)} series x {steps:,} steps is more than {MAX_TOTAL_POINTS:,} points: raise the "
                           f"step to at least {_human(readable_step((end - start) * len(found) / MAX_TOTAL_POINTS))} "
                           "or narrow the filters")
        points = _points(conn, warehouse.schema, tier, statistic, [r[0] for r in found], start, end, step, now) \
            if found else {}
    return {"tier": tier.name, "step": int(step.total_seconds()), "statistic": statistic,
            "from": _epoch(start), "to": _epoch(end),
            "series": [{**_describe(row), "points": points.get(row[0], [])} for row in found]}


def _epoch(ts: datetime) -> int | float:
    seconds = (ts - ORIGIN).total_seconds()
    return int(seconds) if seconds == int(seconds) else seconds


def default_step(start: datetime, end: datetime, now: datetime, retention: RetentionConfig) -> timedelta:
    """About 300 steps over [start, end), a readable step that the finest tier holding `start` serves."""
    step = readable_step((end - start) / 300)
    finest = next((t for t in TIERS if _floor(start, step) >= now - kept(t, retention)), None)
    if finest is not None and not finest.raw:
        step = finest.width * math.ceil(step / finest.width)
    return step


def readable_step(span: timedelta) -> timedelta:
    """A readable step at least `span` (and 1 s): the next of 1s ... 1w, else whole days."""
    for seconds in (1, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800):
        if span <= timedelta(seconds=seconds):
            return timedelta(seconds=seconds)
    return timedelta(days=math.ceil(span / timedelta(days=1)))


SUMMARY_STATISTICS = ("count", "min", "avg", "max", "p95", "last")


def summary_pieces(start: datetime, end: datetime, now: datetime,
                   retention: RetentionConfig) -> tuple[list[tuple[Tier, datetime, datetime]], datetime, datetime]:
    """[start, end) as contiguous pieces, each read from the coarsest tier whose buckets it holds whole:
    a year of whole days is 365 daily rows; seven days from 13:37 are raw points to 13:40, 5-minute
    rows to 14:00, hourly rows to midnight, daily rows, and the same back down to `end`.

    The hour in progress is always read from raw points: its rollups are refreshed every few minutes
    and would miss the newest samples. Edges finer than 5 minutes come from raw points while they are
    kept, else the span widens to the buckets of the finest tier still holding them. Returns the
    pieces and the span they cover."""
    def widen(ts: datetime, rounding) -> datetime:
        if ts >= now - retention.points:
            return ts
        for tier in TIERS[1:]:
            if _floor(ts, tier.width) >= now - kept(tier, retention):
                return rounding(ts, tier.width)
        raise BadQuery(f"from: {_utc(start)} is older than every tier keeps")

    def decompose(a: datetime, b: datetime, tiers: Sequence[Tier]) -> list[tuple[Tier, datetime, datetime]]:
        if a >= b:
            return []
        if not tiers:
            return [(RAW, a, b)]
        tier, finer = tiers[0], tiers[1:]
        lo, hi = _ceil(a, tier.width), _floor(b, tier.width)
        if lo < hi and lo >= now - kept(tier, retention):
            return decompose(a, lo, finer) + [(tier, lo, hi)] + decompose(hi, b, finer)
        return decompose(a, b, finer)

    start, end = widen(start, _floor), widen(end, _ceil)
    in_progress = _floor(now, timedelta(hours=1))
    pieces = decompose(start, min(end, in_progress), list(reversed(TIERS[1:])))
    if end > in_progress:
        pieces.append((RAW, max(start, in_progress), end))
    return pieces, start, end


def sketch_keys(values: np.ndarray) -> np.ndarray:
    """The sketch bin of each value (migration 0005's `sketch_key`)."""
    keys = np.zeros(len(values), dtype=np.int64)
    positive, negative = values > 1e-9, values < -1e-9
    keys[positive] = 1_000_000 + np.ceil(np.log(values[positive]) / 0.020000666706669).astype(np.int64)
    keys[negative] = -(1_000_000 + np.ceil(np.log(-values[negative]) / 0.020000666706669).astype(np.int64))
    return keys


_FLOAT8S = np.dtype([("length", ">i4"), ("value", ">f8")])

_SUMMARY_RAW = """
SELECT series_id, count(*), sum(value), min(value), max(value), max(ts),
       (array_agg(value ORDER BY ts DESC))[1], array_send(array_agg(value))
FROM {schema}.bi_tenant_points
WHERE series_id = ANY(%(ids)s) AND ({spans})
GROUP BY series_id
"""

# The rollup tiers' rows of the pieces add up in the server, every tier in one statement (an arm per
# tier), with each row's bucket and version: which sketches the summary needs, and whether the
# cache holds them as they are now.
_SUMMARY_ROWS_ARM = """
SELECT series_id, samples, sum, min, max, bucket_start, last, version, {tier} AS tier
FROM {schema}.{view}
WHERE series_id = ANY(%(ids)s) AND ({spans})
"""

_SUMMARY_ROWS = """
SELECT series_id, sum(samples), sum(sum), min(min), max(max), max(bucket_start),
       (array_agg(last ORDER BY bucket_start DESC))[1],
       array_agg(tier), array_agg(extract(epoch FROM bucket_start)::bigint), array_agg(version)
FROM ({arms}) r
GROUP BY series_id
"""

# The sketches the cache lacks: of the listed series, in the runs of buckets it lacks (`_runs`; a
# superset where series lack different buckets: what was not asked for is left), by the
# (series_id, bucket) index; and the whole months' sketches.
_SUMMARY_SKETCHES = """
SELECT {tier}, series_id, extract(epoch FROM bucket)::bigint, array_send(sketch_keys), array_send(sketch_counts)
FROM {schema}.{sketches}
WHERE series_id = ANY(%({series})s) AND ({spans})
"""


def _runs(epochs: set[int], width: int, most: int = 16) -> list[tuple[datetime, datetime]]:
    """Buckets (epoch seconds, `width` apart) as [start, end) runs of consecutive ones; past `most`
    runs, one run from the first to the last (a few more rows read, a shorter statement)."""
    runs: list[list[int]] = []
    for epoch in sorted(epochs):
        if runs and epoch - runs[-1][1] <= width:
            runs[-1][1] = epoch
        else:
            runs.append([epoch, epoch])
    if len(runs) > most:
        runs = [[runs[0][0], runs[-1][1]]]
    return [(datetime.fromtimestamp(a, timezone.utc), datetime.fromtimestamp(b + 1, timezone.utc)) for a, b in runs]


_MONTH_SKETCHES = """
SELECT -1, series_id, extract(epoch FROM bucket)::bigint, array_send(sketch_keys), array_send(sketch_counts)
FROM {schema}.api_sketch_1mo
WHERE series_id = ANY(%(ids)s) AND ({spans})
"""


class SketchCache:
    """The decoded sketches of the rollup rows this process has read, each valid for its row's version.

    A summary adds up the sketches of every rollup row of its span (a week of 10 series: ~300
    sketches, ~20,000 bins); sending and decoding them was half of its cost, and a dashboard asks
    for the same closed hours again at every refresh. A tier's sketch is written only with its row,
    by the same statement (migration 0030), so a sketch is still what the cache holds while its
    row's version (xmin) is the one it was read at: the rows statement returns the versions, and
    only the sketches whose version changed, or that the cache lacks, are read again. Entries are
    kept at most `ttl_s` (xmin wraps after 4 billion transactions) and within `budget_bytes`, the
    least recently used going first. Keyed by database and schema: one process may read several.
    Thread-safe (the API's reads run in a thread pool)."""

    def __init__(self, budget_bytes: int = 64 << 20, ttl_s: float = 600.0):
        self.budget_bytes, self.ttl_s = budget_bytes, ttl_s
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple, version: int) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] != version or time.monotonic() - item[1] > self.ttl_s:
                self._drop(key)
                return None
            self._items.move_to_end(key)
            return item[2], item[3]

    def put(self, key: tuple, version: int, keys: np.ndarray, counts: np.ndarray) -> None:
        size = keys.nbytes + counts.nbytes + 256
        if size > self.budget_bytes:
            return
        with self._lock:
            if key in self._items:
                self._drop(key)
            self._items[key] = (version, time.monotonic(), keys, counts, size)
            self._bytes += size
            while self._bytes > self.budget_bytes:
                self._drop(next(iter(self._items)))

    def _drop(self, key: tuple) -> None:
        self._bytes -= self._items.pop(key)[4]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)


#: The process's sketch cache (`SketchCache`); `budget_bytes = 0` turns it off.
SKETCHES = SketchCache()


@dataclass
class _Summary:
    """What a series' pieces add up to (its p95 comes from every series' bins at once: `_summarise`)."""

    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    last_at: datetime | None = None
    last: float | None = None
    raw: list = field(default_factory=list)  # raw values, for an exact answer when every piece is raw

    def add(self, count, total, low, high, at, last) -> None:
        self.count += int(count)
        self.total += total
        self.low, self.high = min(self.low, low), max(self.high, high)
        if self.last_at is None or at > self.last_at:
            self.last_at, self.last = at, last

    def result(self, only_raw: bool, p95_key: int) -> dict:
        if not self.count:
            return {"count": 0, "min": None, "avg": None, "max": None, "p95": None, "last": None}
        if only_raw:  # exact: the sample of rank floor(0.95 (n - 1))
            p95 = float(np.quantile(np.concatenate(self.raw), 0.95, method="lower"))
        else:  # the bin of that rank, clamped into the exact [min, max]
            p95 = max(self.low, min(self.high, sketch_value(p95_key))) if p95_key >= 0 else None
        return {"count": self.count, "min": self.low, "avg": self.total / self.count, "max": self.high,
                "p95": p95, "last": self.last}


def _spans(column: str, pieces: list[tuple[Tier, datetime, datetime]], params: dict, prefix: str) -> sql.Composable:
    parts = []
    for i, (_, a, b) in enumerate(pieces):
        params[f"{prefix}a{i}"], params[f"{prefix}b{i}"] = a, b
        parts.append(sql.SQL("({c} >= {a} AND {c} < {b})").format(
            c=sql.SQL(column), a=sql.Placeholder(f"{prefix}a{i}"), b=sql.Placeholder(f"{prefix}b{i}")))
    return sql.SQL(" OR ").join(parts)


def _month(ts: datetime, up: bool = False) -> datetime:
    """The start of `ts`'s UTC month (of the next month when `up` and `ts` is not a month's start)."""
    ts = ts.astimezone(timezone.utc)
    first = ts.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1) if up and first != ts else first


def month_spans(pieces: list[tuple[Tier, datetime, datetime]]) -> tuple[list[tuple], list[tuple]]:
    """Daily pieces as the days outside whole UTC months and the whole months, as (tier, start, end):
    a year of days is 12 monthly sketches and the days at its ends."""
    days, months = [], []
    for tier, a, b in pieces:
        first, last = _month(a, up=True), _month(b)
        if first < last:
            months.append((tier, first, last))
            days += [(tier, x, y) for x, y in ((a, first), (last, b)) if x < y]
        else:
            days.append((tier, a, b))
    return days, months


def _summarise(conn, schema: str, pieces: list[tuple[Tier, datetime, datetime]], ids: list[int],
               database: str = "") -> dict[int, dict]:
    """Per series, SUMMARY_STATISTICS over the pieces: raw points in one statement, every rollup
    tier's rows in one and the sketches the cache (`SKETCHES`) lacks in one; the p95 of every series
    from their bins at once."""
    acc = {series_id: _Summary() for series_id in ids}
    slot = {series_id: i for i, series_id in enumerate(ids)}
    cursor = conn.cursor(binary=True)
    name = sql.Identifier(schema)
    keys, counts, groups = [], [], []  # every piece's bins, raw values binned alike
    raw = [p for p in pieces if p[0].raw]
    if raw:
        params: dict = {"ids": ids}
        query = sql.SQL(_SUMMARY_RAW).format(schema=name, spans=_spans("ts", raw, params, "p"))
        for series_id, count, total, low, high, at, last, values in cursor.execute(query, params).fetchall():
            values = _array(values, _FLOAT8S, np.float64)
            acc[series_id].add(count, total, low, high, at, last)
            acc[series_id].raw.append(values)
            keys.append(sketch_keys(values))
            counts.append(np.ones(len(values), dtype=np.int64))
            groups.append(np.full(len(values), slot[series_id], dtype=np.int64))
    tiers = [tier for tier in TIERS[1:] if any(p[0] is tier for p in pieces)]
    if tiers:
        params = {"ids": ids}
        arms = [sql.SQL(_SUMMARY_ROWS_ARM).format(
            schema=name, view=sql.Identifier(tier.view), tier=sql.Literal(TIERS.index(tier)),
            spans=_spans("bucket_start", [p for p in pieces if p[0] is tier], params, f"r{tier.name}_"))
            for tier in tiers]
        # whole UTC months of daily pieces read the month's sketch (migration 0028): the same bins added up
        _, months = month_spans([p for p in pieces if p[0].name == "1d"])
        in_months = [(int(a.timestamp()), int(b.timestamp())) for _, a, b in months]
        found: list[tuple] = []  # (slot, keys, counts) of every sketch the summary adds up
        missing: dict[tuple, int] = {}  # cache key -> the row's version
        where = (database, schema)
        query = sql.SQL(_SUMMARY_ROWS).format(arms=sql.SQL(" UNION ALL ").join(arms))
        for series_id, count, total, low, high, at, last, row_tiers, epochs, versions in \
                cursor.execute(query, params).fetchall():
            acc[series_id].add(count, total, low, high, at, last)
            for tier, epoch, version in zip(row_tiers, epochs, versions):
                if TIERS[tier].name == "1d" and any(a <= epoch < b for a, b in in_months):
                    continue
                key = (where, tier, series_id, epoch)
                hit = SKETCHES.get(key, version)
                if hit is None:
                    missing[key] = version
                else:
                    found.append((slot[series_id], *hit))
        reads = []
        for tier in tiers:
            wanted = [key for key in missing if key[1] == TIERS.index(tier)]
            if wanted:
                params[f"s{tier.name}"] = sorted({key[2] for key in wanted})
                runs = [(None, a, b) for a, b in _runs({key[3] for key in wanted}, int(tier.width.total_seconds()))]
                reads.append(sql.SQL(_SUMMARY_SKETCHES).format(
                    schema=name, sketches=sql.Identifier(tier.sketches), tier=sql.Literal(TIERS.index(tier)),
                    series=sql.SQL(f"s{tier.name}"), spans=_spans("bucket", runs, params, f"b{tier.name}_")))
        if months:
            reads.append(sql.SQL(_MONTH_SKETCHES).format(schema=name, spans=_spans("bucket", months, params, "m")))
        if reads:
            rows = cursor.execute(sql.SQL(" UNION ALL ").join(reads), params).fetchall()
            read_keys, sizes = _elements([r[3] for r in rows], wide=False)
            read_counts, _ = _elements([r[4] for r in rows], wide=True)
            cuts = np.cumsum(sizes)[:-1]
            for (tier, series_id, epoch, _, _), k, n in zip(rows, np.split(read_keys, cuts), np.split(read_counts, cuts)):
                key = (where, tier, series_id, epoch)
                if tier >= 0:
                    if key not in missing:
                        continue  # another series' bucket of the superset
                    SKETCHES.put(key, missing.pop(key), k.copy(), n.copy())
                found.append((slot[series_id], k, n))
            for key, version in missing.items():  # a row without a sketch: none, until its row changes
                SKETCHES.put(key, version, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))
        if found:
            keys += [f[1] for f in found]
            counts += [f[2] for f in found]
            groups.append(np.repeat(np.fromiter((f[0] for f in found), dtype=np.int64, count=len(found)),
                                    [len(f[1]) for f in found]))
    p95 = _rank_keys(np.concatenate(groups), len(ids), np.concatenate(keys), np.concatenate(counts), [95])[:, 0] \
        if keys else np.full(len(ids), -1)
    only_raw = all(p[0].raw for p in pieces)
    return {series_id: acc[series_id].result(only_raw, int(p95[slot[series_id]])) for series_id in ids}


def summary(warehouse: Warehouse, tenant: str, filters: Filters, *, start: datetime, end: datetime, now: datetime,
            retention: RetentionConfig) -> dict:
    """Per matching series over [start, end): count, min, avg, max, p95 and last from the pieces
    `summary_pieces` cuts the span into (exact but for the p95, which is within 1 % unless every
    piece is raw); completeness and time above the alert thresholds from the series health of the
    hours that overlap the span (daily sums for the pieces read from daily rollups)."""
    if end <= start:
        raise BadQuery("`to` must be after `from`")
    pieces, start, end = summary_pieces(start, end, now, retention)
    with as_tenant(warehouse, tenant) as conn:
        found = _matching(conn, warehouse.schema, filters, "summary")
        ids = [r[0] for r in found]
        stats = _summarise(conn, warehouse.schema, pieces, ids, warehouse.dsn) if ids else {}
        health = _health(conn, warehouse.schema, pieces, ids) if ids else {}
    out = []
    for row in found:
        received, expected, warning, critical, above_warning, above_critical, hours = health.get(
            row[0], (None, None, None, None, None, None, 0))
        out.append({**_describe(row), **stats[row[0]],
                    "completeness": None if not expected else min(1.0, received / expected),
                    "health_hours": hours,
                    "warning_threshold": warning, "critical_threshold": critical,
                    "above_warning_s": above_warning, "above_critical_s": above_critical})
    return {"from": _epoch(start), "to": _epoch(end),
            "pieces": [{"tier": t.name, "from": _epoch(a), "to": _epoch(b)} for t, a, b in pieces],
            "series": out}


_HEALTH_DAYS = """
SELECT series_id, received_expected, expected, warning_threshold, critical_threshold, above_warning_s,
       above_critical_s, hours
FROM {schema}.api_health_1d WHERE series_id = ANY(%(ids)s) AND ({spans})"""

_HEALTH_HOURS = """
SELECT series_id, CASE WHEN expected IS NOT NULL THEN received END, expected, warning_threshold,
       critical_threshold, above_warning_s, above_critical_s, 1
FROM {schema}.bi_tenant_series_health_hourly WHERE series_id = ANY(%(ids)s) AND ({spans})"""


def health_spans(pieces: list[tuple[Tier, datetime, datetime]]) -> tuple[list[tuple], list[tuple]]:
    """The days and the hours whose series health covers the pieces, none twice: the days of the
    daily pieces (their health summed per day, migration 0027) and every hour overlapping the others."""
    hour = timedelta(hours=1)
    days = [(a, b) for tier, a, b in pieces if tier.name == "1d"]
    hours: list[list[datetime]] = []
    for a, b in sorted((_floor(a, hour), _ceil(b, hour)) for tier, a, b in pieces if tier.name != "1d"):
        if hours and a <= hours[-1][1]:
            hours[-1][1] = max(hours[-1][1], b)
        else:
            hours.append([a, b])
    return days, [(a, b) for a, b in hours]


def _health(conn, schema: str, pieces: list[tuple[Tier, datetime, datetime]], ids: list[int]) -> dict[int, tuple]:
    """Per series: received (of hours that know what to expect), expected, the thresholds, seconds
    above them and the hours of health read, over the days and hours of `health_spans`."""
    days, hours = health_spans(pieces)
    params: dict = {"ids": ids}
    arms = [sql.SQL(text).format(schema=sql.Identifier(schema),
                                 spans=_spans(column, [(None, a, b) for a, b in spans], params, prefix))
            for text, column, spans, prefix in ((_HEALTH_DAYS, "bucket", days, "d"),
                                                (_HEALTH_HOURS, "bucket_start", hours, "h")) if spans]
    query = sql.SQL("""
        SELECT series_id, sum(re)::bigint, sum(ex)::bigint, max(w), max(c), sum(aw), sum(ac), sum(n)::integer
        FROM ({arms}) h(series_id, re, ex, w, c, aw, ac, n) GROUP BY series_id""").format(
        arms=sql.SQL(" UNION ALL ").join(arms))
    return {row[0]: row[1:] for row in conn.execute(query, params)}
