"""Points as a frame: the shape every source normalises to before it is loaded (SPEC §2).

A source builds a pandas frame of `POINT_COLUMNS` (`points_frame` does it from per-series lists);
`prepare` validates and normalises it in numpy, with no per-row Python: timezone-aware timestamps
inside the window, numeric values, NaN/inf dropped and counted, duplicate (series, ts) collapsed to
the last occurrence and counted, labels in one canonical JSON text per series. Anything else
malformed is a ValueError naming the column and showing an example row. What comes out
(`Prepared`) is what `lib.warehouse.load` writes; nothing here touches the database.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

#: Columns of a normalised points frame (SPEC §2). `source` is optional: it is given to load_points.
POINT_COLUMNS = ("metric", "resource", "labels", "unit", "ts", "value")


PG_EPOCH_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970


#: Longest metric name, source and `tenant` label, in UTF-8 bytes. Those columns are btree-indexed, and
#: a btree entry cannot exceed ~2.7 kB: a longer value would fail deep in the load with a database error.
MAX_NAME_BYTES = 1000


@dataclasses.dataclass
class Prepared:
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


def utc(ts: datetime, name: str) -> datetime:
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
    return us - PG_EPOCH_US


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


def is_sorted(codes: np.ndarray, ts: np.ndarray) -> bool:
    """True if rows are already in (series, ts) order, as producers usually emit them."""
    if len(codes) < 2:
        return True
    step = np.diff(codes)
    return bool(((step > 0) | ((step == 0) & (np.diff(ts) >= 0))).all())


def prepare(frame: pd.DataFrame, *, source: str, start: datetime, end: datetime, out_of_window: str = "error") -> Prepared:
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
        return Prepared([], [], [], [], empty, empty, np.empty(0), dropped)

    metric_codes, metric_uniques = _text_codes(frame, "metric", allow_empty=False, max_bytes=MAX_NAME_BYTES)
    resource_codes, resource_uniques = _text_codes(frame, "resource", allow_empty=True)
    unit_codes, unit_uniques = _text_codes(frame, "unit", allow_empty=False)
    label_codes, label_uniques = _label_codes(frame)
    ts_us = _timestamps_us(frame)
    values = _values(frame)

    start_us = int(start.timestamp() * 1_000_000) - PG_EPOCH_US
    end_us = int(end.timestamp() * 1_000_000) - PG_EPOCH_US
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
    if not is_sorted(codes, ts_kept):
        order = np.lexsort((ts_kept, codes))
        codes, ts_kept, values_kept = codes[order], ts_kept[order], values_kept[order]
    duplicate = np.zeros(len(codes), dtype=bool)
    if len(codes) > 1:
        duplicate[:-1] = (codes[:-1] == codes[1:]) & (ts_kept[:-1] == ts_kept[1:])
    if duplicate.any():
        dropped["duplicate"] = int(duplicate.sum())
        codes, ts_kept, values_kept = codes[~duplicate], ts_kept[~duplicate], values_kept[~duplicate]

    return Prepared(
        series_metric=[metric_uniques[i] for i in metric_codes[first_row]],
        series_resource=[resource_uniques[i] for i in resource_codes[first_row]],
        series_labels=[label_uniques[i] for i in label_codes[first_row]],
        series_unit=[unit_uniques[i] for i in unit_codes[first_row]],
        codes=codes,
        ts_us=ts_kept,
        values=values_kept,
        dropped=dropped,
    )


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


#: How many spacings per series and day `intervals` looks at: enough for a robust median, cheap
#: enough to run on every load (a day of 1-second samples would otherwise sort 86,400 spacings).
INTERVAL_SAMPLE = 64
_DAY_US = 86_400 * 1_000_000


def intervals(prepared: Prepared) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per (series, UTC day) of a prepared frame: the median spacing, in seconds, of the first
    INTERVAL_SAMPLE spacings between consecutive samples of that series within that day.

    Returns:
        Three aligned arrays: series index (into the Prepared series lists), day (days since
        2000-01-01), interval in seconds. Series-days with a single sample are absent.
    """
    codes, ts = prepared.codes, prepared.ts_us
    if len(codes) < 2:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64)
    day = ts // _DAY_US
    same = (codes[1:] == codes[:-1]) & (day[1:] == day[:-1])
    gaps = np.diff(ts)[same]
    group_code, group_day = codes[1:][same], day[1:][same]
    if not len(gaps):
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty(0, dtype=np.float64)
    # Rows are sorted by (series, ts), so each (series, day) group is contiguous.
    boundary = np.concatenate([[True], (group_code[1:] != group_code[:-1]) | (group_day[1:] != group_day[:-1])])
    starts = np.flatnonzero(boundary)
    group = np.cumsum(boundary) - 1
    rank = np.arange(len(gaps)) - starts[group]
    sample = rank < INTERVAL_SAMPLE
    g, v = group[sample], gaps[sample]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=len(starts))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    # Lower median (an observed spacing, never an average of two).
    median = v[first + (counts - 1) // 2]
    return group_code[starts], group_day[starts], median / 1e6
