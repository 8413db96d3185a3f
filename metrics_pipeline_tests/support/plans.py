"""Reading PostgreSQL plans in tests: EXPLAIN (FORMAT JSON) walked as a tree.

Performance is measured by `benchmarks/`, never timed in a test; what a test can pin is the *shape*
of a plan, which decides how cost grows. `explain` returns the top plan node; `walk` yields every
node with the path that leads to it (so a node can be judged by where it sits: the inner side of a
nested loop and a SubPlan run once per outer row).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg

JOINS = frozenset({"Nested Loop", "Hash Join", "Merge Join"})
AGGREGATING = frozenset({"Aggregate", "WindowAgg"})

Node = dict[str, Any]


def explain(conn: psycopg.Connection, sql: str, params: dict[str, Any] | None = None) -> Node:
    """The top node of `EXPLAIN (FORMAT JSON) sql` (planned, not executed)."""
    (doc,) = conn.execute("EXPLAIN (FORMAT JSON) " + sql, params or {}).fetchone()
    return doc[0]["Plan"]


def walk(node: Node, path: tuple[Node, ...] = ()) -> Iterator[tuple[Node, tuple[Node, ...]]]:
    """Every node of the tree, depth first, with its ancestors (outermost first)."""
    yield node, path
    for child in node.get("Plans", []):
        yield from walk(child, (*path, node))


def describe(node: Node) -> str:
    name = node["Node Type"]
    if "Strategy" in node:
        name = f"{node['Strategy']} {name}"
    if "Relation Name" in node:
        name += f" on {node['Relation Name']}"
    return name


def joins_of_aggregated_inputs(plan: Node) -> list[str]:
    """Joins other than the per-row unnest of an array (a Nested Loop over a Function Scan).

    A join between two aggregated streams is the shape whose plan depends on row estimates: a hash or
    merge join when they are right, a nested loop re-running an aggregate per outer row when they
    are stale. A nested loop whose inner side is a function of the outer row is per-row work by
    construction, whatever the estimates.
    """
    found = []
    for node, _ in walk(plan):
        if node["Node Type"] not in JOINS:
            continue
        inner = [c for c in node.get("Plans", []) if c.get("Parent Relationship") == "Inner"]
        if node["Node Type"] == "Nested Loop" and inner and inner[0]["Node Type"] == "Function Scan":
            continue
        found.append(f"{describe(node)} of " + " and ".join(describe(c) for c in node.get("Plans", [])))
    return found


def subplans_that_scan_more_than_a_key(plan: Node) -> list[str]:
    """SubPlans (run once per outer row) that do more than probe an index by a key of the outer row.

    A probe is an index scan with an index condition; it may be counted (an Aggregate over it), but
    it must not scan a table, sort, or aggregate a window function's input.
    """
    found = []
    for node, path in walk(plan):
        if node.get("Parent Relationship") != "SubPlan":
            continue
        for inner, _ in walk(node):
            kind = inner["Node Type"]
            if kind == "Aggregate" and inner is node:
                continue
            if kind in ("Index Scan", "Index Only Scan") and "Index Cond" in inner:
                continue
            if kind in ("Append", "Result"):
                continue
            found.append(f"{node.get('Subplan Name', 'SubPlan')}: {describe(inner)}")
    return found
