"""Markdown tables for run metadata, one way for every asset and check.

Dagster shows `MetadataValue.md` as rendered markdown: a short table is what a person would rather
read than a JSON blob. Cells are escaped (`|`), times are shown to the second and floats to four
significant digits; long tables are cut with a line saying how many rows were left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

MAX_ROWS = 20


def cell(value) -> str:
    """One table cell: a readable, escaped rendering of `value`."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(columns: Sequence[str], rows: Iterable[Sequence], *, empty: str = "none", limit: int = MAX_ROWS) -> str:
    """A markdown table of `rows` under `columns`; `empty` when there are none."""
    rows = list(rows)
    if not rows:
        return empty
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n{len(rows) - limit} more not shown")
    return "\n".join(lines)


def records_table(records: Sequence[Mapping], *, empty: str = "none", limit: int = MAX_ROWS) -> str:
    """A table of dict rows, their keys as columns (the first row's order)."""
    if not records:
        return empty
    columns = list(records[0])
    return table(columns, ([r[c] for c in columns] for r in records), empty=empty, limit=limit)


def counts_table(counts: Mapping[str, int], columns: Sequence[str] = ("what", "count"), *,
                 empty: str = "none", limit: int = MAX_ROWS) -> str:
    """A two-column table of counts, largest first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return table(columns, ordered, empty=empty, limit=limit)
