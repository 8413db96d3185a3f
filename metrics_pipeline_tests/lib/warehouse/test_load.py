import threading
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest

from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.load import load_points

T0 = datetime(2026, 3, 10, 12, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def frame_of(rows, source=None):
    """rows: (metric, resource, labels, unit, ts, value)."""
    frame = pd.DataFrame(rows, columns=["metric", "resource", "labels", "unit", "ts", "value"])
    if source:
        frame.insert(0, "source", source)
    return frame


def cpu(ts, value, host="web-1", labels=None):
    return ("host_cpu_percent", host, labels if labels is not None else {"host": host}, "percent", ts, value)


def window_rows(conn, source, start=T0, end=T0 + HOUR):
    return conn.execute(
        """SELECT s.metric, s.resource, s.labels, p.ts, p.value FROM metrics.points p
           JOIN metrics.series s USING (series_id)
           WHERE s.source = %s AND p.ts >= %s AND p.ts < %s ORDER BY 1, 2, 3::text, 4""",
        (source, start, end),
    ).fetchall()


def test_loading_the_same_window_twice_leaves_identical_rows(warehouse_dsn, db):
    frame = frame_of([cpu(T0 + timedelta(seconds=i), float(i)) for i in range(60)])
    first = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    rows = window_rows(db, "host")
    second = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert window_rows(db, "host") == rows
    assert (first.points, first.inserted, first.changed, first.new_series) == (60, 60, 60, 1)
    assert (second.points, second.changed, second.new_series) == (60, 0, 0)
    assert db.execute("SELECT count(*) FROM metrics.series").fetchone()[0] == 1


def test_reload_replaces_the_window_with_exactly_the_latest_fetch(warehouse_dsn, db):
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0 + timedelta(minutes=i), 1.0) for i in range(10)]),
                source="host", start=T0, end=T0 + HOUR)
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0 + timedelta(minutes=3), 42.0)]), source="host", start=T0, end=T0 + HOUR)
    assert [(r[3], r[4]) for r in window_rows(db, "host")] == [(T0 + timedelta(minutes=3), 42.0)]


def test_an_empty_frame_empties_the_window(warehouse_dsn, db):
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)]), source="host", start=T0, end=T0 + HOUR)
    result = load_points(Warehouse(warehouse_dsn), frame_of([]), source="host", start=T0, end=T0 + HOUR)
    assert result.points == 0 and result.deleted == 1
    assert window_rows(db, "host") == []


def test_rows_outside_the_window_but_same_source_are_untouched(warehouse_dsn, db):
    before = frame_of([cpu(T0 - timedelta(minutes=1), 5.0)])
    load_points(Warehouse(warehouse_dsn), before, source="host", start=T0 - HOUR, end=T0)
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)]), source="host", start=T0, end=T0 + HOUR)
    load_points(Warehouse(warehouse_dsn), frame_of([]), source="host", start=T0, end=T0 + HOUR)
    assert len(window_rows(db, "host", T0 - HOUR, T0)) == 1


def test_a_failure_after_the_delete_leaves_the_previous_window_intact(warehouse_dsn, db):
    good = frame_of([cpu(T0 + timedelta(seconds=i), float(i)) for i in range(30)])
    load_points(Warehouse(warehouse_dsn), good, source="host", start=T0, end=T0 + HOUR)
    before = window_rows(db, "host")
    # A real server-side failure in the middle of the COPY, after the window was deleted.
    db.execute(
        """CREATE FUNCTION metrics.explode() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.value = 666 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$"""
    )
    db.execute(
        "CREATE TRIGGER explode BEFORE INSERT OR UPDATE ON metrics.points FOR EACH ROW EXECUTE FUNCTION metrics.explode()"
    )
    bad = frame_of([cpu(T0 + timedelta(seconds=i), 666.0 if i == 20 else 1.0) for i in range(40)])
    with pytest.raises(psycopg.Error, match="injected failure"):
        load_points(Warehouse(warehouse_dsn), bad, source="host", start=T0, end=T0 + HOUR)
    assert window_rows(db, "host") == before


def test_a_failure_during_a_first_load_leaves_no_points_and_no_series(warehouse_dsn, db):
    db.execute(
        """CREATE FUNCTION metrics.explode() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN IF NEW.value = 666 THEN RAISE EXCEPTION 'injected failure'; END IF; RETURN NEW; END $$"""
    )
    db.execute("CREATE TRIGGER explode BEFORE INSERT ON metrics.points FOR EACH ROW EXECUTE FUNCTION metrics.explode()")
    bad = frame_of([cpu(T0 + timedelta(seconds=i), 666.0 if i == 5 else 1.0) for i in range(10)])
    with pytest.raises(psycopg.Error, match="injected failure"):
        load_points(Warehouse(warehouse_dsn), bad, source="host", start=T0, end=T0 + HOUR)
    assert db.execute("SELECT count(*) FROM metrics.points").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM metrics.series").fetchone()[0] == 0


def test_a_rerun_reports_exactly_the_points_that_changed(warehouse_dsn, db):
    base = [cpu(T0 + timedelta(minutes=i), float(i)) for i in range(10)]
    load_points(Warehouse(warehouse_dsn), frame_of(base), source="host", start=T0, end=T0 + HOUR)
    late = base[1:]  # minute 0 vanished
    late[0] = cpu(T0 + timedelta(minutes=1), 99.0)  # minute 1 corrected
    late.append(cpu(T0 + timedelta(minutes=30), 5.0))  # a late point arrived
    result = load_points(Warehouse(warehouse_dsn), frame_of(late), source="host", start=T0, end=T0 + HOUR)
    assert (result.points, result.inserted, result.updated, result.deleted, result.changed) == (10, 1, 1, 1, 3)
    stored = [(r[3], r[4]) for r in window_rows(db, "host")]
    assert stored == sorted((row[4], row[5]) for row in late)


def test_two_sources_windows_do_not_touch_each_other(warehouse_dsn, db):
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)]), source="host", start=T0, end=T0 + HOUR)
    ec2 = frame_of([("aws_ec2_cpuutilization", "i-0abc", {"region": "eu-west-1"}, "percent", T0, 7.0)])
    load_points(Warehouse(warehouse_dsn), ec2, source="cloudwatch", start=T0, end=T0 + HOUR)
    load_points(Warehouse(warehouse_dsn), frame_of([]), source="cloudwatch", start=T0, end=T0 + HOUR)
    assert len(window_rows(db, "host")) == 1
    assert window_rows(db, "cloudwatch") == []


def test_a_window_across_midnight_lands_in_the_right_day_partitions(warehouse_dsn, db):
    start = datetime(2026, 3, 10, 23, 30, tzinfo=timezone.utc)
    frame = frame_of([cpu(start + timedelta(minutes=m), float(m)) for m in range(60)])
    load_points(Warehouse(warehouse_dsn), frame, source="host", start=start, end=start + HOUR)
    placed = db.execute(
        "SELECT tableoid::regclass::text, min(ts), max(ts), count(*) FROM metrics.points GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert placed == [
        ("metrics.points_p20260310", start, start + timedelta(minutes=29), 30),
        ("metrics.points_p20260311", start + timedelta(minutes=30), start + timedelta(minutes=59), 30),
    ]


def test_partitions_are_created_for_backfills_years_back(warehouse_dsn, db):
    old = datetime(2019, 2, 28, 22, tzinfo=timezone.utc)
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(old + timedelta(hours=1), 1.0)]), source="host", start=old, end=old + 3 * HOUR)
    names = {r[0] for r in db.execute("SELECT relname FROM pg_class WHERE relname LIKE 'points_p2019%' AND relkind = 'r'")}
    assert names == {"points_p20190228", "points_p20190301"}


def test_naive_timestamps_are_a_clear_error(warehouse_dsn):
    frame = frame_of([cpu(datetime(2026, 3, 10, 12, 5), 1.0)])
    frame["ts"] = pd.to_datetime(frame["ts"])
    with pytest.raises(ValueError, match="column 'ts' must be timezone-aware.*row 0"):
        load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)


def test_naive_window_bounds_are_a_clear_error(warehouse_dsn):
    with pytest.raises(ValueError, match="start must be a timezone-aware"):
        load_points(Warehouse(warehouse_dsn), frame_of([]), source="host", start=T0.replace(tzinfo=None), end=T0 + HOUR)


def test_rows_outside_the_window_are_an_error_naming_an_example(warehouse_dsn, db):
    frame = frame_of([cpu(T0, 1.0), cpu(T0 + HOUR, 2.0)])
    with pytest.raises(ValueError, match=r"column 'ts' has 1 row\(s\) outside the window.*row 1"):
        load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert window_rows(db, "host", T0, T0 + 2 * HOUR) == []


def test_rows_outside_the_window_can_be_dropped_and_counted(warehouse_dsn, db):
    frame = frame_of([cpu(T0, 1.0), cpu(T0 - timedelta(seconds=1), 2.0), cpu(T0 + HOUR, 3.0)])
    result = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR, out_of_window="drop")
    assert result.points == 1 and result.dropped == {"out_of_window": 2}


def test_nan_and_infinite_values_are_dropped_and_counted_never_written(warehouse_dsn, db):
    values = [1.0, float("nan"), float("inf"), -float("inf"), None, 2.0]
    frame = frame_of([cpu(T0 + timedelta(seconds=i), v) for i, v in enumerate(values)])
    result = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert result.points == 2
    assert result.dropped == {"non_finite": 4}
    assert [r[4] for r in window_rows(db, "host")] == [1.0, 2.0]


def test_duplicate_series_and_timestamp_keeps_the_last_row_and_counts_the_rest(warehouse_dsn, db):
    frame = frame_of([cpu(T0, 1.0), cpu(T0 + timedelta(seconds=1), 5.0), cpu(T0, 2.0), cpu(T0, 3.0)])
    result = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert result.points == 2 and result.dropped == {"duplicate": 2}
    assert [(r[3], r[4]) for r in window_rows(db, "host")] == [(T0, 3.0), (T0 + timedelta(seconds=1), 5.0)]


def test_label_order_does_not_make_a_new_series(warehouse_dsn, db):
    frame = frame_of([
        cpu(T0, 1.0, labels={"host": "a", "zone": "z1"}),
        cpu(T0 + timedelta(seconds=1), 2.0, labels={"zone": "z1", "host": "a"}),
        cpu(T0 + timedelta(seconds=2), 3.0, labels='{"zone": "z1", "host": "a"}'),
    ])
    result = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert result.series == 1 and result.points == 3


@pytest.mark.parametrize(
    ("column", "bad", "message"),
    [
        ("value", "12%", "column 'value' holds non-numeric values"),
        ("metric", None, "column 'metric' has missing values"),
        ("metric", "", "column 'metric' must not be empty"),
        ("unit", 5, "column 'unit' must hold strings"),
        ("labels", {"port": 443}, "column 'labels': labels must map strings to strings"),
        ("labels", "not json", "column 'labels': labels text is not JSON"),
        ("labels", ["a"], "column 'labels': labels must be a mapping"),
        ("ts", "yesterday", "column 'ts'"),
    ],
)
def test_malformed_columns_are_a_value_error_naming_the_column_and_a_row(warehouse_dsn, column, bad, message):
    rows = [list(cpu(T0 + timedelta(seconds=i), 1.0)) for i in range(3)]
    rows[2][["metric", "resource", "labels", "unit", "ts", "value"].index(column)] = bad
    with pytest.raises(ValueError, match=message):
        load_points(Warehouse(warehouse_dsn), frame_of(rows), source="host", start=T0, end=T0 + HOUR)


def test_missing_columns_and_a_mismatched_source_column_are_refused(warehouse_dsn):
    with pytest.raises(ValueError, match=r"missing column\(s\) \['unit'\]"):
        load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)]).drop(columns="unit"), source="host", start=T0, end=T0 + HOUR)
    with pytest.raises(ValueError, match="column 'source' must equal the load's source 'host'"):
        load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)], source="whatap"), source="host", start=T0, end=T0 + HOUR)


def test_one_series_with_two_units_is_refused(warehouse_dsn):
    rows = [cpu(T0, 1.0), ("host_cpu_percent", "web-1", {"host": "web-1"}, "ratio", T0 + timedelta(seconds=1), 0.1)]
    with pytest.raises(ValueError, match="column 'unit' differs between rows of the same series.*row 1"):
        load_points(Warehouse(warehouse_dsn), frame_of(rows), source="host", start=T0, end=T0 + HOUR)


def test_a_changed_unit_updates_the_series(warehouse_dsn, db):
    load_points(Warehouse(warehouse_dsn), frame_of([cpu(T0, 1.0)]), source="host", start=T0, end=T0 + HOUR)
    changed = frame_of([("host_cpu_percent", "web-1", {"host": "web-1"}, "ratio", T0, 0.01)])
    load_points(Warehouse(warehouse_dsn), changed, source="host", start=T0, end=T0 + HOUR)
    assert db.execute("SELECT unit FROM metrics.series").fetchall() == [("ratio",)]


def test_tricky_strings_are_stored_verbatim(warehouse_dsn, db):
    nasty = "x'); DROP TABLE metrics.points; -- \"ü\u2603" + "z" * 5000
    frame = frame_of([("host_" + nasty[:40], nasty, {nasty: nasty, "tenant": "t'1"}, "count", T0, 1.0)])
    load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    (metric, resource, labels, tenant), = db.execute("SELECT metric, resource, labels, tenant FROM metrics.series").fetchall()
    assert resource == nasty and labels == {nasty: nasty, "tenant": "t'1"} and tenant == "t'1"


def test_points_frame_builds_a_loadable_frame(warehouse_dsn, db):
    ts = pd.date_range(T0, periods=120, freq="30s")
    frame = points_frame([
        {"metric": "host_cpu_percent", "resource": h, "labels": {"host": h}, "unit": "percent", "ts": ts,
         "value": np.linspace(0, 100, len(ts))}
        for h in ("a", "b", "c")
    ])
    result = load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    assert (result.points, result.series) == (360, 3)
    assert db.execute("SELECT max(value) FROM metrics.points").fetchone()[0] == 100.0


def test_concurrent_loads_of_one_source_never_interleave(warehouse_dsn, db):
    frames = [
        frame_of([cpu(T0 + timedelta(seconds=i), float(k)) for i in range(500)]) for k in range(6)
    ]
    errors = []

    def run(frame):
        try:
            load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f,)) for f in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    values = {r[4] for r in window_rows(db, "host")}
    assert len(window_rows(db, "host")) == 500 and len(values) == 1


def test_series_scope_keeps_series_missing_from_the_fetch(warehouse_dsn, db):
    both = frame_of([cpu(T0, 1.0, host="a"), cpu(T0, 2.0, host="b")])
    load_points(Warehouse(warehouse_dsn), both, source="cloudwatch", start=T0, end=T0 + HOUR)
    only_a = frame_of([cpu(T0, 5.0, host="a")])
    result = load_points(Warehouse(warehouse_dsn), only_a, source="cloudwatch", start=T0, end=T0 + HOUR, scope="series")
    assert result.deleted == 0 and result.updated == 1
    assert sorted((r[1], r[4]) for r in window_rows(db, "cloudwatch")) == [("a", 5.0), ("b", 2.0)]
    load_points(Warehouse(warehouse_dsn), frame_of([]), source="cloudwatch", start=T0, end=T0 + HOUR, scope="series")
    assert len(window_rows(db, "cloudwatch")) == 2


# -- a window in several frames (issue 21: a fleet's hour, a group of hosts at a time) ---------------

def host_frames(value: float):
    return [frame_of([cpu(T0 + timedelta(seconds=s), value + s, host=f"web-{h}") for s in range(30)]) for h in range(3)]


@pytest.mark.parametrize("stored", [False, True], ids=["empty-window", "window-with-points"])
def test_frames_given_one_by_one_load_what_their_concatenation_loads(warehouse_dsn, db, stored):
    wh = Warehouse(warehouse_dsn)
    outcomes = []
    for split in (False, True):
        db.execute("TRUNCATE metrics.points")
        if stored:  # an earlier fetch: other values, and a host the new one no longer has
            load_points(wh, pd.concat(host_frames(0.0) + [frame_of([cpu(T0, 1.0, host="gone")])]),
                        source="host", start=T0, end=T0 + HOUR)
        frames = host_frames(100.0)
        result = load_points(wh, iter(frames) if split else pd.concat(frames), source="host", start=T0, end=T0 + HOUR)
        outcomes.append((window_rows(db, "host"), result.points, result.inserted, result.updated, result.deleted,
                         result.series, result.first_ts, result.last_ts))
    assert outcomes[0] == outcomes[1]
    assert outcomes[1][1:6] == ((90, 0, 90, 1, 3) if stored else (90, 90, 0, 0, 3))


def test_frames_sharing_a_series_are_refused_and_leave_the_window_as_it_was(warehouse_dsn, db):
    wh = Warehouse(warehouse_dsn)
    load_points(wh, host_frames(0.0)[0], source="host", start=T0, end=T0 + HOUR)
    before = window_rows(db, "host")
    with pytest.raises(ValueError, match="must not share a series"):
        load_points(wh, iter(host_frames(5.0)[:1] * 2), source="host", start=T0, end=T0 + HOUR)
    assert window_rows(db, "host") == before


def test_appending_rows_newer_than_every_stored_one_copies_and_an_overlap_merges(warehouse_dsn, db):
    wh = Warehouse(warehouse_dsn)
    first = frame_of([cpu(T0 + timedelta(seconds=s), 1.0) for s in range(10)])
    load_points(wh, first, source="host", start=T0, end=T0 + HOUR, scope="append")
    newer = load_points(wh, frame_of([cpu(T0 + timedelta(seconds=s), 2.0) for s in range(10, 20)]), source="host",
                        start=T0 + timedelta(seconds=10), end=T0 + HOUR, scope="append")
    overlap = load_points(wh, frame_of([cpu(T0 + timedelta(seconds=s), 3.0) for s in range(15, 25)]), source="host",
                          start=T0, end=T0 + HOUR, scope="append")
    assert (newer.inserted, newer.updated) == (10, 0) and (overlap.inserted, overlap.updated) == (5, 5)
    assert [r[4] for r in window_rows(db, "host")] == [1.0] * 10 + [2.0] * 5 + [3.0] * 10
