"""Read data-ingestion job log files (SPEC §2.4) into records without ever losing one.

Input: one file of JSON records, either a JSON array (`logs.json` style) or JSON Lines, UTF-8 with
or without a BOM, with the French field names the jobs produce. Output: every record either
*accepted* (normalised to the `ingestion_runs` columns) or *rejected* with its position, raw text
and a reason a person understands. `accepted + rejected == read`, whatever the bytes are: the
parser never raises on content.

The file's shape is decided from its structure, not its first byte alone. A file starting with `[`
is a JSON array (or several, written one after another), unless it is not one JSON document, its
first line holds a complete JSON value on its own and a later line starts with `{`: that is JSON
Lines whose first line happens to be an array, and only that line is a bad record. Anything else
is JSON Lines.

Positions: 1-based line numbers for JSON Lines, 0-based array indexes for JSON arrays, and -1 for
a whole file that is neither. A JSON array cut short (a writer that crashed) keeps every complete
item and rejects the unreadable tail as one record. In JSON Lines, a record pretty-printed over
several lines (a line opening an object or array that does not parse alone, followed by indented
or closing lines) is read as one record at its first line: loaded when valid, one rejected record
when not, never one rejection per line. Records (a line, a multi-line record, an array item) longer
than `max_record_bytes`, nesting deep enough to exhaust the parser and undecodable bytes are
rejected, never crash the run. Memory stays bounded: JSON Lines are cut from the file's bytes one
line at a time, an over-long line is never copied or decoded, and a rejected record keeps an
excerpt of at most 10,000 characters.

Each record is then validated by `validate.py` (its rules are listed there).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

from metrics_pipeline.lib.ingestion_logs.validate import (  # noqa: F401 - the parser's public names
    _NOT_SPACE,
    BOM,
    SOURCE,
    ParseOptions,
    Rejected,
    _clip,
    _excerpt,
    _fast_row,
    _hour,
    _printable,
    parse_timestamp,
    validate,
    validate_detailed,
)


@dataclasses.dataclass
class ParsedFile:
    key: str
    accepted: list[dict] = dataclasses.field(default_factory=list)
    rejected: list[Rejected] = dataclasses.field(default_factory=list)
    refused: bool = False  # the landing zone would not read the file: one rejection, position -1
    #: where each record (by position) comes from when that is not (this file, that position): Kafka
    #: messages, `(message address, element)`, by which the loader keeps one copy of each (lib/kafka)
    origins: dict[int, tuple[str, int]] | None = None

    @property
    def read(self) -> int:
        return len(self.accepted) + len(self.rejected)

    def hours(self, fallback: datetime) -> dict[int, datetime]:
        """Hour each record is attributed to, by position (rejected records included)."""
        good = sorted(r["started_at"] for r in self.accepted)
        home = _hour(good[0]) if good else _hour(fallback)
        out = {r["source_position"]: _hour(r["started_at"]) for r in self.accepted}
        for r in self.rejected:
            out[r.position] = _hour(r.started_at) if r.started_at is not None else home
        return out


def _loads(text: str):
    try:
        return json.loads(text), None
    except RecursionError:
        return None, "JSON nested too deeply"
    except ValueError as exc:
        return None, f"broken JSON ({exc})"


def parse_file(data: bytes, key: str, options: ParseOptions = ParseOptions()) -> ParsedFile:
    """Parse one landing file; never raises on content."""
    result = ParsedFile(key)
    offset = len(BOM) if data.startswith(BOM) else 0
    first = _NOT_SPACE.search(data, offset)
    if first is None:
        pass  # an empty file holds no records
    elif data[first.start()] == ord("[") and not _json_lines_opening_with_an_array(data, first.start(), options):
        _parse_array(data, result, options)
    else:
        _parse_lines(data, offset, result, options)
    return result


def _json_lines_opening_with_an_array(data: bytes, start: int, options: ParseOptions) -> bool:
    """Whether a file starting with `[` is JSON Lines whose first line is an array: there is more
    than one line, the first holds one complete JSON value on its own, and a later line starts
    with `{` (a record on its own line). A JSON document, a pretty-printed or truncated array
    (first line incomplete) and arrays written one after another (no line starts with `{`) are not."""
    newline = data.find(b"\n", start)
    if newline < 0 or _NOT_SPACE.search(data, newline) is None:
        return False  # one line: an array, complete or not
    if newline - start > options.max_record_bytes or data.find(b"\n{", newline) < 0:
        return False
    try:
        text = data[start:newline].decode("utf-8")
    except UnicodeDecodeError:
        return False
    return _loads(text)[1] is None


#: First bytes of a line that continues a pretty-printed JSON value: indentation, a closing
#: bracket, or a key (`json.dumps(indent=0)`). A line starting with `{` or `[` starts a new record.
_CONTINUATION = frozenset(b' \t}]"')


def _parse_lines(data: bytes, offset: int, result: ParsedFile, options: ParseOptions) -> None:
    number, start = 0, offset
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        number, line_start, start = number + 1, start, end + 1
        if end - line_start > options.max_record_bytes:
            result.rejected.append(Rejected(number, _excerpt(data, line_start, end),
                                            f"line longer than {options.max_record_bytes} bytes"))
            continue
        line = data[line_start:end]
        stripped = line.strip()
        if not stripped:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            result.rejected.append(Rejected(number, _clip(line.decode("utf-8", "replace")), f"not UTF-8 ({exc.reason})"))
            continue
        record, error = _loads(text)
        if error and stripped[:1] in (b"{", b"[") and start < len(data) and data[start] in _CONTINUATION:
            last_end, last_number = _continuation(data, start, number)
            if last_number > number:  # a record pretty-printed over several lines: read it whole
                _parse_multiline(data, line_start, last_end, number, last_number, result, options)
                number, start = last_number, last_end + 1
                continue
        if error:
            result.rejected.append(Rejected(number, _clip(_printable(text.rstrip("\r"))), error))
            continue
        _accept(result, validate(record, number, result.key, options, raw=text.rstrip("\r")))


def _continuation(data: bytes, start: int, number: int) -> tuple[int, int]:
    """End offset and number of the last line, from `start` on, that continues a multi-line value:
    the run of non-blank lines starting with indentation, a closing bracket or a quote."""
    last_end, last_number = start - 1, number
    while start < len(data) and data[start] in _CONTINUATION:
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if _NOT_SPACE.search(data, start, end) is None:
            break  # a blank line ends a record
        last_end, last_number, start = end, last_number + 1, end + 1
    return last_end, last_number


def _parse_multiline(data: bytes, start: int, end: int, first: int, last: int, result: ParsedFile,
                     options: ParseOptions) -> None:
    """One record written over lines `first`..`last` (bytes [start, end)): loaded or rejected whole."""
    where = f"a record over lines {first}-{last}"
    if end - start > options.max_record_bytes:
        result.rejected.append(Rejected(first, _excerpt(data, start, end),
                                        f"record longer than {options.max_record_bytes} bytes ({where})"))
        return
    try:
        text = data[start:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        result.rejected.append(Rejected(first, _excerpt(data, start, end), f"not UTF-8 ({exc.reason}; {where})"))
        return
    record, error = _loads(text)
    if error:
        reason = f"{error[:-1]}; {where})" if error.endswith(")") else f"{error} ({where})"
        result.rejected.append(Rejected(first, _clip(_printable(text)), reason))
        return
    _accept(result, validate(record, first, result.key, options, raw=text))


def _parse_array(data: bytes, result: ParsedFile, options: ParseOptions) -> None:
    try:
        text = data.decode("utf-8-sig")  # the BOM, if any, goes without copying the file first
    except UnicodeDecodeError as exc:
        result.rejected.append(Rejected(-1, _excerpt(data, 0, len(data)), f"file is not UTF-8 ({exc.reason})"))
        return
    if len(data) <= options.max_record_bytes:  # no item can be longer than the limit: one parse
        document, error = _loads(text)
        if error is None and isinstance(document, list):
            for index, record in enumerate(document):
                _accept(result, validate(record, index, result.key, options))
            return
    # Item by item: each one's size is checked, complete items of a damaged array load and the
    # unreadable tail is rejected. (A large intact array costs about 15 % more than one json.loads.)
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    index = 0
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        if position >= len(text):
            return
        if text[position] == "]":
            # Another array may follow (a writer appending); anything else after it is one bad record.
            position += 1
            while position < len(text) and text[position] in " \t\r\n":
                position += 1
            if position >= len(text):
                return
            if text[position] == "[":
                position += 1
                continue
            result.rejected.append(Rejected(index, _excerpt(text, position, len(text)), "text after the end of the JSON array"))
            return
        try:
            record, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            reason = "JSON nested too deeply" if isinstance(exc, RecursionError) else f"broken JSON array ({exc})"
            result.rejected.append(Rejected(index, _excerpt(text, position, len(text)),
                                            f"{reason}; items after this point are unreadable"))
            return
        if _utf8_longer_than(text, position, end, options.max_record_bytes):
            result.rejected.append(Rejected(index, _excerpt(text, position, end),
                                            f"record longer than {options.max_record_bytes} bytes"))
        else:
            _accept(result, validate(record, index, result.key, options))
        position, index = end, index + 1


def _utf8_longer_than(text: str, start: int, end: int, limit: int) -> bool:
    """Whether text[start:end] takes more than `limit` bytes in UTF-8, copying it only when the
    character count cannot tell (a character is 1 to 4 bytes)."""
    if end - start > limit:
        return True
    if 4 * (end - start) <= limit:
        return False
    return len(text[start:end].encode("utf-8", "surrogatepass")) > limit


def _accept(result: ParsedFile, outcome: dict | Rejected) -> None:
    if isinstance(outcome, Rejected):
        result.rejected.append(outcome)
    else:
        result.accepted.append(outcome)
