"""Partitions created on demand; a rollup tier's sketch table gets the same partitions with it."""

from datetime import datetime, timedelta, timezone

import pytest

from metrics_pipeline.lib.warehouse import partitioning

JAN = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _bounds(db, table: str) -> dict[str, str]:
    """partition suffix -> its bound, for every partition of `table`."""
    rows = db.execute(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass""", (f"metrics.{table}",)).fetchall()
    return {name.removeprefix(f"{table}_"): bound for name, bound in rows}


@pytest.mark.parametrize("tier", ["rollup_5m", "rollup_1h", "rollup_1d"])
def test_a_tier_partition_comes_with_its_sketch_partition_of_the_same_range(db, tier):
    created = partitioning.ensure_partitions(db, "metrics", tier, JAN - timedelta(days=2), JAN + timedelta(days=40))
    sketch = partitioning.SKETCH_TABLES[tier]
    assert _bounds(db, tier) and _bounds(db, tier) == _bounds(db, sketch)
    assert sorted(created) == sorted([f"{tier}_{s}" for s in _bounds(db, tier)] + [f"{sketch}_{s}" for s in _bounds(db, sketch)])
    assert partitioning.ensure_partitions(db, "metrics", tier, JAN, JAN + timedelta(days=1)) == []


def test_a_missing_sketch_partition_is_created_even_when_the_tier_has_its_own(db):
    partitioning.ensure_partitions(db, "metrics", "rollup_1h", JAN, JAN + timedelta(days=1))
    db.execute("DROP TABLE metrics.rollup_1h_sketch_p202601")
    assert partitioning.ensure_partitions(db, "metrics", "rollup_1h", JAN, JAN + timedelta(days=1)) == ["rollup_1h_sketch_p202601"]
    assert partitioning.PARTITIONED_TABLES["rollup_1h_sketch"] == partitioning.PARTITIONED_TABLES["rollup_1h"]
