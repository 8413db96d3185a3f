"""Ingestion-log files of every shape for property tests (issue 16), built with the number of good
and bad records they hold, so a test can check the parser's and the loader's counts against them.

A JSON Lines file mixes: good records, invalid records (valid JSON, refused by validation), broken
lines, lines holding a JSON array or a bare value, records pretty-printed over lines (whole or cut
short), records over the size limit `LIMIT` (on one line or pretty-printed), blank lines and not-UTF-8
lines; with or without a BOM. A JSON array file mixes good, invalid, non-object and oversize items,
compact or pretty-printed, possibly as several arrays one after another. An empty file holds none.

The pieces follow the parser's documented rules, so the expected counts are exact: every piece
except blank lines is one record; a broken piece never starts with `[` or with indentation, a quote
or a closing bracket (that would make it part of a multi-line record or the file an array); a file
whose first piece is an array line has a later line starting with `{` (else it would be an array).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone

from hypothesis import strategies as st

from metrics_pipeline_tests.support.ingestion_logs import at

H13 = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
#: The record size limit the property tests parse with (small, so oversize records stay cheap).
LIMIT = 4_000
BOM = b"\xef\xbb\xbf"


def records(n: int, first_id: int = 1) -> list[dict]:
    """`n` valid records of hour 13:00 on 2026-01-05, with distinct natural keys."""
    return [at(H13, (first_id + i) % 60, Objet_Id=first_id + i) for i in range(n)]


@dataclasses.dataclass(frozen=True)
class Case:
    data: bytes
    good: int  # records the parser must accept
    bad: int  # records it must reject

    @property
    def read(self) -> int:
        return self.good + self.bad


_BROKEN = ["{torn", "not json", '{"No_Sequence":', "{]", '{"a": [', "NaN-ish text"]
_BARE = ["42", "true", "null", "-1.5"]


@st.composite
def _line_piece(draw, ids) -> tuple[bytes, int, int]:
    kind = draw(st.sampled_from(["good", "good", "invalid", "broken", "bare", "array", "pretty", "torn_pretty",
                                 "oversize", "oversize_pretty", "blank", "not_utf8"]))
    record = records(1, next(ids))[0]
    if kind == "good":
        return json.dumps(record).encode(), 1, 0
    if kind == "invalid":
        return json.dumps({**record, "Etat": "??"}).encode(), 0, 1
    if kind == "broken":
        return draw(st.sampled_from(_BROKEN)).encode(), 0, 1
    if kind == "bare":
        return draw(st.sampled_from(_BARE)).encode(), 0, 1
    if kind == "array":
        return json.dumps(draw(st.sampled_from([[], [1, 2], [record]]))).encode(), 0, 1
    if kind == "pretty":
        return json.dumps(record, indent=draw(st.sampled_from([1, 2, 4, "\t"]))).encode(), 1, 0
    if kind == "torn_pretty":
        text = json.dumps(record, indent=2)
        return text[: draw(st.integers(1, len(text) - 2))].encode(), 0, 1
    if kind == "oversize":
        return json.dumps({**record, "Description": "x" * (LIMIT + draw(st.integers(1, 500)))}).encode(), 0, 1
    if kind == "oversize_pretty":
        return json.dumps({**record, "Description": "x" * LIMIT}, indent=2).encode(), 0, 1
    if kind == "not_utf8":
        return b"\xff\xfe{" + b"\xe9" * draw(st.integers(0, 5)) + b"}", 0, 1
    return draw(st.sampled_from([b"", b"   ", b"\r"])), 0, 0


@st.composite
def json_lines_file(draw, ids) -> Case:
    pieces = draw(st.lists(_line_piece(ids), min_size=1, max_size=12))
    first = next((p for p in pieces if p[0].strip()), None)
    if first is not None and first[0].startswith(b"["):
        later = pieces[pieces.index(first) + 1:]
        if not any(p[0].startswith(b"{") for p in later):  # else it would be read as an array
            pieces.append((json.dumps(records(1, next(ids))[0]).encode(), 1, 0))
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    data = newline.join(p[0] for p in pieces) + draw(st.sampled_from([b"", newline]))
    if draw(st.booleans()):
        data = BOM + data
    return Case(data, sum(p[1] for p in pieces), sum(p[2] for p in pieces))


@st.composite
def _item(draw, ids) -> tuple[object, int, int]:
    kind = draw(st.sampled_from(["good", "good", "invalid", "bare", "oversize"]))
    record = records(1, next(ids))[0]
    if kind == "good":
        return record, 1, 0
    if kind == "invalid":
        return {**record, "Debut": "yesterday"}, 0, 1
    if kind == "bare":
        return draw(st.sampled_from([1, "text", [1, 2], None])), 0, 1
    return {**record, "Description": "x" * (LIMIT + draw(st.integers(1, 500)))}, 0, 1


@st.composite
def json_array_file(draw, ids) -> Case:
    arrays = draw(st.lists(st.lists(_item(ids), max_size=8), min_size=1, max_size=3))
    indent = draw(st.sampled_from([None, None, 1, 2]))
    data = b"\n".join(json.dumps([i[0] for i in items], indent=indent).encode() for items in arrays)
    if draw(st.booleans()):
        data = BOM + data
    flat = [i for items in arrays for i in items]
    return Case(data, sum(i[1] for i in flat), sum(i[2] for i in flat))


def empty_file() -> st.SearchStrategy[Case]:
    return st.sampled_from([Case(b"", 0, 0), Case(BOM, 0, 0), Case(b" \n\n", 0, 0), Case(b"[]", 0, 0)])


@st.composite
def file_strategy(draw) -> Case:
    """One file of any shape, its records numbered from a fresh counter."""
    counter = iter(range(draw(st.integers(1, 10_000)), 10**9))
    return draw(st.one_of(json_lines_file(counter), json_array_file(counter), empty_file()))


@st.composite
def files_strategy(draw, max_files: int = 4) -> list[Case]:
    """Several files whose records never share a natural key (one counter for all of them)."""
    counter = iter(range(1, 10**9))
    return draw(st.lists(st.one_of(json_lines_file(counter), json_array_file(counter), empty_file()),
                         min_size=1, max_size=max_files))
