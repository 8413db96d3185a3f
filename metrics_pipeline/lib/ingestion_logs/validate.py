"""Validate one data-ingestion job record (SPEC §2.4): a normalised `ingestion_runs` row, or every
reason it is refused. `parse.py` reads files into records and calls `validate` on each.

Validation, in order (all problems of a record are reported together):
* required fields present and non-empty: No_Sequence, Entreprise, Zone, Source, Objet_Id, Objet,
  Transformation, Etat, Debut, Fin, "Duree secondes";
* No_Sequence is YYYY-MM-DD-HH-MM and agrees with Date_Sequence/Heure_Sequence/Minute_Sequence
  when those are present;
* Etat is SUCCESS or FAILED (case and surrounding spaces ignored);
* Debut and Fin parse (ISO 8601 or `YYYY-MM-DD HH:MM:SS`; naive times are in the configured
  timezone), Fin is not before Debut;
* "Duree secondes" is a non-negative number agreeing with Fin - Debut within the tolerance
  (default: 2 s or 1 % of the span, whichever is larger);
* `cpu_time (sec)` and `memory_used (bytes)`, when present and not null, are non-negative numbers;
* Debut is inside the pipeline's partition range: not before the first partition, and at most
  `max_future` (1 day) after `now`, the moment the file is judged against (the loader passes the
  file's arrival, so a re-run judges it the same way). A job writes its record after the run, so a
  start after the file arrived is a wrong clock or a naive local time read in the wrong zone; such
  errors stay under a day (time zones reach UTC+14), and those records are loaded once their hour
  exists. A start further ahead is no such slip: it is rejected now, visibly, instead of waiting
  unseen for days.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

SOURCE = "ingestion_logs"
BOM = b"\xef\xbb\xbf"
REQUIRED = ("No_Sequence", "Entreprise", "Zone", "Source", "Objet_Id", "Objet", "Transformation", "Etat",
            "Debut", "Fin", "Duree secondes")
TEXT_FIELDS = {"Entreprise": "company", "Zone": "zone", "Source": "source_system", "Objet": "object",
               "Transformation": "transformation"}
STATUSES = ("SUCCESS", "FAILED")
_SEQUENCE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_RAW_LIMIT = 10_000
_NOT_SPACE = re.compile(rb"\S")


@dataclasses.dataclass(frozen=True)
class ParseOptions:
    """How to read timestamps and judge durations. Defaults follow SPEC §2.4."""

    timezone: str = "UTC"
    duration_tolerance_s: float = 2.0
    duration_tolerance_ratio: float = 0.01
    min_start: datetime | None = None
    max_future: timedelta = timedelta(days=1)
    max_record_bytes: int = 1_000_000
    #: The moment records are judged against ("in the future"): the loader passes the file's
    #: arrival; defaults to the wall clock.
    now: datetime | None = None

    @property
    def tz(self) -> tzinfo:
        return timezone.utc if self.timezone.upper() == "UTC" else ZoneInfo(self.timezone)


@dataclasses.dataclass
class Rejected:
    position: int
    raw: str
    reason: str
    started_at: datetime | None = None  # when Debut parsed: the hour the record belongs to


def _hour(ts: datetime) -> datetime:
    return ts.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def _span(delta: timedelta) -> str:
    """A duration for a person: `26 h`, `3.5 days`."""
    hours = delta.total_seconds() / 3600
    return f"{round(hours, 1):g} h" if hours < 48 else f"{round(hours / 24, 1):g} days"


def _clip(text: str) -> str:
    return text if len(text) <= _RAW_LIMIT else text[:_RAW_LIMIT] + f"... [{len(text) - _RAW_LIMIT} more characters]"


def _excerpt(data: str | bytes, start: int, end: int) -> str:
    """`data[start:end]` for the quarantine, clipped *before* it is copied (it may be hundreds of MB)."""
    part = data[start:min(end, start + _RAW_LIMIT)]
    text = _printable(part.decode("utf-8", "replace") if isinstance(part, bytes) else part)
    unit = "bytes" if isinstance(data, bytes) else "characters"
    return text if end - start <= _RAW_LIMIT else f"{text}... [{end - start - _RAW_LIMIT} more {unit}]"


def parse_timestamp(value, tz: tzinfo) -> datetime:
    """ISO 8601 or `YYYY-MM-DD HH:MM:SS[.ffffff]`, offset optional (naive = `tz`)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("not a timestamp string")
    text = value.strip()
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    return ts.astimezone(timezone.utc)


def _storable(text: str) -> bool:
    """PostgreSQL text holds neither NUL nor unpaired surrogates (JSON can encode both)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    """Raw text made storable for the quarantine: NUL and lone surrogates escaped, nothing dropped."""
    text = text.replace("\x00", "\\u0000")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _number(value) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip().replace(",", "."))
    else:
        raise ValueError("not a number")
    if not math.isfinite(number):
        raise ValueError("not a finite number")
    return number


def validate(record, position: int, key: str, options: ParseOptions, raw: str | None = None) -> dict | Rejected:
    """A normalised `ingestion_runs` row, or the reasons the record is refused.

    `raw` is the record's text as read (a JSON Lines line); array items are re-serialised.
    Well-formed records take `_fast_row`; anything it is unsure of gets the detailed checks.
    """
    row = _fast_row(record, position, key, options)
    if row is not None:
        return row
    return validate_detailed(record, position, key, options, raw)


def _fast_row(record, position: int, key: str, options: ParseOptions) -> dict | None:
    """The common case in one pass: every field present and of the expected type. Returns None
    (never a rejection) as soon as anything is unusual; `validate_detailed` then decides."""
    try:
        if type(record) is not dict:
            return None
        texts = [record[f] for f in ("Entreprise", "Zone", "Source", "Objet", "Transformation")]
        if any(type(t) is not str or not t or t != t.strip() or not _storable(t) for t in texts):
            return None
        object_id = record["Objet_Id"]
        if type(object_id) is int:
            object_id = str(object_id)
        elif type(object_id) is not str or not object_id or object_id != object_id.strip() or not _storable(object_id):
            return None
        status = record["Etat"]
        if status != "SUCCESS" and status != "FAILED":
            return None
        seq = record["No_Sequence"]
        if type(seq) is not str or len(seq) != 16 or not _SEQUENCE.match(seq):
            return None
        date_seq, hour_seq, minute_seq = record.get("Date_Sequence"), record.get("Heure_Sequence"), record.get("Minute_Sequence")
        if date_seq is not None and date_seq != seq[:10]:
            return None
        if hour_seq is not None and (type(hour_seq) not in (str, int) or int(hour_seq) != int(seq[11:13])):
            return None
        if minute_seq is not None and (type(minute_seq) not in (str, int) or int(minute_seq) != int(seq[14:16])):
            return None
        started = datetime.fromisoformat(record["Debut"])
        ended = datetime.fromisoformat(record["Fin"])
        if started.tzinfo is None:
            started = started.replace(tzinfo=options.tz)
        if ended.tzinfo is None:
            ended = ended.replace(tzinfo=options.tz)
        started, ended = started.astimezone(timezone.utc), ended.astimezone(timezone.utc)
        duration = record["Duree secondes"]
        if type(duration) not in (int, float) or not 0 <= duration < 1e12:
            return None
        span = (ended - started).total_seconds()
        if span < 0 or abs(duration - span) > max(options.duration_tolerance_s, options.duration_tolerance_ratio * span):
            return None
        now = options.now or datetime.now(timezone.utc)
        if started > now + options.max_future or (options.min_start and started < options.min_start):
            return None
        cpu, memory = record.get("cpu_time (sec)"), record.get("memory_used (bytes)")
        if cpu is not None and (type(cpu) not in (int, float) or not 0 <= cpu < 1e15):
            return None
        if memory is not None and (type(memory) is not int or memory < 0 or memory >= 2**63):
            return None
        description = record.get("Description")
        if description is not None and (type(description) is not str or not _storable(description)):
            return None
        int(seq[:4]), datetime(int(seq[:4]), int(seq[5:7]), int(seq[8:10]), int(seq[11:13]), int(seq[14:16]))
    except (KeyError, ValueError, TypeError, OverflowError):
        return None
    return {
        "source_file": key, "source_position": position, "company": texts[0], "zone": texts[1],
        "source_system": texts[2], "object": texts[3], "transformation": texts[4], "object_id": object_id,
        "sequence_no": seq, "status": status, "started_at": started, "ended_at": ended,
        "duration_s": float(duration), "cpu_time_s": None if cpu is None else float(cpu),
        "memory_used_bytes": memory, "description": description,
    }


def validate_detailed(record, position: int, key: str, options: ParseOptions, raw: str | None = None) -> dict | Rejected:
    """Every check, every reason: the reference behaviour `_fast_row` must agree with."""
    def rejected(reason: str, started: datetime | None = None) -> Rejected:
        text = raw
        if text is None:
            try:
                text = json.dumps(record, ensure_ascii=False, default=str)
            except (RecursionError, ValueError):
                text = repr(record)[:_RAW_LIMIT]
        return Rejected(position, _clip(_printable(text)), reason, started)

    if not isinstance(record, dict):
        return rejected(f"record is a JSON {type(record).__name__}, not an object")
    problems: list[str] = []
    missing = [f for f in REQUIRED if record.get(f) is None or (isinstance(record.get(f), str) and not record[f].strip())]
    if missing:
        problems.append("missing field(s) " + ", ".join(repr(f) for f in missing))
    row: dict = {"source_file": key, "source_position": position}

    for field, column in TEXT_FIELDS.items():
        value = record.get(field)
        if field in missing:
            continue
        if not isinstance(value, str):
            problems.append(f"{field!r} must be text, got {json.dumps(value, default=str)[:80]}")
        else:
            row[column] = value.strip()
    if "Objet_Id" not in missing:
        value = record["Objet_Id"]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            problems.append(f"'Objet_Id' must be text or an integer, got {json.dumps(value, default=str)[:80]}")
        else:
            row["object_id"] = str(value).strip()

    if "No_Sequence" not in missing:
        problems += _check_sequence(record, row)
    if "Etat" not in missing:
        status = record["Etat"].strip().upper() if isinstance(record["Etat"], str) else None
        if status not in STATUSES:
            problems.append(f"unknown status {record['Etat']!r} (expected SUCCESS or FAILED)")
        else:
            row["status"] = status

    started = ended = None
    for field, column in (("Debut", "started_at"), ("Fin", "ended_at")):
        if field in missing:
            continue
        try:
            row[column] = parse_timestamp(record[field], options.tz)
        except (ValueError, TypeError, OverflowError):
            problems.append(f"{field!r} is not a timestamp: {str(record[field])[:60]!r}")
    started, ended = row.get("started_at"), row.get("ended_at")
    if started and ended and ended < started:
        problems.append(f"end before start (Debut {started.isoformat()}, Fin {ended.isoformat()})")
    in_range = started is not None
    if started:
        now = options.now or datetime.now(timezone.utc)
        if started > now + options.max_future:
            problems.append(
                f"start {started.isoformat()} is in the future: {_span(started - now)} after the file arrived "
                f"({now.isoformat(timespec='seconds')}), more than the {_span(options.max_future)} a wrong clock or "
                "time zone explains"
            )
            in_range = False
        if options.min_start and started < options.min_start:
            problems.append(f"start {started.isoformat()} is before the first partition {options.min_start.isoformat()}")
            in_range = False

    if "Duree secondes" not in missing:
        try:
            duration = _number(record["Duree secondes"])
        except (ValueError, TypeError, OverflowError):
            problems.append(f"'Duree secondes' is not a number: {str(record['Duree secondes'])[:60]!r}")
        else:
            if duration < 0:
                problems.append(f"negative duration {duration:g} s")
            elif started and ended and ended >= started:
                span = (ended - started).total_seconds()
                tolerance = max(options.duration_tolerance_s, options.duration_tolerance_ratio * span)
                if abs(duration - span) > tolerance:
                    problems.append(
                        f"duration {duration:g} s disagrees with Fin - Debut = {span:g} s (tolerance {tolerance:g} s)"
                    )
            row["duration_s"] = duration

    for field, column, integral in (("cpu_time (sec)", "cpu_time_s", False), ("memory_used (bytes)", "memory_used_bytes", True)):
        value = record.get(field)
        if value is None:
            row[column] = None
            continue
        try:
            number = value if integral and type(value) is int else _number(value)
            if number < 0 or (integral and (number != int(number) or int(number) >= 2**63)):
                raise ValueError
            row[column] = int(number) if integral else number
        except (ValueError, TypeError, OverflowError):
            problems.append(f"{field!r} must be a non-negative number, got {str(value)[:60]!r}")
            row[column] = None

    description = record.get("Description")
    if description is not None and not isinstance(description, str):
        problems.append(f"'Description' must be text, got {type(description).__name__}")
    row["description"] = description
    texts = [row.get(c) for c in ("company", "zone", "source_system", "object", "transformation", "object_id", "description")]
    if any(isinstance(t, str) and not _storable(t) for t in texts):
        problems.append("text fields must not contain NUL characters or unpaired UTF-16 surrogates")

    if problems:
        # A record whose start no partition can hold is attributed to its file's home hour.
        return rejected("; ".join(problems), started if in_range else None)
    return row


def _check_sequence(record: dict, row: dict) -> list[str]:
    value = record["No_Sequence"]
    match = _SEQUENCE.match(value.strip()) if isinstance(value, str) else None
    if not match:
        return [f"'No_Sequence' {value!r} is not YYYY-MM-DD-HH-MM"]
    year, month, day, hour, minute = (int(g) for g in match.groups())
    try:
        datetime(year, month, day, hour, minute)
    except ValueError:
        return [f"'No_Sequence' {value!r} is not a real date and time"]
    row["sequence_no"] = value.strip()
    problems = []
    checks = (
        ("Date_Sequence", lambda v: str(v).strip() == f"{year:04d}-{month:02d}-{day:02d}"),
        ("Heure_Sequence", lambda v: _as_int(v) == hour),
        ("Minute_Sequence", lambda v: _as_int(v) == minute),
    )
    for field, agrees in checks:
        if record.get(field) is not None and not agrees(record[field]):
            problems.append(f"{field!r} {record[field]!r} disagrees with No_Sequence {value!r}")
    return problems


def _as_int(value) -> int | None:
    try:
        number = _number(value)
    except (ValueError, TypeError, OverflowError):
        return None
    return int(number) if number == int(number) else None


