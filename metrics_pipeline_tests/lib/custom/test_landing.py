"""The push API's landing writer and reader (SPEC §12): keys that carry tenant, minute and writer,
the line format, torn tails, concurrent writers that lose nothing and interleave nothing, and
(property) any valid batches written come back exactly."""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom.config import METADATA_KEY_PATTERN, NAME_PATTERN, ApiConfig
from metrics_pipeline.lib.custom.landing import (
    CorruptLanding,
    PushWriter,
    encode_batch,
    file_key,
    hour_of_key,
    hour_prefix,
    read_items,
    read_landing,
    tenant_dir,
)
from metrics_pipeline.lib.custom.validate import Event, Measure
from metrics_pipeline.lib.landing import LocalLanding, check_key

T0 = datetime(2026, 1, 5, 13, 7, 30, 123_456, tzinfo=timezone.utc)
KEY = re.compile(r"custom/(measures|events)/(\d{4}-\d\d-\d\d)/(\d\d)/([^/]+)/\4-(\d{8}T\d{4})-(.+)-(\d{6})\.jsonl")


def measure(i: int, **metadata: str) -> Measure:
    return Measure(f"orders_{i % 3}", i + 0.5, T0 - timedelta(microseconds=i), metadata, "count")


class Clock:
    def __init__(self, now: datetime = T0):
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now


def files(root: Path) -> list[Path]:
    return sorted((root / "custom").rglob("*.jsonl"), key=lambda p: p.name)


def read_all(root: Path) -> list[dict]:
    items = []
    for path in files(root):
        got, torn = read_items(path.read_bytes())
        assert not torn, path
        items += got
    return items


# -- keys -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("tenant", "directory"), [
    ("acme", "acme"),
    ("boreal-logistique.eu_1", "boreal-logistique.eu_1"),
    ("acme corp", "acme%20corp"),
    ("a/b", "a%2Fb"),
    ("a%2Fb", "a%252Fb"),
    ("é", "%C3%A9"),
    ("..", "%2E."),
    (".tmp-x", "%2Etmp-x"),
    ("a\\b", "a%5Cb"),
])
def test_a_tenant_directory_keeps_safe_characters_and_escapes_the_rest(tenant, directory):
    assert tenant_dir(tenant) == directory
    check_key(f"custom/measures/2026-01-05/13/{directory}/x.jsonl")


def test_tenant_directories_never_collide_and_stay_short():
    tenants = ["a/b", "a_b", "a%2Fb", "a b", "a+b", "A/B", ".a", "%2Ea", "x" * 200, "x" * 199 + "y",
               "é" * 200, "é" * 199 + "è", "x" * 100, "x" * 101]
    directories = [tenant_dir(t) for t in tenants]
    assert len(set(directories)) == len(tenants)
    assert all(len(d) <= 100 and re.fullmatch(r"[A-Za-z0-9._%~-]+", d) for d in directories)


def test_the_key_carries_kind_receipt_hour_tenant_minute_writer_and_sequence():
    key = file_key("events", "acme corp", T0.timestamp(), "web-1-4242-a1b2c3", 7)
    assert key == ("custom/events/2026-01-05/13/acme%20corp/acme%20corp-20260105T1307-web-1-4242-a1b2c3-000007.jsonl")
    assert hour_of_key(key) == datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
    assert key.startswith(hour_prefix("events", T0))
    assert hour_of_key("host/2026-01-05/13/h/h-20260105T1307.jsonl") is None


# -- the writer -----------------------------------------------------------------------------------

def test_a_batch_is_one_json_line_per_item_and_a_commit_line(config):
    clock = Clock()
    with PushWriter(config, clock=clock) as writer:
        key = writer.write("acme", "measures", [measure(0, host="web-1"), measure(1)])
        event_key = writer.write("acme", "events", [Event("deploy", T0, {"version": "2.3"}, "rolled out ✓"),
                                                    Event("note", T0, {}, None)])
    match = KEY.fullmatch(key)
    assert match and match.group(1, 2, 3, 4, 5) == ("measures", "2026-01-05", "13", "acme", "20260105T1307")
    assert match.group(6) == writer.writer_id and writer.writer_id.split("-")[-2] == str(os.getpid())
    lines = (Path(config.landing) / key).read_bytes().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"tenant": "acme", "name": "orders_0", "value": 0.5, "ts": "2026-01-05T13:07:30.123456Z",
         "metadata": {"host": "web-1"}, "unit": "count", "received_at": "2026-01-05T13:07:30.123456Z"},
        {"tenant": "acme", "name": "orders_1", "value": 1.5, "ts": "2026-01-05T13:07:30.123455Z",
         "metadata": {}, "unit": "count", "received_at": "2026-01-05T13:07:30.123456Z"},
        {"committed": 2},
    ]
    events, torn = read_items((Path(config.landing) / event_key).read_bytes())
    assert not torn and [(e["name"], e["metadata"], e["text"]) for e in events] == [
        ("deploy", {"version": "2.3"}, "rolled out ✓"), ("note", {}, None)]


def test_batches_of_a_tenant_and_minute_share_a_file_and_a_new_minute_starts_another(config):
    clock = Clock()
    with PushWriter(config, clock=clock) as writer:
        first = writer.write("acme", "measures", [measure(0)])
        assert writer.write("acme", "measures", [measure(1)]) == first
        other_tenant = writer.write("boreal", "measures", [measure(2)])
        other_kind = writer.write("acme", "events", [Event("deploy", T0)])
        clock.now += 60
        next_minute = writer.write("acme", "measures", [measure(3)])
    assert len({first, other_tenant, other_kind, next_minute}) == 4
    assert "-20260105T1308-" in next_minute
    assert [item["value"] for item in read_items((Path(config.landing) / first).read_bytes())[0]] == [0.5, 1.5]


def test_a_new_writer_never_appends_to_an_existing_file(config):
    clock = Clock()
    with PushWriter(config, clock=clock) as one, PushWriter(config, clock=clock) as two:
        keys = {one.write("acme", "measures", [measure(0)]), two.write("acme", "measures", [measure(1)])}
    with PushWriter(config, clock=clock) as three:
        keys.add(three.write("acme", "measures", [measure(2)]))
    assert len(keys) == 3


def test_the_tenant_comes_from_the_caller_and_bad_calls_are_refused(writer):
    key = writer.write("acme/é", "measures", [measure(0, host="h")])
    assert read_all(writer.root)[0]["tenant"] == "acme/é" and "/acme%2F%C3%A9/" in key
    for tenant in ("", "a\x00", "\ud800", "t" * 201, None):
        with pytest.raises(ValueError, match="tenant"):
            writer.write(tenant, "measures", [measure(0)])
    with pytest.raises(ValueError, match="kind"):
        writer.write("acme", "points", [measure(0)])
    with pytest.raises(ValueError, match="at least one item"):
        writer.write("acme", "measures", [])
    with pytest.raises(TypeError, match="Measure items only"):
        writer.write("acme", "measures", [Event("deploy", T0)])


def test_files_of_a_past_minute_are_closed_by_the_writer(config):
    clock = Clock()
    with PushWriter(config, clock=clock) as writer:
        writer.write("acme", "measures", [measure(0)])
        [file] = writer._current.values()
        clock.now += 60
        deadline = datetime.now() + timedelta(seconds=5)
        while file.state != "closed" and datetime.now() < deadline:
            threading.Event().wait(0.05)
        assert file.state == "closed" and not writer._current


def test_many_threads_writing_at_once_lose_nothing_and_interleave_no_lines(config):
    threads, batches, size = 8, 40, 250

    def run(t: int) -> None:
        for b in range(batches):
            writer.write(f"tenant-{t % 3}", "measures",
                         [Measure("orders", float(i), T0, {"batch": f"{t}-{b}"}) for i in range(size)])

    with PushWriter(config) as writer:
        workers = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    seen: dict[str, list[float]] = {}
    for path in files(writer.root):
        data = path.read_bytes()
        read = read_landing(data)
        assert (read.torn, read.corrupt_lines, read.end) == (False, 0, len(data))
        previous = None
        for item in read.items:  # a batch's lines are contiguous, in order
            batch = item["metadata"]["batch"]
            assert batch == previous or batch not in seen
            assert f"/tenant-{int(batch.split('-')[0]) % 3}/" in path.as_posix()
            seen.setdefault(batch, []).append(item["value"])
            previous = batch
    assert len(seen) == threads * batches
    assert all(values == [float(i) for i in range(size)] for values in seen.values())


# -- the reader -----------------------------------------------------------------------------------

def batch(*values: float) -> bytes:
    return encode_batch("acme", "measures", [Measure("m", v, T0) for v in values], T0)


def test_a_torn_tail_is_skipped_whether_half_a_line_or_lines_of_an_unfinished_batch():
    whole = batch(1, 2) + batch(3)
    assert [i["value"] for i in read_items(whole)[0]] == [1, 2, 3] and not read_items(whole)[1]
    unfinished = batch(4, 5, 6)
    for cut in range(1, len(unfinished)):  # killed anywhere inside the last batch's write
        items, torn = read_items(whole + unfinished[:cut])
        assert [i["value"] for i in items] == [1, 2, 3] and torn
        assert read_landing(whole + unfinished[:cut]).end == len(whole)


def test_complete_lines_that_are_not_ours_are_counted_or_refused():
    damaged = batch(1) + b"not json\n" + batch(2, 3)[:-len(b'{"committed":2}\n')] + b'{"committed":2}\n' + batch(4)
    read = read_landing(damaged)
    assert [i["value"] for i in read.items] == [1, 4] and read.corrupt_lines == 3 and not read.torn
    with pytest.raises(CorruptLanding, match="3 complete line"):
        read_items(damaged)
    miscounted = batch(1, 2).replace(b'{"committed":2}', b'{"committed":3}')
    assert read_landing(miscounted).items == [] and read_landing(miscounted).corrupt_lines == 2


# -- property: what is written comes back exactly ---------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20)
_ts = st.datetimes(min_value=datetime(2025, 12, 30), max_value=datetime(2026, 1, 5, 13, 5),
                   timezones=st.just(timezone.utc))
_metadata = st.dictionaries(st.from_regex(METADATA_KEY_PATTERN, fullmatch=True), _text, max_size=4)
_name = st.from_regex(NAME_PATTERN, fullmatch=True)
_measures = st.lists(st.builds(Measure, _name, st.floats(allow_nan=False, allow_infinity=False), _ts, _metadata,
                               _text), min_size=1, max_size=5)
_events = st.lists(st.builds(Event, _name, _ts, _metadata, st.none() | _text), min_size=1, max_size=5)
_batches = st.lists(st.tuples(st.sampled_from(["acme", "boreal/é", "t 1"]), st.sampled_from(["measures", "events"]))
                    .flatmap(lambda tk: st.tuples(st.just(tk[0]), st.just(tk[1]),
                                                  _measures if tk[1] == "measures" else _events)),
                    min_size=1, max_size=8)


def _as_item(tenant: str, item: Measure | Event) -> dict:
    out = {"tenant": tenant, "name": item.name}
    if isinstance(item, Measure):
        out["value"] = item.value
    out |= {"ts": item.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "metadata": item.metadata}
    out |= {"unit": item.unit} if isinstance(item, Measure) else {"text": item.text}
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=_batches, minutes=st.lists(st.integers(0, 2), min_size=8, max_size=8))
def test_any_valid_batches_written_are_read_back_exactly(batches, minutes):
    with tempfile.TemporaryDirectory() as root:
        clock = Clock()
        written: dict[str, list[dict]] = {}
        with PushWriter(ApiConfig(landing=root), clock=clock) as writer:
            for (tenant, kind, items), minute in zip(batches, minutes):
                clock.now += 60 * minute
                key = writer.write(tenant, kind, items)
                written.setdefault(key, []).extend(_as_item(tenant, i) for i in items)
        zone = LocalLanding(Path(root))
        assert sorted(o.key for o in zone.list("custom/")) == sorted(written)
        for key, expected in written.items():
            items, torn = read_items(zone.read(key))
            assert not torn
            assert [{k: v for k, v in i.items() if k != "received_at"} for i in items] == expected
