"""Incremental loads of pushed items (issue 18, SPEC §12 "the hour in progress reads only what is
new"): whatever order files arrive, grow, tear and get rewritten in, and whatever runs happen in
between (incremental, full, of this hour or of an older one), the warehouse ends exactly as one full
load of the final files leaves it: points, series, events, quarantine, the landing index and the
hours' records, counts included (read = loaded + quarantined). And the ordinary cases take the
incremental path; the doubtful ones reload the hour whole."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, event, example, given, note, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom import load as custom_load
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.files import encode_batch, file_key
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline_tests.support.faults.dump import dump_window

H = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)  # the hour in progress
OLD = H - timedelta(hours=26)  # an older hour late items still reach (inside the 6-day back window)
HOURS = (H, OLD)
TABLES = ("points", "events", "quarantine", "landing_files")


class Clock:
    def __init__(self, now: datetime):
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now

    @property
    def dt(self) -> datetime:
        return datetime.fromtimestamp(self.now, timezone.utc)


def load(kind: str, dsn: str, landing: Path, hour: datetime, now: datetime, incremental: bool):
    loader = custom_load.load_measures if kind == "measures" else custom_load.load_events
    return loader(Warehouse(dsn), LocalLanding(landing), hour, hour + timedelta(hours=1), now=now,
                  incremental=incremental)


def dump(dsn: str) -> dict[str, bytes]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = {t: dump_window(conn, t) for t in TABLES}
        # the series with points (a series stays registered when the data that created it vanishes)
        out["series"] = conn.execute(
            """SELECT source, metric, resource, labels::text, unit FROM metrics.series s
               WHERE EXISTS (SELECT 1 FROM metrics.points p WHERE p.series_id = s.series_id) ORDER BY 1, 2, 3, 4""").fetchall()
        out["custom_load_hours"] = conn.execute(
            """SELECT kind, hour, rule, last_received_at, last_key, last_position, items_read, loaded, duplicates,
                      quarantined, corrupt_lines, refused_files, rows, tenants, reasons
               FROM metrics.custom_load_hours ORDER BY 1, 2""").fetchall()
        out["custom_load_files"] = conn.execute("SELECT * FROM metrics.custom_load_files ORDER BY 1, 2, 3").fetchall()
    for kind, _, _, _, _, _, read, loaded, _, quarantined, *_ in out["custom_load_hours"]:
        assert read == loaded + quarantined, kind
    return out


# -- the property ----------------------------------------------------------------------------------

TENANTS = st.sampled_from(["acme", "boreal"])
#: few identities, so that writes repeat each other (retries, overwrites) across files;
#: (name, metadata, hour, second, value or text, what is wrong with it)
MEASURE = st.tuples(st.sampled_from(["orders", "queue_depth"]), st.sampled_from([{}, {"shop": "eu"}, {"host": "web-1"}]),
                    st.sampled_from(HOURS), st.integers(0, 2), st.integers(-2, 2),
                    st.sampled_from([None] * 6 + ["tenant_key", "nan"]))
EVENT = st.tuples(st.sampled_from(["deploy", "note"]), st.sampled_from([{}, {"app": "shop"}]), st.sampled_from(HOURS),
                  st.integers(0, 2), st.sampled_from([None, "v1", "v2"]), st.sampled_from([None] * 6 + ["tenant_key"]))
#: a batch through API process 0 or 1, the clock moved first by `advance` s (-0.3: stamped before
#: the previous write, durable after it: another process's batch in flight)
WRITE = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 1), st.just("measures"), TENANTS, st.lists(MEASURE, min_size=1, max_size=4),
              st.sampled_from([0.001, 0.5, 3, 20, -0.3])),
    st.tuples(st.just("write"), st.integers(0, 1), st.just("events"), TENANTS, st.lists(EVENT, min_size=1, max_size=3),
              st.sampled_from([0.001, 0.5, 3, 20, -0.3])))
#: the last batch sent again by its client (same identities; maybe another value: an overwrite),
#: through either process, maybe stamped before writes already loaded (it was in flight)
RETRY = st.tuples(st.just("retry"), st.integers(0, 1), st.booleans(), st.sampled_from([0.2, 2, -0.3, -0.3]))
RUN = st.tuples(st.just("run"), st.sampled_from(["measures", "events"]), st.sampled_from(HOURS), st.booleans())
#: step kinds, weighted by repetition
STEPS = {
    "write": WRITE, "retry": RETRY, "run": RUN,
    "tick": st.just(("tick",)),  # the sensor: every kind and hour, incrementally
    "grow": st.tuples(st.just("grow"), st.integers(1, 400)),  # the hand-written file grows by n bytes (torn tails)
    "garbage": st.just(("garbage",)),  # a corrupt line and a commit disowning it, in the hand-written file
    "rewrite": st.just(("rewrite",)),  # the hand-written file loses its first batch (rewritten, not grown)
    "minute": st.just(("minute",)),
}
STEP = st.sampled_from(["write"] * 4 + ["retry"] * 3 + ["tick"] * 3 + ["run", "grow", "garbage", "rewrite", "minute"]
                       ).flatmap(STEPS.__getitem__)


def _items(kind: str, specs: list[tuple], value_shift: float = 0.0) -> list:
    out = []
    for name, meta, hour, second, value, bad in specs:
        meta = {**meta, "tenant": "x"} if bad == "tenant_key" else meta
        if kind == "measures":
            out.append(Measure(name, float("nan") if bad == "nan" else value + value_shift,
                               hour + timedelta(minutes=5, seconds=second), meta, "count"))
        else:
            out.append(Event(name, hour + timedelta(minutes=6, seconds=second), meta, value))
    return out


class HandWritten:
    """A landing file written by hand, byte by byte: batches that arrive in pieces (torn tails)."""

    def __init__(self, landing: Path, received: datetime):
        self.key = file_key("measures", "acme", received.timestamp(), "hand-1-abc", 0)
        self.path = landing / self.key
        batches = [encode_batch("acme", "measures", [Measure("orders", float(n), H + timedelta(minutes=7, seconds=n % 2),
                                                             {"shop": "eu"}, "count")], received + timedelta(seconds=n))
                   for n in range(4)]
        self.pending = b"".join(batches)

    def grow(self, n: int) -> None:
        chunk, self.pending = self.pending[:n], self.pending[n:]
        self._append(chunk)

    def garbage(self) -> None:
        self._append(b'not json\n{"committed":1}\n')

    def rewrite(self) -> None:
        if self.path.exists():
            data = self.path.read_bytes()
            cut = data.find(b'{"committed":')
            if cut >= 0:
                self.path.write_bytes(data[data.index(b"\n", cut) + 1:])
                st_ = self.path.stat()
                os.utime(self.path, ns=(st_.st_atime_ns, st_.st_mtime_ns + 1_000_000))

    def _append(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            fh.write(data)


#: CUSTOM_LOAD_EXAMPLES=500 for a longer search (about 10 minutes)
@settings(max_examples=int(os.environ.get("CUSTOM_LOAD_EXAMPLES", "30")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEP, min_size=3, max_size=24))
@example(steps=[  # an overwrite after a run, loaded incrementally
    ("write", 0, "measures", "acme", [("orders", {}, H, 0, 1, None)], 1), ("write", 1, "measures", "acme",
    [("orders", {}, H, 1, 1, None)], 1), ("tick",), ("retry", 0, True, 2)])
@example(steps=[  # a retry in flight at a run (stamped before the latest write loaded) repeats a loaded write
    ("write", 0, "measures", "acme", [("orders", {}, H, 0, 1, None)], 1), ("write", 1, "measures", "acme",
    [("orders", {}, H, 1, 1, None)], 1), ("run", "measures", H, True), ("retry", 0, True, -0.3)])
@example(steps=[  # the same for an event, and a late item for an older hour loaded incrementally
    ("write", 0, "events", "acme", [("deploy", {}, H, 0, "v1", None), ("deploy", {}, OLD, 0, "v1", None)], 1),
    ("run", "events", H, True), ("run", "events", OLD, False), ("write", 1, "events", "boreal",
    [("note", {}, OLD, 1, None, None)], 1), ("run", "events", OLD, True), ("retry", 0, False, -0.3)])
@example(steps=[  # a torn batch completed later, and corrupt lines arriving in two runs
    ("grow", 150), ("run", "measures", H, True), ("grow", 100), ("garbage",), ("run", "measures", H, True),
    ("garbage",), ("grow", 400)])
@example(steps=[("grow", 400), ("run", "measures", H, True), ("rewrite",)])  # rewritten after a run
@example(steps=[  # unstorable items in a file that grows between runs (positions continue), the grown
    # file indexed by the older hour's run before this hour's run reads it from where it stopped
    ("write", 0, "measures", "acme", [("orders", {}, H, 0, 1, "tenant_key"), ("orders", {}, OLD, 1, 1, None)], 1),
    ("tick",), ("write", 0, "measures", "acme", [("queue_depth", {}, H, 0, 1, None),
                                                 ("orders", {}, H, 2, 1, "tenant_key")], 1),
    ("run", "measures", OLD, True), ("run", "measures", H, True)])
def test_any_arrivals_and_run_schedule_end_as_one_full_load_of_the_final_files(pg_server, migrated_template,
                                                                              tmp_path_factory, steps):
    tmp = tmp_path_factory.mktemp("incremental")
    landing = tmp / "landing"
    clock = Clock(H + timedelta(minutes=20))
    config = ApiConfig(landing=str(landing), spool_dir=str(tmp / "spool"))
    hand = HandWritten(landing, H + timedelta(minutes=19))
    ours, reference = (pg_server.create_database(template=migrated_template) for _ in range(2))
    modes = []
    last = None
    try:
        dsn = pg_server.dsn(ours)
        with PushWriter(config, clock=clock) as first, PushWriter(config, clock=clock) as second:
            for step in steps:
                if step[0] == "write":
                    _, writer, kind, tenant, specs, advance = step
                    clock.now += advance
                    last = (tenant, kind, specs)
                    (first, second)[writer].write(tenant, kind, _items(kind, specs))
                elif step[0] == "retry":
                    _, writer, other_value, advance = step
                    if last is not None:
                        clock.now += advance
                        tenant, kind, specs = last
                        (first, second)[writer].write(tenant, kind, _items(kind, specs, 1.0 if other_value else 0.0))
                elif step[0] in ("run", "tick"):
                    runs = [step[1:]] if step[0] == "run" else [(k, h, True) for k in ("measures", "events") for h in HOURS]
                    for kind, hour, incremental in runs:
                        result = load(kind, dsn, landing, hour, clock.dt + timedelta(seconds=1), incremental)
                        modes.append((kind, hour == H, incremental, result.mode, result.full_because))
                        if incremental:
                            event(f"incremental run: {result.mode} {' '.join(result.full_because.split(' ')[-4:])}")
                        assert result.read == result.loaded + result.quarantined
                elif step[0] == "grow":
                    hand.grow(step[1])
                elif step[0] == "garbage":
                    hand.garbage()
                elif step[0] == "rewrite":
                    hand.rewrite()
                else:
                    clock.now += 60
            note(f"runs: {modes}")
            final = {}
            for kind in ("measures", "events"):
                for hour in HOURS:  # the sensor's last runs, after the last arrival
                    result = load(kind, dsn, landing, hour, clock.dt + timedelta(seconds=1), True)
                    final[(kind, hour)] = result
                    event(f"last run: {result.mode} {' '.join(result.full_because.split(' ')[-4:])}")
        expected = {}
        for kind in ("measures", "events"):
            for hour in HOURS:
                expected[(kind, hour)] = load(kind, pg_server.dsn(reference), landing, hour,
                                              clock.dt + timedelta(seconds=1), False)
        got, want = dump(dsn), dump(pg_server.dsn(reference))
        for table in want:
            assert got[table] == want[table], table
        fields = ("files", "read", "loaded", "duplicates", "quarantined", "corrupt_lines", "torn_files",
                  "refused_files", "rows", "tenants", "reasons")
        for key, result in final.items():
            assert {f: getattr(result, f) for f in fields} == {f: getattr(expected[key], f) for f in fields}, key
    finally:
        pg_server.drop_database(ours)
        pg_server.drop_database(reference)


# -- the paths taken -------------------------------------------------------------------------------

@pytest.fixture
def pushed(tmp_path):
    clock = Clock(H + timedelta(minutes=5))
    landing = tmp_path / "landing"
    with PushWriter(ApiConfig(landing=str(landing), spool_dir=str(tmp_path / "spool")), clock=clock) as writer:
        yield landing, clock, writer


def test_a_run_of_the_hour_in_progress_reads_only_the_new_lines_and_files(warehouse_dsn, pushed):
    landing, clock, writer = pushed
    batch = lambda n: [Measure("orders", float(i), H + timedelta(minutes=4, microseconds=n * 100 + i), {"shop": "eu"})
                       for i in range(10)]  # noqa: E731
    writer.write("acme", "measures", batch(0))
    first = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (first.mode, first.full_because) == ("full", "the hour has no record of a load (never loaded, or too old)")
    clock.now += 20
    writer.write("acme", "measures", batch(1))  # the same file grows
    clock.now += 60
    writer.write("acme", "measures", batch(2))  # a new file
    second = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (second.mode, second.new_items, second.new_files) == ("incremental", 20, 2)
    assert (second.read, second.loaded, second.rows, second.files) == (30, 30, 30, 2)
    third = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (third.mode, third.new_items, third.new_files, third.rows) == ("incremental", 0, 0, 30)


def test_a_retry_in_flight_at_the_previous_run_repeating_a_loaded_write_reloads_the_hour(warehouse_dsn, pushed):
    landing, clock, writer = pushed
    item = [Measure("orders", 1.0, H + timedelta(minutes=4), {"shop": "eu"})]
    writer.write("acme", "measures", item)
    clock.now += 1
    writer.write("acme", "measures", [Measure("queue_depth", 1.0, H + timedelta(minutes=4))])
    load("measures", warehouse_dsn, landing, H, clock.dt, False)
    clock.now -= 0.5  # stamped before the latest write loaded, durable only after the run
    writer.write("acme", "measures", [Measure("orders", 2.0, H + timedelta(minutes=4), {"shop": "eu"})])
    result = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (result.mode, result.full_because) == (
        "full", "a new write ordered before the latest loaded one repeats a loaded identity")
    assert result.rows == 2 and result.duplicates == 1
    with psycopg.connect(warehouse_dsn) as conn:  # the later receipt won, as a full reload says
        assert conn.execute("SELECT value FROM metrics.points p JOIN metrics.series s USING (series_id) "
                            "WHERE s.metric = 'orders'").fetchone()[0] == 2.0


def test_a_late_write_of_a_new_identity_still_loads_incrementally(warehouse_dsn, pushed):
    landing, clock, writer = pushed
    writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=4))])
    load("measures", warehouse_dsn, landing, H, clock.dt, False)
    clock.now -= 0.5
    writer.write("boreal", "measures", [Measure("orders", 1.0, H + timedelta(minutes=4))])
    result = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (result.mode, result.rows, result.tenants) == ("incremental", 2, 2)


@pytest.mark.parametrize("change", ["deleted", "rewritten", "truncated"])
def test_a_loaded_file_gone_or_changed_reloads_the_hour(warehouse_dsn, pushed, change):
    landing, clock, writer = pushed
    key = writer.write("acme", "events", [Event("deploy", H + timedelta(minutes=1), {}, "v1"),
                                          Event("deploy", H + timedelta(minutes=2), {}, "v2")])
    writer.close()
    load("events", warehouse_dsn, landing, H, clock.dt, True)
    path = landing / key
    lines = path.read_bytes().splitlines(keepends=True)
    if change == "deleted":
        path.unlink()
    elif change == "rewritten":  # same length, other text
        path.write_bytes(b"".join(lines).replace(b'"v2"', b'"v3"'))
    else:
        path.write_bytes(lines[0])  # a torn tail only: what was loaded is no longer there
    clock.now += 30
    result = load("events", warehouse_dsn, landing, H, clock.dt, True)
    assert result.mode == "full" and key in result.full_because
    with psycopg.connect(warehouse_dsn) as conn:
        texts = [t for (t,) in conn.execute("SELECT text FROM metrics.events ORDER BY ts").fetchall()]
    # rows of a file the landing zone no longer has are kept (landing retention), as a full reload keeps them
    assert texts == {"deleted": ["v1", "v2"], "rewritten": ["v1", "v3"], "truncated": []}[change]


def test_runs_that_are_not_the_sensors_or_not_one_hour_replace_the_window(warehouse_dsn, pushed):
    landing, clock, writer = pushed
    writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=4))])
    load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert load("measures", warehouse_dsn, landing, H, clock.dt, False).full_because == "asked for"
    two = custom_load.load_measures(Warehouse(warehouse_dsn), LocalLanding(landing), H, H + timedelta(hours=2),
                                    now=clock.dt, incremental=True)
    assert (two.mode, two.full_because, two.rows) == ("full", "the window is not one hour", 1)


def test_an_incremental_load_is_all_or_nothing(warehouse_dsn, pushed, monkeypatch):
    landing, clock, writer = pushed
    writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=4))])
    load("measures", warehouse_dsn, landing, H, clock.dt, True)
    before = dump(warehouse_dsn)
    clock.now += 30
    writer.write("acme", "measures", [Measure("orders", 2.0, H + timedelta(minutes=5)),
                                      Measure("orders", 3.0, H + timedelta(minutes=5), {"tenant": "x"})])

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(custom_load.loaded, "save_incremental", crash)  # the last write of the transaction
    with pytest.raises(RuntimeError, match="killed"):
        load("measures", warehouse_dsn, landing, H, clock.dt, True)
    after = dump(warehouse_dsn)
    assert {t: after[t] for t in after if t != "landing_files"} == {t: before[t] for t in before if t != "landing_files"}
    monkeypatch.undo()
    result = load("measures", warehouse_dsn, landing, H, clock.dt, True)
    assert (result.mode, result.read, result.loaded, result.quarantined, result.rows) == ("incremental", 3, 2, 1, 2)
    assert json.loads(json.dumps(dict(result.reasons))) == {"metadata": 1}


def test_a_file_the_zone_refuses_is_counted_once_and_one_it_starts_refusing_reloads_the_hour(warehouse_dsn, pushed):
    landing, clock, writer = pushed
    zone = LocalLanding(landing, max_object_bytes=600)  # a file past it is refused, as one over 256 MB is
    small = writer.write("acme", "measures", [Measure("orders", 1.0, H + timedelta(minutes=4))])
    warehouse = Warehouse(warehouse_dsn)
    custom_load.load_measures(warehouse, zone, H, H + timedelta(hours=1), now=clock.dt, incremental=True)
    clock.now += 10
    big = writer.write("boreal", "measures", [Measure("orders", float(i), H + timedelta(minutes=5, seconds=i))
                                              for i in range(10)])
    runs = [custom_load.load_measures(warehouse, zone, H, H + timedelta(hours=1), now=clock.dt, incremental=True)
            for _ in range(2)]
    assert [(r.mode, r.new_items, r.read, r.quarantined, r.refused_files, r.rows) for r in runs] == [
        ("incremental", 1, 2, 1, 1, 1), ("incremental", 0, 2, 1, 1, 1)]
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT source_file, position FROM metrics.quarantine").fetchall() == [(big, -1)]
    clock.now += 10
    assert writer.write("acme", "measures", [Measure("orders", float(i), H + timedelta(minutes=6, seconds=i))
                                             for i in range(10)]) == small  # the loaded file grows past the limit
    result = custom_load.load_measures(warehouse, zone, H, H + timedelta(hours=1), now=clock.dt, incremental=True)
    assert result.mode == "full" and result.full_because.startswith(f"{small} was loaded and the landing zone refuses")
    assert (result.read, result.quarantined, result.refused_files, result.rows) == (2, 2, 2, 0)
