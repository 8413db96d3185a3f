"""The one way points reach the warehouse: validate a frame, register its series, replace a window.

`load_points(dsn, frame, source=..., start=..., end=...)` makes `points` hold, for that source and
[start, end), exactly the rows of `frame`: nothing older survives in the window, nothing is
duplicated, and a failure at any step leaves the window as it was.

How, and why this way:
1. The frame is validated and normalised in numpy (vectorised; no per-row Python): timezone-aware
   timestamps inside the window, numeric values, NaN/inf dropped and counted, duplicate
   (series, ts) collapsed to the last occurrence and counted. Anything else malformed is a
   ValueError naming the column and showing an example row.
2. Distinct series are registered with two set-based statements (insert missing, then look up ids).
3. In **one transaction**, replace the window:
   - empty window (first loads, backfills): `COPY ... FROM STDIN (FORMAT BINARY)` straight into
     `points` (into the day partition itself when the window lies in one day, which skips per-row
     partition routing). Validation and de-duplication already happened in step 1, so staging
     would only write every row twice. The binary COPY payload is built by numpy.
   - window with data (late-data re-runs): COPY into a temporary staging table, then delete the
     rows that vanished, update those whose value changed and insert the new ones, so a re-run
     that fetched the same data rewrites nothing and reports how many points changed.
   Atomicity comes from the transaction: if anything fails half-way, all of it is rolled back.
4. Loads of the same source and UTC day take a transaction advisory lock (in sorted order, so no
   deadlocks), so overlapping windows of one source never interleave their delete and insert.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from datetime import datetime, timezone
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import psycopg

from metrics_pipeline.lib.warehouse import db
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse import partitioning
from metrics_pipeline.lib.settings import validate_identifier

#: Columns of a normalised points frame (SPEC §2). `source` is optional: it is given to load_points.
POINT_COLUMNS = ("metric", "resource", "labels", "unit", "ts", "value")

_PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970
_COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_COPY_TRAILER = (-1).to_bytes(2, "big", signed=True)
# One binary COPY row of points(series_id int4, ts timestamptz, value float8), big-endian, packed.
_COPY_ROW = np.dtype(
    [("nfields", ">i2"), ("len_sid", ">i4"), ("sid", ">i4"), ("len_ts", ">i4"), ("ts", ">i8"),
     ("len_value", ">i4"), ("value", ">f8")]
)
_COPY_CHUNK_ROWS = 250_000
#: Longest metric name, source and `tenant` label, in UTF-8 bytes. Those columns are btree-indexed, and
#: a btree entry cannot exceed ~2.7 kB: a longer value would fail deep in the load with a database error.
MAX_NAME_BYTES = 1000


@dataclasses.dataclass(frozen=True)
class LoadResult:
    """What a load did; `as_metadata()` gives the plain values assets put in their metadata."""

    source: str
    start: datetime
    end: datetime
    points: int  # rows the window holds for this source after the load
    inserted: int  # rows that were not there before
    updated: int  # rows whose value changed
    deleted: int  # rows that were there before and are not in this fetch
    series: int
    new_series: int
    dropped: dict[str, int]
    first_ts: datetime | None
    last_ts: datetime | None

    @property
    def changed(self) -> int:
        """Rows inserted, updated or deleted: 0 when a re-run fetched exactly what was stored."""
        return self.inserted + self.updated + self.deleted

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())

    def as_metadata(self) -> dict[str, Any]:
        return {
            "points": self.points,
            "points_changed": self.changed,
            "points_inserted": self.inserted,
            "points_updated": self.updated,
            "points_deleted": self.deleted,
            "series": self.series,
            "new_series": self.new_series,
            "dropped": self.dropped_total,
            **{f"dropped_{reason}": count for reason, count in sorted(self.dropped.items())},
            "window_start": self.start.isoformat(),
            "window_end": self.end.isoformat(),
        }


@dataclasses.dataclass
class _Prepared:
    """A validated frame: one entry per distinct series, and per-row arrays into it."""

    series_metric: list[str]
    series_resource: list[str]
    series_labels: list[str]
    series_unit: list[str]
    codes: np.ndarray  # row -> index into the series lists
    ts_us: np.ndarray  # microseconds since 2000-01-01 UTC (PostgreSQL's epoch)
    values: np.ndarray
    dropped: Counter


def _example(frame: pd.DataFrame, mask: np.ndarray) -> str:
    """The first offending row, for error messages."""
    position = int(np.flatnonzero(mask)[0])
    # Column by column: a whole row would mix the categoricals, which pandas hashes as UTF-8 (a lone
    # surrogate, the very thing being reported, would then fail the error message itself).
    shown = {col: frame[col].iloc[position] for col in frame.columns if col in POINT_COLUMNS or col == "source"}
    text = repr(shown)
    return f"row {position} {text[:500]}"


def _utc(ts: datetime, name: str) -> datetime:
    if not isinstance(ts, datetime) or ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {ts!r}")
    return ts.astimezone(timezone.utc)


def text_problem(value: str, *, max_bytes: int | None = None) -> str | None:
    """Why PostgreSQL text (or one of our indexed names, with `max_bytes`) cannot hold `value`, or None."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "must not contain unpaired UTF-16 surrogates"
    if max_bytes is not None and size > max_bytes:
        return f"must be at most {max_bytes} bytes of UTF-8 (got {size})"
    return None


def _text_codes(frame: pd.DataFrame, column: str, *, allow_empty: bool,
                max_bytes: int | None = None) -> tuple[np.ndarray, list[str]]:
    """Factorise a text column and validate each distinct value once (not once per row)."""
    codes, uniques = pd.factorize(frame[column], use_na_sentinel=True)
    if (codes < 0).any():
        raise ValueError(f"column {column!r} has missing values; {_example(frame, codes < 0)}")
    uniques = list(uniques)
    for i, value in enumerate(uniques):
        problem = None
        if not isinstance(value, str):
            problem = "must hold strings"
        elif not allow_empty and not value:
            problem = "must not be empty"
        else:
            problem = text_problem(value, max_bytes=max_bytes)
        if problem:
            raise ValueError(f"column {column!r} {problem}; {_example(frame, codes == i)}")
    return codes, uniques


def canonical_labels(labels: Any) -> str:
    """Canonical JSON text of a flat string-to-string label map (sorted keys, no spaces).

    Raises:
        ValueError: if `labels` is not a mapping (or JSON object text) of strings to strings.
    """
    if labels is None or (isinstance(labels, float) and np.isnan(labels)):
        return "{}"
    if isinstance(labels, str):
        try:
            labels = json.loads(labels)
        except json.JSONDecodeError as exc:
            raise ValueError(f"labels text is not JSON: {exc}") from None
    if not isinstance(labels, dict):
        raise ValueError(f"labels must be a mapping of strings to strings, got {type(labels).__name__}")
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ValueError(f"labels must map strings to strings; {key!r}: {value!r} does not")
        problem = text_problem(key) or text_problem(value, max_bytes=MAX_NAME_BYTES if key == "tenant" else None)
        if problem:
            raise ValueError(f"label {key[:100]!r} {problem}")
    return json.dumps(labels, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _label_codes(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Codes into canonical label texts. Producers reuse one dict per series, so rows are grouped by
    object identity first (C speed) and each distinct object is canonicalised once. A categorical
    column (as `points_frame` builds) is canonicalised per category."""
    if isinstance(frame["labels"].dtype, pd.CategoricalDtype):
        categorical = frame["labels"].array
        texts = []
        for k, labels in enumerate(categorical.categories):
            try:
                texts.append(canonical_labels(labels))
            except ValueError as exc:
                raise ValueError(f"column 'labels': {exc}; {_example(frame, categorical.codes == k)}") from None
        if (categorical.codes < 0).any():
            texts.append("{}")
        text_codes, text_uniques = pd.factorize(np.array(texts, dtype=object))
        return text_codes[categorical.codes], list(text_uniques)
    column = frame["labels"].tolist()
    identities = np.fromiter(map(id, column), dtype=np.int64, count=len(column))
    unique_ids, first_index, inverse = np.unique(identities, return_index=True, return_inverse=True)
    texts = []
    for k, row in enumerate(first_index):
        try:
            texts.append(canonical_labels(column[row]))
        except ValueError as exc:
            raise ValueError(f"column 'labels': {exc}; {_example(frame, inverse == k)}") from None
    text_codes, text_uniques = pd.factorize(np.array(texts, dtype=object))
    return text_codes[inverse.reshape(-1)], list(text_uniques)


def _timestamps_us(frame: pd.DataFrame) -> np.ndarray:
    ts = frame["ts"]
    if not isinstance(ts.dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(ts.dtype):
            raise ValueError(
                f"column 'ts' must be timezone-aware (got naive {ts.dtype}); localise it first, "
                f"e.g. ts.dt.tz_localize('UTC'); {_example(frame, np.ones(len(ts), dtype=bool))}"
            )
        try:
            converted = pd.to_datetime(ts, utc=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"column 'ts' holds values that are not timestamps ({exc})") from None
        if not isinstance(converted.dtype, pd.DatetimeTZDtype):
            raise ValueError(
                "column 'ts' must hold timezone-aware timestamps; "
                f"{_example(frame, np.ones(len(ts), dtype=bool))}"
            )
        ts = converted
    missing = ts.isna().to_numpy()
    if missing.any():
        raise ValueError(f"column 'ts' has missing timestamps; {_example(frame, missing)}")
    us = ts.dt.tz_convert("UTC").dt.as_unit("us").astype("int64").to_numpy()
    return us - _PG_EPOCH_US


def _values(frame: pd.DataFrame) -> np.ndarray:
    column = frame["value"]
    if pd.api.types.is_bool_dtype(column.dtype) or not (
        pd.api.types.is_numeric_dtype(column.dtype) or column.dtype == object
    ):
        raise ValueError(
            f"column 'value' must be numeric, got {column.dtype}; "
            f"{_example(frame, np.ones(len(column), dtype=bool))}"
        )
    if column.dtype == object:
        converted = pd.to_numeric(column, errors="coerce")
        bad = (converted.isna() & column.notna()).to_numpy() | column.map(
            lambda v: isinstance(v, (bool, str))
        ).to_numpy(dtype=bool)
        if bad.any():
            raise ValueError(f"column 'value' holds non-numeric values; {_example(frame, bad)}")
        column = converted
    return column.to_numpy(dtype="float64", na_value=np.nan)


def _is_sorted(codes: np.ndarray, ts: np.ndarray) -> bool:
    """True if rows are already in (series, ts) order, as producers usually emit them."""
    if len(codes) < 2:
        return True
    step = np.diff(codes)
    return bool(((step > 0) | ((step == 0) & (np.diff(ts) >= 0))).all())


def prepare(frame: pd.DataFrame, *, source: str, start: datetime, end: datetime, out_of_window: str = "error") -> _Prepared:
    """Validate and normalise a points frame (step 1 of the module docstring)."""
    missing = [c for c in POINT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"points frame is missing column(s) {missing}; expected {list(POINT_COLUMNS)}")
    frame = frame.reset_index(drop=True)
    dropped: Counter = Counter()
    if "source" in frame.columns:
        wrong = (frame["source"] != source).to_numpy(dtype=bool)
        if wrong.any():
            raise ValueError(
                f"column 'source' must equal the load's source {source!r}; {_example(frame, wrong)}"
            )
    if len(frame) == 0:
        empty = np.empty(0, dtype=np.int64)
        return _Prepared([], [], [], [], empty, empty, np.empty(0), dropped)

    metric_codes, metric_uniques = _text_codes(frame, "metric", allow_empty=False, max_bytes=MAX_NAME_BYTES)
    resource_codes, resource_uniques = _text_codes(frame, "resource", allow_empty=True)
    unit_codes, unit_uniques = _text_codes(frame, "unit", allow_empty=False)
    label_codes, label_uniques = _label_codes(frame)
    ts_us = _timestamps_us(frame)
    values = _values(frame)

    start_us = int(start.timestamp() * 1_000_000) - _PG_EPOCH_US
    end_us = int(end.timestamp() * 1_000_000) - _PG_EPOCH_US
    outside = (ts_us < start_us) | (ts_us >= end_us)
    if outside.any():
        if out_of_window == "error":
            raise ValueError(
                f"column 'ts' has {int(outside.sum())} row(s) outside the window "
                f"[{start.isoformat()}, {end.isoformat()}); {_example(frame, outside)}"
            )
        if out_of_window != "drop":
            raise ValueError(f"out_of_window must be 'error' or 'drop', got {out_of_window!r}")
        dropped["out_of_window"] = int(outside.sum())

    non_finite = ~np.isfinite(values)
    if non_finite.any():
        dropped["non_finite"] = int(non_finite.sum())
    keep = ~(outside | non_finite)

    # Series identity is (metric, resource, labels); the unit is an attribute of the series.
    combined = (
        metric_codes.astype(np.int64) * len(resource_uniques) + resource_codes
    ) * len(label_uniques) + label_codes
    row_series, _ = pd.factorize(combined)
    n_series = int(row_series.max()) + 1
    first_row = np.full(n_series, len(row_series), dtype=np.int64)
    np.minimum.at(first_row, row_series, np.arange(len(row_series)))
    conflicting = unit_codes != unit_codes[first_row][row_series]
    if conflicting.any():
        raise ValueError(f"column 'unit' differs between rows of the same series; {_example(frame, conflicting)}")
    # Series that only had dropped rows are not registered.
    codes_all = row_series
    codes, series_index = pd.factorize(codes_all[keep])
    first_row = first_row[series_index]

    ts_kept = ts_us[keep]
    values_kept = values[keep]
    # Sort by (series, ts): duplicates become adjacent, and the index is then filled in key order.
    # lexsort is stable, so among duplicates the last one in the frame comes last and is kept.
    if not _is_sorted(codes, ts_kept):
        order = np.lexsort((ts_kept, codes))
        codes, ts_kept, values_kept = codes[order], ts_kept[order], values_kept[order]
    duplicate = np.zeros(len(codes), dtype=bool)
    if len(codes) > 1:
        duplicate[:-1] = (codes[:-1] == codes[1:]) & (ts_kept[:-1] == ts_kept[1:])
    if duplicate.any():
        dropped["duplicate"] = int(duplicate.sum())
        codes, ts_kept, values_kept = codes[~duplicate], ts_kept[~duplicate], values_kept[~duplicate]

    return _Prepared(
        series_metric=[metric_uniques[i] for i in metric_codes[first_row]],
        series_resource=[resource_uniques[i] for i in resource_codes[first_row]],
        series_labels=[label_uniques[i] for i in label_codes[first_row]],
        series_unit=[unit_uniques[i] for i in unit_codes[first_row]],
        codes=codes,
        ts_us=ts_kept,
        values=values_kept,
        dropped=dropped,
    )


def _register_series(conn: psycopg.Connection, schema: str, source: str, prepared: _Prepared) -> tuple[np.ndarray, int]:
    """Insert the frame's new series and return (series_id per distinct series, number created)."""
    params = {
        "source": source,
        "metric": prepared.series_metric,
        "resource": prepared.series_resource,
        "labels": prepared.series_labels,
        "unit": prepared.series_unit,
    }
    # Sorted by key so that concurrent loads take index locks in one order (no deadlock).
    inserted = conn.execute(
        f"""INSERT INTO {schema}.series AS s (source, metric, resource, labels, unit)
            SELECT %(source)s, t.metric, t.resource, t.labels, t.unit
            FROM unnest(%(metric)s::text[], %(resource)s::text[], %(labels)s::jsonb[], %(unit)s::text[])
                 AS t(metric, resource, labels, unit)
            ORDER BY {schema}.series_key(%(source)s, t.metric, t.resource, t.labels)
            ON CONFLICT (series_key) DO UPDATE SET unit = EXCLUDED.unit
                WHERE s.unit IS DISTINCT FROM EXCLUDED.unit
            RETURNING (xmax = 0) AS created""",
        params,
    ).fetchall()
    created = sum(1 for (was_created,) in inserted if was_created)
    rows = conn.execute(
        f"""SELECT t.ord, s.series_id
            FROM unnest(%(metric)s::text[], %(resource)s::text[], %(labels)s::jsonb[])
                 WITH ORDINALITY AS t(metric, resource, labels, ord)
            JOIN {schema}.series s
              ON s.series_key = {schema}.series_key(%(source)s, t.metric, t.resource, t.labels)""",
        params,
    ).fetchall()
    ids = np.empty(len(prepared.series_metric), dtype=np.int64)
    for ordinal, series_id in rows:
        ids[ordinal - 1] = series_id
    if len(rows) != len(ids):
        raise RuntimeError("series registration did not return an id for every series")
    return ids, created


def copy_buffer(series_ids: np.ndarray, ts_us: np.ndarray, values: np.ndarray) -> list[bytes]:
    """Binary COPY payload for points(series_id, ts, value), in chunks of at most 250k rows."""
    chunks = [_COPY_HEADER]
    for lo in range(0, len(series_ids), _COPY_CHUNK_ROWS):
        hi = lo + _COPY_CHUNK_ROWS
        rows = np.empty(len(series_ids[lo:hi]), dtype=_COPY_ROW)
        rows["nfields"] = 3
        rows["len_sid"] = 4
        rows["sid"] = series_ids[lo:hi]
        rows["len_ts"] = 8
        rows["ts"] = ts_us[lo:hi]
        rows["len_value"] = 8
        rows["value"] = values[lo:hi]
        chunks.append(rows.tobytes())
    chunks.append(_COPY_TRAILER)
    return chunks


def _copy_rows(conn: psycopg.Connection, table: str, series_ids: np.ndarray, prepared: _Prepared) -> None:
    with conn.cursor() as cur, cur.copy(f"COPY {table} (series_id, ts, value) FROM STDIN (FORMAT BINARY)") as copy:
        for chunk in copy_buffer(series_ids, prepared.ts_us, prepared.values):
            copy.write(chunk)


def _copy_into_empty_window(conn, schema, target, series_ids, prepared) -> dict[str, int]:
    """First load of a window (the common case, and every backfill): COPY straight into the table."""
    if len(series_ids):
        _copy_rows(conn, f"{schema}.{target}", series_ids, prepared)
    return {"inserted": len(series_ids), "updated": 0, "deleted": 0}


def _merge_into_window(conn, schema, target, source, start, end, series_ids, prepared, only=None) -> dict[str, int]:
    """Re-load of a window that holds data: touch only what differs.

    A late-data re-run usually fetches what is stored plus a few points. Deleting and re-inserting
    the whole window would rewrite every row (and leave as many dead tuples); instead the fetch is
    staged in a temporary table (no WAL) and three set-based statements delete what vanished,
    update what changed and insert what is new. The counts become the "points changed" metadata.
    """
    conn.execute(
        "CREATE TEMP TABLE _mp_stage (series_id integer, ts timestamptz, value double precision) ON COMMIT DROP"
    )
    _copy_rows(conn, "_mp_stage", series_ids, prepared)
    conn.execute("ANALYZE _mp_stage")
    window = {"source": source, "start": start, "end": end, "only": only}
    deleted = conn.execute(
        f"""DELETE FROM {schema}.points p USING {schema}.series s
            WHERE s.source = %(source)s AND p.series_id = s.series_id
              AND p.ts >= %(start)s AND p.ts < %(end)s
              AND (%(only)s::integer[] IS NULL OR p.series_id = ANY(%(only)s::integer[]))
              AND NOT EXISTS (SELECT 1 FROM _mp_stage st WHERE st.series_id = p.series_id AND st.ts = p.ts)""",
        window,
    ).rowcount
    updated = conn.execute(
        f"""UPDATE {schema}.{target} p SET value = st.value FROM _mp_stage st
            WHERE p.series_id = st.series_id AND p.ts = st.ts AND p.ts >= %(start)s AND p.ts < %(end)s
              AND p.value <> st.value""",
        window,
    ).rowcount
    inserted = conn.execute(
        f"""INSERT INTO {schema}.{target} (series_id, ts, value)
            SELECT st.series_id, st.ts, st.value FROM _mp_stage st
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.points p
                              WHERE p.series_id = st.series_id AND p.ts = st.ts
                                AND p.ts >= %(start)s AND p.ts < %(end)s)""",
        window,
    ).rowcount
    return {"inserted": inserted, "updated": updated, "deleted": deleted}


def _day_locks(schema: str, source: str, start: datetime, end: datetime) -> list[int]:
    keys = []
    for name, _, _ in partitioning.partition_bounds("points", start, end):
        digest = hashlib.sha256(f"metrics_pipeline.load:{schema}:{source}:{name}".encode()).digest()
        keys.append(int.from_bytes(digest[:8], "big", signed=True))
    return sorted(keys)


def _as_utc_index(ts: Any) -> pd.DatetimeIndex:
    index = pd.DatetimeIndex(ts)
    if index.tz is None:
        raise ValueError("points_frame: timestamps must be timezone-aware")
    return index.tz_convert("UTC")


def points_frame(series: list[dict[str, Any]]) -> pd.DataFrame:
    """Build a normalised points frame from per-series arrays, cheaply.

    Args:
        series: one dict per series with keys metric, resource, labels (dict), unit, ts (array-like
            of timezone-aware timestamps) and value (array-like, same length).

    Returns:
        A frame with the POINT_COLUMNS; metric/resource/unit/labels are categoricals so that a
        million-row frame costs one small array per column.
    """
    lengths = np.array([len(s["value"]) for s in series], dtype=np.int64)
    for s in series:
        if len(s["ts"]) != len(s["value"]):
            raise ValueError(f"series {s.get('metric')!r}/{s.get('resource')!r}: ts and value lengths differ")
    index = np.repeat(np.arange(len(series)), lengths)

    def category(key: str, transform=lambda v: v) -> pd.Categorical:
        values = [transform(s[key]) for s in series]
        codes, uniques = pd.factorize(np.array(values, dtype=object))
        return pd.Categorical.from_codes(codes[index], categories=pd.Index(uniques, dtype=object))

    if series:
        micros = np.concatenate([_as_utc_index(s["ts"]).as_unit("us").asi8 for s in series])
        ts = pd.DatetimeIndex(micros.view("M8[us]")).tz_localize("UTC")
        values = np.concatenate([np.asarray(s["value"], dtype="float64") for s in series])
    else:
        ts, values = pd.DatetimeIndex([], tz="UTC"), np.empty(0)
    return pd.DataFrame(
        {
            "metric": category("metric"),
            "resource": category("resource"),
            "labels": category("labels", canonical_labels),
            "unit": category("unit"),
            "ts": ts,
            "value": values,
        }
    )


def load_points(
    dsn: str,
    frame: pd.DataFrame,
    *,
    source: str,
    start: datetime,
    end: datetime,
    schema: str = "metrics",
    out_of_window: str = "error",
    in_transaction: Callable[[psycopg.Connection], None] | None = None,
    scope: str = "window",
) -> LoadResult:
    """Replace `source`'s points in [start, end) with the rows of `frame`, atomically.

    Args:
        dsn: libpq DSN of the warehouse database (migrated on first use in this process).
        frame: normalised points: metric, resource, labels (dict or JSON object text), unit,
            ts (timezone-aware), value; an optional `source` column must equal `source`.
        source: the source whose window is replaced (e.g. "host", "cloudwatch").
        start, end: the window [start, end), timezone-aware.
        schema: warehouse schema.
        out_of_window: "error" (default) raises on rows outside the window; "drop" counts them.
        in_transaction: called with the connection inside the load's transaction, after the
            points are written (e.g. to mark landing files processed in the same commit).
        scope: "window" (default): the source's whole window is replaced; "series": only the
            series present in the frame are replaced, others keep their points (for sources whose
            fetch may legitimately omit series, like CloudWatch discovery of terminated resources).

    Returns:
        LoadResult with points written, points replaced, series seen and created, and the rows
        dropped per reason ("non_finite", "duplicate", "out_of_window").

    Raises:
        ValueError: a malformed frame or window, naming the column and an example row.
    """
    validate_identifier(schema, what="schema")
    if scope not in ("window", "series"):
        raise ValueError(f"scope must be 'window' or 'series', got {scope!r}")
    if not isinstance(source, str) or not source or text_problem(source, max_bytes=MAX_NAME_BYTES):
        raise ValueError(f"source must be a non-empty string without NUL characters, at most {MAX_NAME_BYTES} "
                         f"bytes, got {source[:100] if isinstance(source, str) else source!r}")
    start, end = _utc(start, "start"), _utc(end, "end")
    if end <= start:
        raise ValueError(f"window end {end.isoformat()} must be after start {start.isoformat()}")
    prepared = prepare(frame, source=source, start=start, end=end, out_of_window=out_of_window)

    migrate.ensure_migrated(dsn, schema)
    with db.connect(dsn, autocommit=True) as conn:
        bounds = partitioning.partition_bounds("points", start, end)
        if len(prepared.codes):
            partitioning.ensure_partitions(conn, schema, "points", start, end)
        # One day partition: COPY into it directly and skip per-row tuple routing.
        target = bounds[0][0] if len(bounds) == 1 else "points"
        with conn.transaction():
            for key in _day_locks(schema, source, start, end):
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            new_series = 0
            series_ids = np.empty(0, dtype=np.int64)
            if len(prepared.codes):
                series_ids, new_series = _register_series(conn, schema, source, prepared)
            rows = series_ids[prepared.codes]
            only = [int(i) for i in series_ids] if scope == "series" else None
            if len(rows) and not _is_sorted(rows, prepared.ts_us):
                # Rows are grouped by series already; put the groups in series_id order so the
                # primary-key index is filled left to right (append-only page splits).
                order = np.argsort(rows, kind="stable")
                rows = rows[order]
                prepared = dataclasses.replace(prepared, ts_us=prepared.ts_us[order], values=prepared.values[order])
            if not conn.execute(
                f"""SELECT EXISTS (SELECT 1 FROM {schema}.points p JOIN {schema}.series s USING (series_id)
                    WHERE s.source = %s AND p.ts >= %s AND p.ts < %s
                      AND (%s::integer[] IS NULL OR p.series_id = ANY(%s::integer[])))""",
                (source, start, end, only, only),
            ).fetchone()[0]:
                changes = _copy_into_empty_window(conn, schema, target, rows, prepared)
            else:
                changes = _merge_into_window(conn, schema, target, source, start, end, rows, prepared, only)
            if in_transaction is not None:
                in_transaction(conn)

    first = last = None
    if len(prepared.ts_us):
        first = datetime.fromtimestamp((int(prepared.ts_us.min()) + _PG_EPOCH_US) / 1e6, tz=timezone.utc)
        last = datetime.fromtimestamp((int(prepared.ts_us.max()) + _PG_EPOCH_US) / 1e6, tz=timezone.utc)
    return LoadResult(
        source=source,
        start=start,
        end=end,
        points=len(prepared.codes),
        inserted=changes["inserted"],
        updated=changes["updated"],
        deleted=changes["deleted"],
        series=len(prepared.series_metric),
        new_series=new_series,
        dropped=dict(prepared.dropped),
        first_ts=first,
        last_ts=last,
    )
