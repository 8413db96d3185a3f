"""The shape of a log file and the size of its records (issue 16): a JSON Lines file whose first
line is an array, a record pretty-printed over lines, an item over the 1 MB record limit, whatever
the file's shape. The property at the end holds the parser to loaded + quarantined = read for
files mixing all of these."""

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings

from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions, parse_file
from metrics_pipeline_tests.support.ingestion_logs import good
from metrics_pipeline_tests.support.log_shapes import LIMIT, file_strategy, files_strategy, records

NOW = datetime(2026, 1, 6, tzinfo=timezone.utc)
OPTIONS = ParseOptions(now=NOW)
BOM_CHARS = b"\xef\xbb\xbf \n\r\t"


def jsonl(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


# -- JSON Lines whose first line is an array ---------------------------------------------------------

@pytest.mark.parametrize("first", ["[1, 2]", "[]", json.dumps([good(Objet_Id=99)]), '["a", {"b": 1}]'])
def test_a_json_lines_file_whose_first_line_is_an_array_loses_only_that_line(first):
    data = jsonl(first, *(json.dumps(r) for r in records(9)))
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert [r["source_position"] for r in parsed.accepted] == list(range(2, 11))
    assert [(r.position, r.reason) for r in parsed.rejected] == [(1, "record is a JSON list, not an object")]
    assert parsed.read == 10


def test_a_json_lines_file_opening_with_array_lines_then_records_keeps_every_record():
    data = jsonl("[1]", "[2, 3]", "garbage", *(json.dumps(r) for r in records(3)))
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert [r["source_position"] for r in parsed.accepted] == [4, 5, 6]
    assert [(r.position, r.reason.split(" (")[0]) for r in parsed.rejected] == [
        (1, "record is a JSON list, not an object"), (2, "record is a JSON list, not an object"), (3, "broken JSON")]


@pytest.mark.parametrize(
    ("name", "data", "accepted", "rejected"),
    [
        ("one compact array", json.dumps(records(3)).encode(), 3, 0),
        ("one pretty array", json.dumps(records(3), indent=2).encode(), 3, 0),
        ("arrays one after another", b"\n".join(json.dumps([r]).encode() for r in records(3)), 3, 0),
        ("a pretty array cut short", json.dumps(records(3), indent=2).encode()[:-60], 2, 1),
        ("a one-line array cut short", json.dumps(records(3)).encode()[:-60], 2, 1),
        ("an array with items one per line", ("[" + ",\n".join(json.dumps(r) for r in records(3)) + "]").encode(), 3, 0),
    ],
)
def test_files_that_are_json_arrays_stay_arrays(name, data, accepted, rejected):
    parsed = parse_file(data, "f.json", OPTIONS)
    assert (len(parsed.accepted), len(parsed.rejected)) == (accepted, rejected), name
    assert [r["source_position"] for r in parsed.accepted] == list(range(accepted))  # array indexes


# -- records pretty-printed across lines -------------------------------------------------------------

@pytest.mark.parametrize("indent", [2, 4, "\t", 0])
def test_a_pretty_printed_record_in_a_json_lines_file_is_read_as_one_record(indent):
    first, middle, last = records(3)
    pretty = json.dumps(middle, indent=indent)
    data = jsonl(json.dumps(first), pretty, json.dumps(last))
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert parsed.rejected == []
    assert [r["source_position"] for r in parsed.accepted] == [1, 2, 3 + pretty.count("\n")]
    assert parsed.accepted[1]["object_id"] == str(middle["Objet_Id"])


def test_a_broken_pretty_printed_record_is_one_quarantined_record_not_one_per_line():
    first, middle, last = records(3)
    pretty = json.dumps(middle, indent=2)
    assert pretty.count("\n") == 18  # 19 lines: the report's 19 quarantine rows for one record
    torn = pretty.replace('"Zone": "1-Raw",', '"Zone": 1-Raw",')  # a corrupt line in the middle
    data = jsonl(json.dumps(first), torn, json.dumps(last))
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert [r["source_position"] for r in parsed.accepted] == [1, 21]
    assert len(parsed.rejected) == 1
    bad = parsed.rejected[0]
    assert bad.position == 2 and bad.reason.startswith("broken JSON (") and "a record over lines 2-20" in bad.reason
    assert bad.raw == torn  # the whole record, as written


def test_a_pretty_printed_record_cut_short_at_the_end_of_the_file_is_one_quarantined_record():
    first, middle = records(2)
    data = jsonl(json.dumps(first)) + json.dumps(middle, indent=2).encode()[:150]
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert len(parsed.accepted) == 1 and [r.position for r in parsed.rejected] == [2]


def test_a_torn_line_never_swallows_the_record_on_the_next_line():
    # `{"No_Sequence":` alone would take the next line's object as its value if lines were joined.
    first, second = records(2)
    data = jsonl('{"No_Sequence":', json.dumps(first), '{"a": [', json.dumps(second))
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert [r["source_position"] for r in parsed.accepted] == [2, 4]
    assert [r.position for r in parsed.rejected] == [1, 3]


# -- the 1 MB record limit in every shape ------------------------------------------------------------

BIG = "x" * 2_000_000  # a 2 MB description: the report's record


@pytest.mark.parametrize(
    "shape",
    ["intact array", "pretty intact array", "damaged array", "json lines", "pretty record in json lines"],
)
def test_an_item_over_one_mb_is_quarantined_whatever_the_shape(shape):
    big, small = good(Description=BIG), records(1)[0]
    data = {
        "intact array": lambda: json.dumps([big, small]).encode(),
        "pretty intact array": lambda: json.dumps([big, small], indent=2).encode(),
        "damaged array": lambda: json.dumps([big, small]).encode()[:-1] + b", {broken",
        "json lines": lambda: jsonl(json.dumps(big), json.dumps(small)),
        "pretty record in json lines": lambda: jsonl(json.dumps(big, indent=2), json.dumps(small)),
    }[shape]()
    parsed = parse_file(data, "f", OPTIONS)
    assert [r["object_id"] for r in parsed.accepted] == [str(small["Objet_Id"])]
    too_long = [r for r in parsed.rejected if "longer than 1000000 bytes" in r.reason]
    assert len(too_long) == 1 and len(too_long[0].raw) < 10_100  # an excerpt, not the 2 MB


def test_the_limit_counts_bytes_not_characters():
    wide = good(Description="é" * 600_000)  # 600,000 characters, 1.2 MB in UTF-8
    narrow = good(Description="e" * 600_000, Objet_Id=7)
    parsed = parse_file(json.dumps([wide, narrow], ensure_ascii=False).encode(), "f.json", OPTIONS)
    assert [r["object_id"] for r in parsed.accepted] == ["7"]
    assert [r.reason for r in parsed.rejected] == ["record longer than 1000000 bytes"]


# -- the invariant -----------------------------------------------------------------------------------

@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(file_strategy())
def test_every_record_is_loaded_or_quarantined_exactly_once_whatever_the_mix(case):
    """Files mixing good records, invalid ones, broken lines, array lines, pretty-printed records
    (whole or torn), oversize items, blank lines and BOMs, as JSON Lines or arrays: each record
    read is accepted or rejected once, and the counts are the ones the file was built with."""
    parsed = parse_file(case.data, "mix", ParseOptions(now=NOW, max_record_bytes=LIMIT))
    assert (len(parsed.accepted), len(parsed.rejected)) == (case.good, case.bad), case.data[:3000]
    assert parsed.read == case.good + case.bad
    assert len({r.position for r in parsed.rejected} | {r["source_position"] for r in parsed.accepted}) == parsed.read
    for bad in parsed.rejected:
        assert bad.reason and len(bad.raw) <= 10_100


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(files=files_strategy())
def test_through_the_loader_loaded_plus_quarantined_equals_read_and_every_file_is_processed(files, warehouse_dsn, tmp_path_factory):
    """The same mix, several files at once, through `load_window` and a real PostgreSQL: the run's
    counts are the files' counts, the warehouse holds exactly that, and every file (empty ones
    included) is marked processed."""
    import psycopg

    from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
    from metrics_pipeline.lib.landing import LocalLanding
    from metrics_pipeline.lib.warehouse.db import Warehouse
    from metrics_pipeline_tests.support.log_shapes import H13

    with psycopg.connect(warehouse_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE metrics.ingestion_runs, metrics.quarantine, metrics.landing_files")
    zone = LocalLanding(tmp_path_factory.mktemp("zone"))
    for i, case in enumerate(files):
        zone.write(f"ingestion_logs/f{i}.{'json' if case.data.lstrip(BOM_CHARS)[:1] == b'[' else 'jsonl'}", case.data)
    # Records without a usable start belong to their file's arrival hour (here: the parse's `now`).
    start, end = H13, NOW + timedelta(hours=1)
    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, start, end,
                                        ParseOptions(now=NOW, max_record_bytes=LIMIT))
    expected_read = sum(c.read for c in files)
    assert (result.read, result.loaded, result.quarantined) == (
        expected_read, sum(c.good for c in files), sum(c.bad for c in files))
    assert result.read == result.loaded + result.quarantined
    assert (result.files, result.empty_files) == (len(files), sum(c.read == 0 for c in files))
    with psycopg.connect(warehouse_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM metrics.quarantine").fetchone()[0] == result.quarantined
        assert conn.execute("SELECT count(*) FROM metrics.ingestion_runs").fetchone()[0] == result.rows == result.loaded
        assert conn.execute("SELECT count(*) FILTER (WHERE processed_at IS NULL), count(*) "
                            "FROM metrics.landing_files").fetchone() == (0, len(files))
