"""The compact landing format (format 2, issue 21): what it writes reads back exactly, a torn file loses
only its torn tail, old and new files mix, and reading a growing file piece by piece equals one read."""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timedelta, timezone

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.host import files, live
from metrics_pipeline.lib.host.agent import host_key
from metrics_pipeline.lib.host.batch import HostBatch
from metrics_pipeline.lib.host.compact import MAGIC, Encoder, MinuteFiles, encode_file
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.host_files import decode_ticks

H = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)
T0 = int(H.timestamp())

names = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12)
label_maps = st.dictionaries(names.filter(lambda k: k not in ("host", "tenant")), names, max_size=3)
samples = st.lists(st.tuples(st.sampled_from(["host_cpu_percent", "host_load1", "m.é", "x"]),
                             st.floats(allow_nan=False, allow_infinity=False),
                             st.sampled_from(["percent", "count", "bytes"]), label_maps), max_size=8)
# Tick times in milliseconds after the minute, increasing; one list of samples each.
ticks = st.lists(st.tuples(st.integers(0, 59_999), samples), min_size=1, max_size=12).map(
    lambda ts: sorted(ts, key=lambda t: t[0]))
# For the warehouse: a metric has one unit (a series with two is refused by the loader, whatever the format).
UNITS = {"host_cpu_percent": "percent", "host_load1": "count", "m.é": "bytes", "x": "count"}
db_ticks = st.lists(st.tuples(st.integers(0, 59_999), st.lists(
    st.tuples(st.sampled_from(sorted(UNITS)), st.floats(allow_nan=False, allow_infinity=False), label_maps).map(
        lambda s: (s[0], s[1], UNITS[s[0]], s[2])), max_size=6)), min_size=1, max_size=8).map(
    lambda ts: sorted(ts, key=lambda t: t[0]))


def format1(host: str, ticks_: list, tenant: str | None = None) -> bytes:
    """What agents wrote before format 2: one JSON object per tick."""
    out = []
    for ms, tick_samples in ticks_:
        tick = {"ts": round(T0 + ms / 1000, 3), "host": host, **({"tenant": tenant} if tenant else {}),
                "samples": [list(s) for s in tick_samples]}
        out.append(json.dumps(tick, separators=(",", ":")).encode() + b"\n")
    return b"".join(out)


def format2(host: str, ticks_: list, tenant: str | None = None) -> bytes:
    return encode_file(host, T0, [(T0 + ms / 1000, tick_samples) for ms, tick_samples in ticks_], tenant)


def rows(batch: HostBatch) -> list[tuple]:
    """Every sample of a batch, comparable: (resource, metric, unit, labels, microseconds, value)."""
    series, us, values = batch._columns()
    return sorted((batch._s_host[s], batch._s_metric[s], batch._s_unit[s], batch._s_labels[s], int(t), float(v))
                  for s, t, v in zip(series, us, values))


def read(data: bytes, **kwargs) -> HostBatch:
    batch = HostBatch()
    batch.read(data, **kwargs)
    return batch


@settings(max_examples=150, deadline=None)
@given(ticks=ticks, tenant=st.none() | st.just("acme"))
def test_format_2_reads_back_every_sample_it_was_given_and_as_format_1_does(ticks, tenant):
    new, old = read(format2("web-1", ticks, tenant)), read(format1("web-1", ticks, tenant))
    assert new.problems == old.problems == {}
    assert new.lines == old.lines == len(ticks)
    expected = sorted(
        ("web-1", m, u, json.dumps({**labels, "host": "web-1", **({"tenant": tenant} if tenant else {})},
                                    sort_keys=True, separators=(",", ":"), ensure_ascii=False),
         (T0 * 1000 + ms) * 1000, v)
        for ms, tick_samples in ticks for m, v, u, labels in tick_samples)
    assert rows(new) == rows(old) == expected


def test_format_2_is_a_few_bytes_a_sample():
    tick = [("host_cpu_percent", 12.345, "percent", {})] + [
        ("host_cpu_state_percent", float(i) * 1.111, "percent", {"state": f"s{i}"}) for i in range(8)]
    data = format2("web-1", [(s * 1000, tick) for s in range(60)])
    assert data.startswith(MAGIC) and len(data) / (60 * len(tick)) < 10
    assert len(format1("web-1", [(s * 1000, tick) for s in range(60)])) / len(data) > 5


@settings(max_examples=60, deadline=None)
@given(ticks=ticks, data=st.data())
def test_a_file_torn_at_any_byte_loses_only_its_incomplete_last_line(ticks, data):
    whole = format2("web-1", ticks)
    cut = data.draw(st.integers(0, len(whole)))
    torn = whole[:cut]
    batch = read(torn)
    complete = decode_ticks(torn)  # the reference reader: every tick whose line is complete
    assert batch.lines == len(complete)
    expected = read(format1("web-1", [(round((t["ts"] - T0) * 1000), [tuple(s) for s in t["samples"]])
                                      for t in complete]))
    assert rows(batch) == rows(expected)
    assert batch.problems == ({} if cut == 0 or torn.endswith(b"\n") else {"partial_lines": 1})


@settings(max_examples=80, deadline=None)
@given(ticks=ticks, data=st.data(), fmt=st.sampled_from([format1, format2]))
def test_reading_a_growing_file_piece_by_piece_equals_one_read_of_the_whole(ticks, data, fmt):
    """What the live path does: at any moment, read the complete lines after the last offset."""
    whole = fmt("web-1", ticks)
    moments = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    pieces, offset = HostBatch(), 0
    for moment in [*moments, len(whole)]:
        grown = whole[:moment]
        complete = grown.rfind(b"\n") + 1
        if complete > offset:
            pieces.read(grown, start=offset, stop=complete)
            offset = complete
    once = read(whole)
    assert rows(pieces) == rows(once) and pieces.lines == once.lines and pieces.problems == once.problems == {}


def test_a_bad_definition_or_value_is_counted_and_the_rest_of_the_file_loads():
    head = Encoder("web-1", T0).header()
    data = head + b"".join([
        b'["s",0,"host_load1","count",{}]\n',
        b'["s",1,"bad\\u0000metric","count",{}]\n',          # a name PostgreSQL cannot store
        b'["l",0,[0,1]]\n',
        b'[0,1000,1.5,2.5]\n',
        b'[0,2000,true,2.5]\n',                              # not a number
        b'[7,3000,1.0]\n',                                   # a layout never defined
        b'[0,4000,1.0]\n',                                   # the wrong number of values
        b'["l",0,[0]]\n',                                    # defined twice
        b'not json\n',
        b'[0,5000,3.5,4.5]\n',
    ])
    batch = read(data)
    assert batch.lines == 3
    assert batch.problems == {"invalid_samples": 4, "corrupt_lines": 4}
    assert [v for *_, v in rows(batch)] == [1.5, 3.5]


def test_a_header_that_is_not_valid_makes_every_line_of_the_file_corrupt():
    data = format2("web-1", [(0, [("host_load1", 1.0, "count", {})])]).replace(b'"host":"web-1"', b'"host":""')
    batch = read(data)
    assert batch.lines == 0 and batch.problems == {"corrupt_lines": 4}


# -- the agent's writer ----------------------------------------------------------------------

def test_the_writer_never_appends_to_a_file_it_did_not_create(tmp_path):
    """A predecessor with the same name (pid reuse in a container) left a torn tail: a new file is started."""
    ts = T0 + 5.0
    torn = tmp_path / host_key("web-1", ts, "p1")
    torn.parent.mkdir(parents=True)
    torn.write_bytes(format2("web-1", [(1000, [("host_load1", 1.0, "count", {})])])[:-7])
    before = torn.read_bytes()
    writer = MinuteFiles(tmp_path, host="web-1", writer="p1", fsync=False)
    writer.append(ts, [("host_load1", 2.0, "count", {})])
    writer.close()
    assert torn.read_bytes() == before
    new = tmp_path / host_key("web-1", ts, "p1.1")
    assert [t["samples"][0][1] for t in decode_ticks(new.read_bytes())] == [2.0]


def test_a_failed_write_closes_the_file_and_the_next_tick_starts_a_new_one(tmp_path, monkeypatch):
    writer = MinuteFiles(tmp_path, host="web-1", writer="p1", fsync=False)
    writer.append(T0 + 1.0, [("host_load1", 1.0, "count", {})])
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))  # a short write
    with pytest.raises(OSError, match="short write"):
        writer.append(T0 + 2.0, [("host_load1", 2.0, "count", {})])
    monkeypatch.setattr(os, "write", real_write)
    writer.append(T0 + 3.0, [("host_load1", 3.0, "count", {})])
    writer.close()
    first = (tmp_path / host_key("web-1", T0, "p1")).read_bytes()
    second = (tmp_path / host_key("web-1", T0, "p1.1")).read_bytes()
    assert [t["ts"] for t in decode_ticks(first)] == [T0 + 1.0] and not first.endswith(b"\n")
    assert [t["ts"] for t in decode_ticks(second)] == [T0 + 3.0]
    batch = read(first)
    assert batch.problems == {"partial_lines": 1} and batch.lines == 1


# -- in the warehouse --------------------------------------------------------------------------

def _points(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT s.resource, s.metric, s.labels::text, p.ts, p.value FROM metrics.points p "
            "JOIN metrics.series s USING (series_id) ORDER BY 1, 2, 3, 4").fetchall()


def _reset(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.points, metrics.series, metrics.series_intervals, metrics.live_offsets, "
                     "metrics.landing_files CASCADE")


host_hours = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), db_ticks), min_size=1, max_size=5,
                      unique_by=lambda t: t[:2])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=host_hours, data=st.data())
def test_a_zone_mixing_old_and_new_files_loads_the_points_of_the_same_zone_all_old(warehouse_dsn, tmp_path_factory,
                                                                                   minutes, data):
    wh = Warehouse(warehouse_dsn)
    stored = []
    for mix in (False, True):
        _reset(warehouse_dsn)
        zone = LocalLanding(tmp_path_factory.mktemp("zone"))
        for host, minute, minute_ticks in minutes:
            name = f"web-{host}"
            shifted = [(ms + minute * 60_000, s) for ms, s in minute_ticks]
            new = mix and data.draw(st.booleans(), label=f"{name} minute {minute} in format 2")
            key = host_key(name, T0 + minute * 60, "p1" if new else None)
            zone.write(key, (format2 if new else format1)(name, shifted))
        files.load_window(wh, zone, H, H + timedelta(hours=1))
        stored.append(_points(warehouse_dsn))
    assert stored[0] == stored[1]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cuts=st.lists(st.integers(1, 179), max_size=5, unique=True))
def test_live_loads_of_agent_files_then_the_closed_hour_run_give_the_points_and_metadata_of_one_load(
        warehouse_dsn, tmp_path_factory, cuts):
    """Two hosts written tick by tick by the agent's writer; live loads at random moments, then the
    closed-hour run (which reads only what the live loads did not): the points, and the metadata,
    are those of one load of the finished files."""
    root = tmp_path_factory.mktemp("landing")
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(root)
    _reset(warehouse_dsn)
    writers = {h: MinuteFiles(root, host=h, writer="p9", fsync=False) for h in ("web-1", "web-2")}
    for second in range(180):
        for host, writer in writers.items():
            writer.append(T0 + second, [("host_cpu_percent", float(second % 97), "percent", {}),
                                        ("host_load1", 0.5, "count", {})]
                          + ([("host_filesystem_used_percent", 40.0, "percent", {"mount": "/"})] if second % 30 == 0 else []))
        if second in cuts:
            live.load_new(wh, zone, H + timedelta(seconds=second + 1))
    for writer in writers.values():
        writer.close()
    closed = files.load_window(wh, zone, H, H + timedelta(hours=1))
    assert closed.mode == ("tail" if cuts else "replace")
    after_live = _points(warehouse_dsn)
    _reset(warehouse_dsn)
    once = files.load_window(wh, zone, H, H + timedelta(hours=1))
    assert once.mode == "replace" and after_live == _points(warehouse_dsn)
    meta, expected = closed.as_metadata(), once.as_metadata()
    for key in ("points", "dagster/row_count", "lines", "files", "hosts", "partial_lines", "corrupt_lines"):
        assert meta[key] == expected[key], key
    assert math.isclose(len(after_live), 2 * (180 * 2 + 6))


def test_a_file_rewritten_after_a_live_load_makes_the_closed_hour_run_replace_the_window(warehouse_dsn, tmp_path):
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(tmp_path)
    key = host_key("web-1", T0, "p1")
    zone.write(key, format2("web-1", [(s * 1000, [("host_load1", 1.0, "count", {})]) for s in range(10)]))
    live.load_new(wh, zone, H + timedelta(seconds=11))
    zone.write(key, format2("web-1", [(s * 1000, [("host_load1", 2.0, "count", {})]) for s in range(5)]))
    closed = files.load_window(wh, zone, H, H + timedelta(hours=1))
    assert closed.mode == "replace" and [p[-1] for p in _points(warehouse_dsn)] == [2.0] * 5
    # A second run of an hour whose offsets a closed-hour run already used replaces it too.
    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.points")
    assert files.load_window(wh, zone, H, H + timedelta(hours=1)).mode == "replace"
    assert len(_points(warehouse_dsn)) == 5


@pytest.mark.parametrize("claimed", ["web-4", "web-3"], ids=["own-host", "another-directorys-host"])
def test_the_closed_hour_run_loads_a_group_of_hosts_at_a_time_what_one_frame_would(warehouse_dsn, tmp_path, monkeypatch,
                                                                                   claimed):
    """Issue 21: the window is read and written a group of host directories at a time (bounded memory,
    the next group read while the database writes), with the result of one frame: also when the window
    held other points before (staged, then merged), and when two directories hold the same host's
    samples (then it is one frame after all)."""
    wh, zone = Warehouse(warehouse_dsn), LocalLanding(tmp_path)

    def write(value: float) -> None:
        for i in range(5):
            name = f"web-{i}"
            ticks_ = [(s * 1000, [("host_load1", value + s, "count", {}), ("host_cpu_percent", 1.0, "percent", {})])
                      for s in range(30)]
            zone.write(host_key(name, T0 + 60 * i, "p1" if i % 2 else None),
                       (format2 if i % 2 else format1)(claimed if i == 4 else name, ticks_))

    outcomes = []
    for group_bytes, value in ((1, 1.0), (10**9, 1.0), (1, 100.0), (10**9, 100.0)):
        monkeypatch.setattr(files, "GROUP_BYTES", group_bytes)
        write(value)
        loaded = files.load_window(wh, zone, H, H + timedelta(hours=1))
        meta = loaded.as_metadata()
        outcomes.append((_points(warehouse_dsn), [meta[k] for k in ("points", "lines", "hosts", "files", "series")]))
    assert outcomes[0] == outcomes[1] and outcomes[2] == outcomes[3]
    # 5 files of 30 ticks, 2 samples each (when web-3's are in two directories at the same times: 60 duplicates).
    assert outcomes[0][1] == ([300, 150, 5, 5, 10] if claimed == "web-4" else [240, 150, 4, 5, 8])
    assert {p[-1] for p in outcomes[2][0] if p[1] == "host_load1"} == {100.0 + s for s in range(30)}
