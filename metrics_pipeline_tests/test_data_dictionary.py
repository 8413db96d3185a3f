"""docs/data-dictionary.md says what the database has: every view and column, their types, and SQL that runs.

The doc's view tables are parsed (a `### `v_...`` heading, possibly naming several views that share
one table, then a `| column | type | ... |` table) and compared with the migrated schema in both
directions; every ```sql example is run as the read-only BI role against a warehouse holding a sample
of every source (Grafana examples after Grafana's own macro substitution) and must return rows.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from metrics_pipeline_tests.support import bi_sample
from metrics_pipeline_tests.support.grafana_sql import TimeRange, interpolate

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "data-dictionary.md"
DOC = DOC_PATH.read_text()
# information_schema spells some types long; the doc uses the names people type.
TYPE_NAMES = {"timestamp with time zone": "timestamptz", "character varying": "varchar"}


def documented_views(doc: str = DOC) -> dict[str, list[tuple[str, str]]]:
    """{view: [(column, type), ...]} from the tables of the "## Views" section, in the doc's order."""
    section = doc.split("\n## Views\n", 1)[1].split("\n## ", 1)[0]
    views: dict[str, list[tuple[str, str]]] = {}
    for block in re.split(r"\n(?=### )", section)[1:]:
        heading, _, body = block.partition("\n")
        names = re.findall(r"`(v_\w+)`", heading)
        assert names, f"a view heading names no view: {heading!r}"
        table = [line for line in body.splitlines() if line.startswith("|")]
        assert table and [c.strip() for c in table[0].strip("|").split("|")][:2] == ["column", "type"], heading
        columns = []
        for line in table[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            match = re.fullmatch(r"`(\w+)`", cells[0])
            assert match, f"{heading}: column cell {cells[0]!r} is not a `name`"
            assert len(cells) == 5 and all(cells), f"{heading}: {cells[0]} needs type, unit, meaning, NULL when"
            columns.append((match.group(1), cells[1]))
        for name in names:
            assert name not in views, f"{name} is documented twice"
            views[name] = columns
    return views


def sql_examples(doc: str = DOC) -> list[str]:
    return re.findall(r"```sql\n(.*?)```", doc, flags=re.S)


def database_views(conn: psycopg.Connection) -> dict[str, list[tuple[str, str]]]:
    rows = conn.execute(
        """SELECT c.table_name, c.column_name, c.data_type
           FROM information_schema.columns c
           JOIN information_schema.views v USING (table_schema, table_name)
           WHERE c.table_schema = 'metrics' AND c.table_name LIKE 'v\\_%'  -- bi_* views are internal
           ORDER BY c.table_name, c.ordinal_position"""
    ).fetchall()
    views: dict[str, list[tuple[str, str]]] = {}
    for view, column, data_type in rows:
        views.setdefault(view, []).append((column, TYPE_NAMES.get(data_type, data_type)))
    return views


def test_every_view_of_the_schema_is_documented_and_every_documented_view_exists(db):
    assert set(documented_views()) == set(database_views(db))


def test_documented_columns_are_the_views_columns_in_order_with_their_types(db):
    actual = database_views(db)
    for view, columns in documented_views().items():
        assert columns == actual[view], f"docs/data-dictionary.md, {view}"


def test_every_view_named_anywhere_in_the_doc_exists(db):
    actual = set(database_views(db))
    named = set(re.findall(r"\bv_[a-z0-9_]+[a-z0-9]", DOC)) - {"v_rollup"}  # `v_rollup_*` means the three
    assert named <= actual, f"the doc names views that do not exist: {sorted(named - actual)}"


def test_the_doc_has_eight_to_thirteen_examples_using_only_views():
    examples = sql_examples()
    assert 8 <= len(examples) <= 13
    for sql in examples:
        tables = re.findall(r"\b(?:FROM|JOIN)\s+([\w.]+)", sql, flags=re.I)
        assert tables and all(re.fullmatch(r"metrics\.v_\w+", t) for t in tables), tables


@pytest.fixture(scope="module")
def sample(pg_server, migrated_template):
    with bi_sample.sample_warehouse(pg_server, migrated_template) as pair:
        yield pair


@pytest.mark.parametrize("number", range(1, len(sql_examples()) + 1))
def test_every_example_query_runs_as_the_bi_role_and_returns_rows(sample, number):
    warehouse, bi_dsn = sample
    sql = sql_examples()[number - 1]
    if "$__" in sql:  # a Grafana example: the dashboard's default range, last 24 hours
        sql = interpolate(sql, TimeRange.relative(warehouse.now, "24h"), {})
    with psycopg.connect(bi_dsn, autocommit=True) as conn:
        rows = conn.execute(sql).fetchall()
    assert rows, f"example {number} returns nothing on the sample warehouse:\n{sql}"
