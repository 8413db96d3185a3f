"""Validate a pushed body (decoded JSON) into measures or events, all or nothing.

A body is one object or a list of objects. A batch with any invalid item is refused whole
(`InvalidBatch`, the API's 422) listing every invalid item as `{"index", "field", "reason"}`:
`index` is the item's position in the list (0 for a lone object; None when the body itself is
wrong), `field` a dotted path (`metadata.host`) or None for the item as a whole. At most
`MAX_ERRORS_PER_ITEM` problems are listed per item, so a hostile batch cannot make the answer
explode, but every invalid item is listed. A batch over the item limit is `BatchTooLarge` (the
API's 413), refused before any item is looked at.

Rules (limits from `ApiConfig`, defaults of SPEC §12):
* `name`: the name grammar; `value`: a finite number (true/false are not numbers);
* `ts` (optional, null = absent): an RFC 3339 string with an offset or Z, or epoch seconds, or
  epoch milliseconds when the number is above 1e11; absent means the time of receipt; kept to
  the microsecond (finer digits are rounded); inside [now - ts_back, now + ts_ahead];
* `metadata` (optional): a flat object of string values, keys in the key grammar, none of the
  reserved `tenant` (it comes from the API key), `alertname`, `severity`, `source` (alert labels);
* `unit` (measures, optional, default ""), `text` (events, optional): strings within their limits;
* no string (name, key, value, unit, text) with NUL or an unpaired surrogate: PostgreSQL cannot
  store them; no unknown fields.

The Kafka loader judges every element of a topic on its own (`ItemJudge`), a few hundred thousand an
hour, and most of them repeat what earlier ones showed valid: `ItemJudge.quick` accepts a measure whose
name, metadata and unit were shown valid already and whose `ts` has the common shape, at a fraction of
the cost, and leaves anything else to `ItemJudge.judge` (it never refuses: what it accepts, `judge`
accepts with the same values).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from metrics_pipeline.lib.custom.config import ApiConfig, human_duration

RESERVED_METADATA_KEYS = ("tenant", "alertname", "severity", "source")
MEASURE_FIELDS = ("name", "value", "ts", "metadata", "unit")
EVENT_FIELDS = ("name", "ts", "metadata", "text")
MAX_ERRORS_PER_ITEM = 10
#: = lib.points.MAX_NAME_BYTES, the warehouse's limit for a metric name or a label (not imported:
#: lib.points pulls in pandas, which the API's request path does not need).
MAX_NAME_BYTES = 1000
EPOCH_MS_ABOVE = 1e11
_FLOAT_INTS = 2 ** 1000  # integers surely within float8
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))")
_SHOWN_CHARS = 80
_MEASURE_FIELD_SET = frozenset(MEASURE_FIELDS)

#: a series of a tenant's measures: its name and its sorted metadata (`series_cap.py`)
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def series_key(name: str, metadata: dict[str, str]) -> SeriesKey:
    return name, tuple(sorted(metadata.items()))


@dataclasses.dataclass(frozen=True, slots=True)
class Measure:
    name: str
    value: float
    ts: datetime  # UTC, microseconds
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    unit: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    name: str
    ts: datetime  # UTC, microseconds
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    text: str | None = None


class BatchRefused(ValueError):
    """A batch the API refuses whole; `errors` lists `{"index", "field", "reason"}` dicts."""

    def __init__(self, errors: list[dict[str, Any]]):
        self.errors = errors
        shown = "; ".join(_describe(e) for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"batch refused: {shown}{more}")


class InvalidBatch(BatchRefused):
    """Some items are invalid (or the body has the wrong shape, or is empty): HTTP 422."""


class BatchTooLarge(BatchRefused):
    """More items than `max_batch_items`: HTTP 413."""


def _describe(error: dict[str, Any]) -> str:
    where = [f"item {error['index']}"] if error["index"] is not None else []
    if error["field"]:
        where.append(error["field"])
    return f"{' '.join(where)}: {error['reason']}" if where else error["reason"]


def validate_measures(body: Any, now: datetime, config: ApiConfig) -> list[Measure]:
    """The measures of `body`, or InvalidBatch / BatchTooLarge.

    Args:
        body: the decoded JSON: one object or a list of objects.
        now: the time of receipt (aware); stamps items without `ts` and centres the window.
        config: the limits.
    """
    return _validate(body, now, config, _measure)


def validate_events(body: Any, now: datetime, config: ApiConfig) -> list[Event]:
    """The events of `body`, or InvalidBatch / BatchTooLarge (see `validate_measures`)."""
    return _validate(body, now, config, _event)


def _validate(body, now: datetime, config: ApiConfig, build) -> list:
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if isinstance(body, dict):
        body = [body]
    elif not isinstance(body, list):
        raise InvalidBatch([_error(None, None, "the body must be a JSON object or a list of objects")])
    if not body:
        raise InvalidBatch([_error(None, None, "the batch is empty: send at least one item")])
    if len(body) > config.max_batch_items:
        raise BatchTooLarge([_error(None, None, f"at most {config.max_batch_items} items a batch "
                                                f"(got {len(body)})")])
    rules = _Rules(config, now)
    items, errors = [], []
    for index, raw in enumerate(body):
        problems: list[tuple[str | None, str]] = []
        item = build(raw, rules, problems) if isinstance(raw, dict) else None
        if not isinstance(raw, dict):
            problems.append((None, "must be a JSON object"))
        if problems:
            errors += [_error(index, field, reason) for field, reason in problems[:MAX_ERRORS_PER_ITEM]]
        else:
            items.append(item)
    if errors:
        raise InvalidBatch(errors)
    return items


class ItemJudge:
    """Judges items one by one with the rules of `_validate` (the Kafka loader's path: SPEC §12, each
    element of a batch on its own). `at(now)` sets the time of receipt for the next items (a Kafka
    message's timestamp) while keeping what earlier items showed valid.

    Args:
        kind: "measures" or "events".
        now: the time of receipt (aware).
        config: the limits.
    """

    def __init__(self, kind: str, now: datetime, config: ApiConfig):
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        self._build = _measure if kind == "measures" else _event
        self._quick = kind == "measures"
        self.rules = _Rules(config, now)

    def at(self, now: datetime) -> None:
        """Items judged next were received at `now` (stamped on items without `ts`, centres the window)."""
        self.rules.move(now)

    def judge(self, raw: Any) -> tuple[Measure | Event | None, str | None]:
        """(the item, None) when `raw` is valid, else (None, every problem as `field: reason; ...`)."""
        if not isinstance(raw, dict):
            return None, f"item: must be a JSON object, not {_json_type(raw)}"
        problems: list[tuple[str | None, str]] = []
        item = self._build(raw, self.rules, problems)
        if problems:
            return None, "; ".join(f"{field or 'item'}: {reason}" for field, reason in problems[:MAX_ERRORS_PER_ITEM])
        return item, None

    def quick(self, raw: dict, ignored: str | None = None) -> tuple[str, float, datetime, dict, str] | None:
        """(name, value, ts, metadata, unit) of a measure `judge` would accept with these very values, when
        showing it is cheap; None when `judge` must decide (anything new, unusual or wrong; any event).

        Cheap means: only known fields, of their JSON types; a name, a metadata map (in the same key
        order) and a unit some earlier item showed valid; `ts` absent, or an RFC 3339 string of the
        common shape (`2026-01-05T13:00:00[.ffffff]` then `Z` or `+HH:MM`) inside the window. `metadata`
        is `raw`'s own object (`judge` returns a copy).

        Args:
            raw: a decoded JSON object.
            ignored: a field the caller judged itself (the Kafka loader's `tenant`, bound to the topic's),
                let through here; `judge` would count it an unknown field.
        """
        if not self._quick:
            return None
        fields = raw.keys()
        if not fields <= _MEASURE_FIELD_SET and (ignored not in raw or not fields - {ignored} <= _MEASURE_FIELD_SET):
            return None
        rules = self.rules
        name = raw.get("name")
        if type(name) is not str or name not in rules.good_names:
            return None
        value = raw.get("value")
        if type(value) is float:
            if value - value != 0:  # inf or nan
                return None
        elif type(value) is int:
            if not -_FLOAT_INTS < value < _FLOAT_INTS:  # float() might overflow: the full rules say what then
                return None
            value = float(value)
        else:
            return None
        ts = raw.get("ts")
        if ts is None:
            ts = rules.now
        else:
            ts = _quick_rfc3339(ts) if type(ts) is str else None
            if ts is None or ts < rules.earliest or ts > rules.latest:
                return None
        metadata = raw.get("metadata")
        if metadata is None:
            metadata = {}
        elif type(metadata) is not dict:
            return None
        else:
            try:
                if tuple(metadata.items()) not in rules.good_maps:
                    return None
            except TypeError:  # a value that is a list or an object
                return None
        unit = raw.get("unit")
        if unit is None:
            unit = ""
        elif type(unit) is not str:
            return None
        elif unit not in rules.good_units:
            if _text_problem(unit, rules.config.max_unit_chars) is not None:
                return None
            rules.good_units.add(unit)
        return name, value, ts, metadata, unit


def _error(index: int | None, field: str | None, reason: str) -> dict[str, Any]:
    return {"index": index, "field": field, "reason": reason}


class _Rules:
    """The configuration's limits for one batch, with what the batch has already shown valid: items of
    one batch repeat their names and metadata, and each distinct one is checked once."""

    def __init__(self, config: ApiConfig, now: datetime):
        self.config = config
        self.name = _compiled(config.name_pattern)
        self.key = _compiled(config.metadata_key_pattern)
        self.good_names: set[str] = set()
        self.good_maps: set[tuple] = set()
        self.good_units: set[str] = set()
        self.move(now)

    def move(self, now: datetime) -> None:
        """Judge against another time of receipt (what was shown valid stays: it does not depend on it)."""
        config = self.config
        self.now = now.astimezone(timezone.utc)
        now_us = _micros(self.now)
        self.earliest_us = now_us - _delta_us(config.ts_back)
        self.latest_us = now_us + _delta_us(config.ts_ahead)
        self.earliest = self.now - config.ts_back
        self.latest = self.now + config.ts_ahead


@functools.lru_cache(maxsize=16)
def _compiled(pattern: str) -> re.Pattern:
    return re.compile(pattern)


def _micros(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1)


def _delta_us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _measure(raw: dict, rules: _Rules, problems: list) -> Measure | None:
    _unknown(raw, MEASURE_FIELDS, problems)
    name = _name(raw, rules, problems)
    value = _value(raw, problems)
    ts = _ts(raw.get("ts"), rules, problems)
    metadata = _metadata(raw.get("metadata"), rules, problems)
    unit = raw.get("unit")
    if unit is None:
        unit = ""
    elif problem := _text_problem(unit, rules.config.max_unit_chars):
        problems.append(("unit", problem))
    if problems:
        return None
    return Measure(name, value, ts, metadata, unit)


def _event(raw: dict, rules: _Rules, problems: list) -> Event | None:
    _unknown(raw, EVENT_FIELDS, problems)
    name = _name(raw, rules, problems)
    ts = _ts(raw.get("ts"), rules, problems)
    metadata = _metadata(raw.get("metadata"), rules, problems)
    text = raw.get("text")
    if text is not None:
        if problem := _text_problem(text):
            problems.append(("text", problem))
        elif (size := len(text.encode("utf-8"))) > rules.config.max_event_text_bytes:
            problems.append(("text", f"at most {rules.config.max_event_text_bytes} bytes of UTF-8 (got {size})"))
    if problems:
        return None
    return Event(name, ts, metadata, text)


def _unknown(raw: dict, allowed: tuple[str, ...], problems: list) -> None:
    for field in raw:
        if field not in allowed:
            problems.append((_shown(field), f"unknown field; allowed: {', '.join(allowed)}"))


def _name(raw: dict, rules: _Rules, problems: list) -> str | None:
    name = raw.get("name")
    if isinstance(name, str) and name in rules.good_names:  # a list or an object is unhashable
        return name
    if name is None:
        problems.append(("name", "required"))
        return None
    problem = _text_problem(name) or _grammar_problem(name, rules.name, rules.config.name_pattern)
    if problem:
        problems.append(("name", problem))
    else:
        rules.good_names.add(name)
    return name


def _value(raw: dict, problems: list) -> float | None:
    if "value" not in raw or raw["value"] is None:
        problems.append(("value", "required"))
        return None
    value = raw["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(("value", f"must be a number, not {_json_type(value)}"))
        return None
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float8
        value = math.inf
    if not math.isfinite(value):
        problems.append(("value", "must be a finite number"))
        return None
    return value


def _ts(ts: Any, rules: _Rules, problems: list) -> datetime | None:
    """`ts` in UTC to the microsecond, `now` when absent; None (and a problem) when invalid."""
    if ts is None:
        return rules.now
    if isinstance(ts, str):
        moment, problem = _parse_rfc3339(ts)
    elif isinstance(ts, (int, float)) and not isinstance(ts, bool):
        moment, problem = _parse_epoch(ts, rules)
    else:
        moment, problem = None, f"must be an RFC 3339 string or epoch seconds/milliseconds, not {_json_type(ts)}"
    if moment is not None and moment < rules.earliest:
        moment, problem = None, f"more than {human_duration(rules.config.ts_back)} before now (the back window)"
    elif moment is not None and moment > rules.latest:
        moment, problem = None, f"more than {human_duration(rules.config.ts_ahead)} ahead of now"
    if problem is not None:
        problems.append(("ts", problem))
    return moment


def _parse_epoch(ts: int | float, rules: _Rules) -> tuple[datetime | None, str | None]:
    if isinstance(ts, float) and not math.isfinite(ts):
        return None, "must be a finite number"
    scale = 1_000 if ts > EPOCH_MS_ABOVE else 1_000_000
    micros = ts * scale if isinstance(ts, int) else round(ts * scale)
    if micros < rules.earliest_us:  # compared as numbers first: 1e300 is no datetime
        return None, f"more than {human_duration(rules.config.ts_back)} before now (the back window)"
    if micros > rules.latest_us:
        return None, f"more than {human_duration(rules.config.ts_ahead)} ahead of now"
    return _EPOCH + timedelta(microseconds=micros), None


def _quick_rfc3339(text: str) -> datetime | None:
    """`_parse_rfc3339(text)` when `text` has the common shape and is valid, else None (no verdict).

    The shape (`YYYY-MM-DDTHH:MM:SS`, up to 6 fraction digits after a `.`, then `Z` or `+HH:MM` with an
    offset in range) is where `_parse_rfc3339` parses with `datetime.fromisoformat`, which reads only
    ASCII digits at the digit places: whatever it accepts here, the RFC 3339 pattern matches too."""
    size = len(text)
    if text[-1:] == "Z":
        body = size - 1
    elif size >= 25 and text[-3] == ":" and text[-6] in "+-" and text[-5:-3] <= "23" and text[-2:] <= "59":
        body = size - 6
    else:
        return None
    if not (body == 19 or 21 <= body <= 26 and text[19] == "."):
        return None
    if text[4:17:3] != "--T::":  # the separators, at 4, 7, 10, 13 and 16
        return None
    try:
        return datetime.fromisoformat(text).astimezone(timezone.utc)
    except ValueError:
        return None


def _parse_rfc3339(text: str) -> tuple[datetime | None, str | None]:
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None, ("must be an RFC 3339 time with an offset or Z (2026-01-05T13:00:00.123Z), "
                      "or epoch seconds/milliseconds")
    year, month, day, hour, minute, second, fraction, zulu, sign, off_h, off_m = match.groups()
    try:
        if int(off_h or 0) > 23 or int(off_m or 0) > 59:
            raise ValueError("offset out of range")
        if (fraction is None or len(fraction) <= 6) and zulu != "z" and text[10] != "t":
            moment = datetime.fromisoformat(text)  # the common shape, parsed in C
        else:
            offset = timedelta(0) if zulu else (1 if sign == "+" else -1) * timedelta(hours=int(off_h), minutes=int(off_m))
            moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second),
                              tzinfo=timezone(offset))
            if fraction:  # more than microseconds: rounded to the microsecond, as PostgreSQL does
                moment += timedelta(microseconds=(int(fraction.ljust(9, "0")) + 500) // 1000)
        return moment.astimezone(timezone.utc), None
    except (ValueError, OverflowError):
        return None, f"{_shown(text)} is not a valid date and time"


def _metadata(metadata: Any, rules: _Rules, problems: list) -> dict[str, str] | None:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        problems.append(("metadata", f"must be an object of string values, not {_json_type(metadata)}"))
        return None
    try:
        shape = tuple(metadata.items())
        if shape in rules.good_maps:
            return dict(metadata)
    except TypeError:  # a value that is a list or an object
        shape = None
    config = rules.config
    count = len(problems)
    if len(metadata) > config.max_metadata_keys:
        problems.append(("metadata", f"at most {config.max_metadata_keys} metadata keys (got {len(metadata)})"))
    for key, value in metadata.items():
        problem = _text_problem(key) or _grammar_problem(key, rules.key, config.metadata_key_pattern, "key")
        if problem is None and key in RESERVED_METADATA_KEYS:
            problem = ("reserved key: the tenant comes from the API key" if key == "tenant"
                       else f"reserved key: {', '.join(RESERVED_METADATA_KEYS)} are alert labels")
        if problem is None:
            if not isinstance(value, str):
                problem = f"must be a string, not {_json_type(value)}"
            else:
                problem = _text_problem(value, config.max_metadata_value_chars)
        if problem:
            problems.append((f"metadata.{_shown(key)}", problem))
    if len(problems) == count and shape is not None:
        rules.good_maps.add(shape)
    return dict(metadata)


def _grammar_problem(text: str, pattern: re.Pattern, source: str, what: str = "") -> str | None:
    if pattern.fullmatch(text) and len(text.encode("utf-8")) <= MAX_NAME_BYTES:
        return None
    subject = f"{what} " if what else ""
    return f"{subject}must match {source} (a letter or _, then letters, digits or _ . : -)"


def _text_problem(value: Any, max_chars: int | None = None) -> str | None:
    """Why `value` is not a string PostgreSQL can store within `max_chars`, or None."""
    if not isinstance(value, str):
        return f"must be a string, not {_json_type(value)}"
    if "\x00" in value:
        return "must not contain NUL characters"
    if max_chars is not None and len(value) > max_chars:
        return f"at most {max_chars} characters (got {len(value)})"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired UTF-16 surrogates"
    return None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _shown(text: str) -> str:
    """`text` as an error may echo it: printable, no surrogates or NUL, at most 80 characters."""
    shown = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates as \\udcxx
    if not shown.isprintable():
        shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in shown)
    return shown if len(shown) <= _SHOWN_CHARS else shown[: _SHOWN_CHARS - 3] + "..."
