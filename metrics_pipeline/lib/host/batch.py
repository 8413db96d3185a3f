"""Host landing files (format 1 and the compact format 2) read into columns, ready for the loader.

Why columns: an hour of a thousand hosts is 140 million samples. Building a Python tuple, a
label dict and a string per sample (what this reader did first) costs microseconds each; here
a file becomes three numpy arrays (series index, time, value), and what identifies a series
(host, tenant, metric, unit, labels) is resolved and validated once per series and batch, not
once per sample. Format 2 (`lib/host/compact.py`) files are decoded a megabyte at a time by
one orjson call and their value lines become a matrix per layout with one numpy call; format 1
lines are decoded one at a time (orjson, then the standard library's json for what orjson
refuses, so both formats accept exactly what they always did).

Reading is forgiving where a crash or a bad disk can leave damage, and strict about counting it:
* the last line without a trailing newline that does not parse is a `partial_line` (the agent died
  mid-write): skipped and counted;
* any other line that is not a valid record is a `corrupt_line`: skipped and counted; so is a
  tick of format 2 naming a layout not defined before it, and every line of a file whose header
  is not valid;
* a sample that is malformed inside a good line is an `invalid_sample`: skipped and counted (in
  format 2: a value that is not a number, or every value of a series whose definition the
  warehouse could not store);
* a line longer than `MAX_LINE_BYTES` is not parsed at all (a real tick is a few kB; a hostile one
  could cost gigabytes and minutes to parse): it counts as corrupt (partial when it is the last);
* a line whose `tenant` the warehouse cannot store (empty, not a string, NUL, too long) is corrupt
  (in format 2 the tenant is the header's: every line of the file is).
Nothing raises for bad content: one bad file must not block every host's hour.

Tenants: every sample of a line gets the label `tenant` of its file's host directory when the host
configuration names one (`lib/host/config.py`, which wins), else of the line's (format 2: the
file header's) own `tenant` (the agent's `--tenant`), else none. A `tenant` among a sample's own
labels is kept when neither the configuration nor the line names one, and replaced when either does.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from datetime import datetime, timezone

import numpy as np
import orjson
import pandas as pd

from metrics_pipeline.lib.host.compact import FORMAT, MAGIC
from metrics_pipeline.lib.host.config import HostConfig
from metrics_pipeline.lib.points import MAX_NAME_BYTES, canonical_labels, text_problem

TS_MIN, TS_MAX = 946_684_800.0, 4_102_444_800.0  # 2000-01-01 .. 2100-01-01: anything else is a broken clock
MAX_LINE_BYTES = 1_000_000
_BAD_JSON = (ValueError, RecursionError)  # orjson.JSONDecodeError and json.JSONDecodeError are ValueErrors


def host_dir_of_key(key: str) -> str | None:
    """The host directory a host file lies in (`host/<date>/<HH>/<dir>/...`), None for a foreign key."""
    parts = key.split("/")
    return parts[3] if len(parts) >= 5 and parts[0] == "host" else None


def hour_of_key(key: str) -> datetime | None:
    """The UTC hour a host file belongs to, from its key (None for a foreign file)."""
    parts = key.split("/")
    if len(parts) < 5 or parts[0] != "host":
        return None
    try:
        return datetime.strptime(f"{parts[1]} {parts[2]}", "%Y-%m-%d %H").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _loads(raw: bytes):
    """A line's JSON value, decoded as the standard library would from its UTF-8 text (invalid bytes
    replaced, NaN and huge integers accepted): orjson first, which is exact on everything it accepts."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw.decode("utf-8", errors="replace"))


def _labels_key(labels) -> bytes:
    if labels is None or (type(labels) is dict and not labels):
        return b""
    try:
        return orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)
    except (TypeError, orjson.JSONEncodeError):  # lone surrogates (json accepted them): still a key
        return json.dumps(labels, sort_keys=True).encode("utf-8", errors="surrogatepass")


def _tenant_problem(tenant) -> bool:
    return tenant is not None and (not isinstance(tenant, str) or not tenant
                                   or text_problem(tenant, max_bytes=MAX_NAME_BYTES) is not None)


#: Validated series identities -> their canonical labels (None: one the warehouse cannot store), kept
#: across batches: the live path reads the same series every 30 s.
_TEXTS: dict[tuple, str | None] = {}
_TEXTS_MAX = 200_000


def _label_text(key: tuple, labels) -> str | None:
    """The canonical labels of a series identity (host, tenant, metric, unit, labels key), or None."""
    text = _TEXTS.get(key, False)
    if text is not False:
        return text
    host, tenant, metric, unit, _ = key
    text = None
    if (isinstance(metric, str) and metric and isinstance(unit, str) and unit
            and not text_problem(metric, max_bytes=MAX_NAME_BYTES) and not text_problem(unit)
            and (labels is None or isinstance(labels, dict))):
        merged = {**(labels or {}), "host": host}
        if tenant is not None:  # the line's (or the configuration's) tenant replaces a sample's own
            merged["tenant"] = tenant
        try:
            text = canonical_labels(merged)
        except ValueError:
            text = None
    if len(_TEXTS) >= _TEXTS_MAX:
        _TEXTS.clear()
    _TEXTS[key] = text
    return text


@dataclasses.dataclass
class _File:
    """What a format-2 file has defined so far."""

    host: str
    own_tenant: str | None
    tenant: str | None
    t0_ms: int
    series: dict[int, int] = dataclasses.field(default_factory=dict)  # file id -> batch series (-1 invalid)
    layouts: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)  # file id -> batch series


@dataclasses.dataclass
class HostBatch:
    """Samples read from a set of host files, as columns; `frame()` is what the loader takes.

    `config` holds the tenant rules (None: none, every tenant comes from the files themselves)."""

    config: HostConfig | None = None
    problems: Counter = dataclasses.field(default_factory=Counter)
    hosts: set[str] = dataclasses.field(default_factory=set)
    tenants: set[str] = dataclasses.field(default_factory=set)
    lines: int = 0
    files: int = 0
    #: lines whose own tenant differs from the one the configuration gives their file (which won)
    tenant_overrides: int = 0
    _series: dict = dataclasses.field(default_factory=dict, repr=False)  # identity -> index (-1: invalid)
    _s_metric: list = dataclasses.field(default_factory=list, repr=False)
    _s_host: list = dataclasses.field(default_factory=list, repr=False)
    _s_labels: list = dataclasses.field(default_factory=list, repr=False)
    _s_unit: list = dataclasses.field(default_factory=list, repr=False)
    _chunks: list = dataclasses.field(default_factory=list, repr=False)  # (series, unix us, value) arrays
    _file_tenant: str | None = dataclasses.field(default=None, repr=False)
    _within: tuple[int, int] | None = dataclasses.field(default=None, repr=False)
    _count_only: bool = dataclasses.field(default=False, repr=False)
    #: valid samples read with `count_only` (not in the columns)
    counted: int = 0

    # -- reading ---------------------------------------------------------------------------------

    def read(self, data: bytes, key: str | None = None, *, start: int = 0, stop: int | None = None,
             within: tuple[int, int] | None = None, count_only: bool = False) -> None:
        """Add the samples of one file's bytes `data[start:stop]`; `key`, the file's landing key,
        selects the tenant rule of its host directory. A format-2 file read from `start` > 0 (what
        was appended since an earlier read) takes its header and definitions from before `start`.
        `within`: [lo, hi) in epoch microseconds (the file's hour): samples stamped outside it are
        dropped and counted (`out_of_hour_samples`), as the closed-hour run drops them. `count_only`:
        count the samples (`counted`), lines and problems, keep no column (what another run loaded)."""
        self.files += 1
        self._within = within
        self._count_only = count_only
        directory = host_dir_of_key(key) if key is not None and self.config is not None else None
        self._file_tenant = self.config.tenant_of(directory) if directory is not None else None
        stop = len(data) if stop is None else stop
        if data.startswith(MAGIC):
            self._read_compact(data, start, stop)
        else:
            self._read_lines(data, start, stop)

    def _lines(self, data: bytes, start: int, stop: int):
        """(line bytes, is last without newline) of data[start:stop]; overlong lines counted, not returned."""
        while start < stop:
            end = data.find(b"\n", start, stop)
            last = end < 0 and stop == len(data)  # no newline after it: the writer may have died mid-write
            end = stop if end < 0 else end
            if end - start > MAX_LINE_BYTES:
                self.problems["partial_lines" if last else "corrupt_lines"] += 1
            else:
                yield data[start:end], last
            start = end + 1

    def _parse(self, raw: bytes, last: bool):
        """A line's value, or None (blank, or counted as partial/corrupt)."""
        try:
            return _loads(raw)
        except _BAD_JSON:
            if raw.decode("utf-8", errors="replace").strip():
                self.problems["partial_lines" if last else "corrupt_lines"] += 1
            return None

    def _series_index(self, host: str, tenant: str | None, metric, unit, labels) -> int:
        """The batch's index of a series (validated once), or -1 for one the warehouse cannot store."""
        try:
            key = (host, tenant, metric, unit, _labels_key(labels))
            index = self._series.get(key)
        except TypeError:  # an unhashable metric or unit
            return -1
        if index is not None:
            return index
        index = -1
        text = _label_text(key, labels)
        if text is not None:
            index = len(self._s_metric)
            self._s_metric.append(metric)
            self._s_host.append(host)
            self._s_labels.append(text)
            self._s_unit.append(unit)
        self._series[key] = index
        return index

    # -- format 1: one JSON object per tick -------------------------------------------------------

    def _read_lines(self, data: bytes, start: int, stop: int) -> None:
        series, ts, values = [], [], []
        for raw, last in self._lines(data, start, stop):
            tick = self._parse(raw, last)
            if tick is not None:
                self._tick(tick, last, series, ts, values)
        if series:
            # The seconds -> microseconds conversion pandas made when this format was read into a
            # frame (truncation of ts * 1e6): a re-run of an hour loaded then changes nothing.
            us = np.trunc(np.array(ts, dtype=np.float64) * 1e6).astype(np.int64)
            self._add(np.array(series, dtype=np.int32), us, np.array(values, dtype=np.float64))

    def _tick(self, tick, last: bool, series: list, ts_out: list, values: list) -> None:
        try:
            ts = float(tick["ts"])
            host = tick["host"]
            samples = tick["samples"]
            own_tenant = tick.get("tenant")
            if not isinstance(host, str) or not host or not isinstance(samples, list) or not TS_MIN <= ts < TS_MAX:
                raise ValueError("not a tick")
            if text_problem(host):
                raise ValueError("host name PostgreSQL cannot store")
            if _tenant_problem(own_tenant):
                raise ValueError("tenant the warehouse cannot store")
        except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError):
            self.problems["partial_lines" if last else "corrupt_lines"] += 1
            return
        tenant = self._file_tenant or own_tenant
        if self._file_tenant is not None and own_tenant is not None and own_tenant != self._file_tenant:
            self.tenant_overrides += 1
        self.lines += 1
        self.hosts.add(host)
        if tenant is not None:
            self.tenants.add(tenant)
        invalid = 0
        for entry in samples:
            try:
                metric, value, unit, labels = entry
                kind = type(value)
                if kind is int:
                    value = float(value)
                elif kind is not float:
                    raise ValueError
            except (ValueError, TypeError, OverflowError):
                invalid += 1
                continue
            index = self._series_index(host, tenant, metric, unit, labels)
            if index < 0:
                invalid += 1
                continue
            series.append(index)
            ts_out.append(ts)
            values.append(value)
        if invalid:
            self.problems["invalid_samples"] += invalid

    # -- format 2: header, definitions, value lines -----------------------------------------------

    def _read_compact(self, data: bytes, start: int, stop: int) -> None:
        head_end = data.find(b"\n", 0, stop)
        if head_end < 0:  # not even the header is complete
            if start == 0 and stop == len(data) and data[:stop].strip():
                self.problems["partial_lines"] += 1
            return
        state = self._header(data[:head_end])
        if state is None:
            counted = Counter()
            for raw, last in self._lines(data, max(start, 0), stop):
                if raw.strip():
                    counted["partial_lines" if last else "corrupt_lines"] += 1
            self.problems.update(counted)
            return
        if start > head_end + 1:  # definitions made before `start` (read, and counted, earlier)
            self._definitions_before(state, data, head_end, start)
        body = max(start, head_end + 1)
        rows: dict[int, list] = {}
        strict = False
        while body < stop:
            cut = data.rfind(b"\n", body, min(stop, body + MAX_LINE_BYTES + 1))
            if cut < 0:  # a line longer than MAX_LINE_BYTES, or the torn tail
                for raw, last in self._lines(data, body, stop):
                    if last:  # no newline yet: partial even if it parses (the live path stops before it too)
                        if raw.strip():
                            self.problems["partial_lines"] += 1
                        continue
                    self._record(state, self._parse(raw, last), rows, last)
                break
            chunk = data[body:cut]
            try:
                records = orjson.loads(b"[" + chunk.replace(b"\n", b",") + b"]") if chunk else []
                strict = strict or b"true" in chunk or b"false" in chunk
            except orjson.JSONDecodeError:  # something in it orjson refuses: line by line
                records = None
            if records is None:
                strict = True
                for raw, last in self._lines(data, body, cut):
                    self._record(state, self._parse(raw, last), rows, last)
            else:
                for record in records:
                    self._record(state, record, rows, False)
            body = cut + 1
        self._emit(state, rows, strict)

    def _header(self, raw: bytes) -> _File | None:
        try:
            head = _loads(raw)
            host, own_tenant, t0 = head["host"], head.get("tenant"), head["t0"]
            if (head.get("format") != FORMAT or not isinstance(host, str) or not host or text_problem(host)
                    or _tenant_problem(own_tenant) or type(t0) is not int or not TS_MIN <= t0 < TS_MAX):
                return None
        except (*_BAD_JSON, KeyError, TypeError, AttributeError):
            return None
        tenant = self._file_tenant or own_tenant
        return _File(host, own_tenant, tenant, t0 * 1000)

    def _definitions_before(self, state: _File, data: bytes, head_end: int, start: int) -> None:
        position = head_end
        while (position := data.find(b'\n["', position, start - 1)) >= 0:
            end = data.find(b"\n", position + 1, start)
            if end < 0:
                break
            try:
                self._define(state, _loads(data[position + 1:end]))
            except (*_BAD_JSON, ValueError):
                pass
            position = end

    def _record(self, state: _File, record, rows: dict[int, list], last: bool) -> None:
        if record is None:
            return
        if type(record) is list and record:
            head = record[0]
            if type(head) is int:
                if head in state.layouts:
                    rows.setdefault(head, []).append(record)
                    return
            else:
                try:
                    self._define(state, record)
                    return
                except ValueError:
                    pass
        self.problems["partial_lines" if last else "corrupt_lines"] += 1

    def _define(self, state: _File, record: list) -> None:
        """A series or layout definition; ValueError for anything else (or a second definition)."""
        if len(record) == 5 and record[0] == "s" and type(record[1]) is int and record[1] not in state.series:
            _, sid, metric, unit, labels = record
            state.series[sid] = self._series_index(state.host, state.tenant, metric, unit, labels)
            return
        if (len(record) == 3 and record[0] == "l" and type(record[1]) is int and record[1] not in state.layouts
                and type(record[2]) is list and all(type(s) is int and s in state.series for s in record[2])):
            state.layouts[record[1]] = np.array([state.series[s] for s in record[2]], dtype=np.int32)
            return
        raise ValueError("not a definition")

    def _emit(self, state: _File, rows: dict[int, list], strict: bool) -> None:
        ticks = 0
        first_chunk = len(self._chunks)
        for layout, records in rows.items():
            series = state.layouts[layout]
            checked = None if strict else _matrix(records, len(series))
            matrix, cells = checked if checked is not None else self._checked_matrix(records, len(series))
            offset = matrix[:, 1]
            ts_ms = state.t0_ms + offset
            good = (offset == np.floor(offset)) & (ts_ms >= TS_MIN * 1000) & (ts_ms < TS_MAX * 1000)
            if not good.all():
                self.problems["corrupt_lines"] += int((~good).sum())
                matrix, ts_ms, cells = matrix[good], ts_ms[good], cells[good]
            if not len(matrix):
                continue
            ticks += len(matrix)
            cells = cells & (series >= 0)  # a series the warehouse cannot store: its samples are invalid
            invalid = cells.size - int(cells.sum())
            if invalid:
                self.problems["invalid_samples"] += invalid
            codes = np.broadcast_to(series, cells.shape)[cells]
            us = np.broadcast_to((ts_ms.astype(np.int64) * 1000)[:, None], cells.shape)[cells]
            self._add(codes, us, matrix[:, 2:][cells])
        if len(self._chunks) - first_chunk > 1:  # layouts interleave in time: back to the file's tick order
            codes, us, values = (np.concatenate(parts) for parts in zip(*self._chunks[first_chunk:]))
            order = np.argsort(us, kind="stable")
            self._chunks[first_chunk:] = [(codes[order], us[order], values[order])]
        if ticks:
            self.lines += ticks
            self.hosts.add(state.host)
            if state.tenant is not None:
                self.tenants.add(state.tenant)
            if self._file_tenant is not None and state.own_tenant is not None and state.own_tenant != self._file_tenant:
                self.tenant_overrides += ticks

    def _add(self, series: np.ndarray, us: np.ndarray, values: np.ndarray) -> None:
        if self._within is not None:
            inside = (us >= self._within[0]) & (us < self._within[1])
            if not inside.all():
                self.problems["out_of_hour_samples"] += int((~inside).sum())
                series, us, values = series[inside], us[inside], values[inside]
        if self._count_only:
            self.counted += len(series)
        elif len(series):
            self._chunks.append((series, us, values))

    def _checked_matrix(self, records: list, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The value lines of one layout checked one by one: a line of the wrong length is corrupt;
        a value that is not a number is an invalid sample (False in the returned cell mask)."""
        good_rows, cells = [], []
        for record in records:
            if len(record) != width + 2 or type(record[1]) not in (int, float):
                self.problems["corrupt_lines"] += 1
                continue
            row, ok = [0.0, float(record[1])], []
            for value in record[2:]:
                number = type(value) is int or type(value) is float
                try:
                    row.append(float(value) if number else np.nan)
                except OverflowError:
                    row.append(np.nan)
                    number = False
                ok.append(number)
            good_rows.append(row)
            cells.append(ok)
        return (np.array(good_rows, dtype=np.float64).reshape(len(good_rows), width + 2),
                np.array(cells, dtype=bool).reshape(len(cells), width))

    def absorb(self, other: HostBatch) -> None:
        """Add `other`'s counts (lines, files, problems, hosts, tenants), not its samples."""
        self.problems.update(other.problems)
        self.hosts |= other.hosts
        self.tenants |= other.tenants
        self.lines += other.lines
        self.files += other.files
        self.tenant_overrides += other.tenant_overrides
        self.counted += other.counted + len(other)

    # -- output -----------------------------------------------------------------------------------

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(series index, unix microseconds, value) of every sample, grouped by series in the order
        series were first seen, in file order within a series (time order, as agents write)."""
        if not self._chunks:
            return np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.float64)
        if len(self._chunks) > 1:
            self._chunks = [tuple(np.concatenate(parts) for parts in zip(*self._chunks))]
        series, us, values = self._chunks[0]
        if len(series) > 1 and (np.diff(series) < 0).any():
            order = np.argsort(series, kind="stable")
            series, us, values = series[order], us[order], values[order]
            self._chunks = [(series, us, values)]
        return series, us, values

    def frame(self) -> pd.DataFrame:
        series, us, values = self._columns()

        def category(names: list[str]) -> pd.Categorical:
            codes, uniques = pd.factorize(np.array(names, dtype=object))
            return pd.Categorical.from_codes(codes[series] if len(series) else codes[:0],
                                             categories=pd.Index(uniques, dtype=object))

        return pd.DataFrame(
            {
                "metric": category(self._s_metric),
                "resource": category(self._s_host),
                "labels": category(self._s_labels),
                "unit": category(self._s_unit),
                "ts": pd.DatetimeIndex(us.view("datetime64[us]")).tz_localize("UTC"),
                "value": values,
            }
        )

    # Per-sample views, for tests and small batches.
    @property
    def metric(self) -> list[str]:
        return [self._s_metric[i] for i in self._columns()[0]]

    @property
    def resource(self) -> list[str]:
        return [self._s_host[i] for i in self._columns()[0]]

    @property
    def labels(self) -> list[str]:
        return [self._s_labels[i] for i in self._columns()[0]]

    @property
    def unit(self) -> list[str]:
        return [self._s_unit[i] for i in self._columns()[0]]

    @property
    def ts(self) -> list[float]:
        return (self._columns()[1] / 1e6).tolist()

    @property
    def value(self) -> list[float]:
        return self._columns()[2].tolist()

    def __len__(self) -> int:
        return sum(len(chunk[0]) for chunk in self._chunks)


def _matrix(records: list, width: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The value lines of one layout as a float matrix and an all-true cell mask, or None when any
    is not plain numbers of the layout's width (the caller then checks them one by one)."""
    try:
        matrix = np.array(records)
    except (ValueError, OverflowError):  # lines of different lengths
        return None
    if matrix.ndim != 2 or matrix.shape[1] != width + 2 or matrix.dtype.kind not in "fi":
        return None
    return matrix.astype(np.float64, copy=False), np.ones((len(matrix), width), dtype=bool)
