import json
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions, parse_file, parse_timestamp
from metrics_pipeline_tests.support.ingestion_logs import good

NOW = datetime(2026, 1, 6, tzinfo=timezone.utc)
OPTIONS = ParseOptions(now=NOW, min_start=datetime(2025, 1, 1, tzinfo=timezone.utc))


def parse_one(record, options=OPTIONS):
    parsed = parse_file(json.dumps([record]).encode(), "f.json", options)
    assert parsed.read == 1
    return parsed


def test_a_good_record_is_normalised_to_the_ingestion_runs_columns():
    row = parse_one(good()).accepted[0]
    assert row == {
        "source_file": "f.json", "source_position": 0, "company": "akonovia", "zone": "1-Raw",
        "source_system": "PowerBI", "object": "Dataset", "transformation": "REST API", "object_id": "42",
        "sequence_no": "2026-01-05-13-05", "status": "SUCCESS",
        "started_at": datetime(2026, 1, 5, 13, 5, tzinfo=timezone.utc),
        "ended_at": datetime(2026, 1, 5, 13, 6, tzinfo=timezone.utc), "duration_s": 60.0,
        "description": "Tout roule, pas de stress!", "cpu_time_s": 1.5, "memory_used_bytes": 1048576,
    }


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"Fin": ...}, "missing field(s) 'Fin'"),
        ({"Entreprise": "  "}, "missing field(s) 'Entreprise'"),
        ({"Debut": ..., "Etat": None}, "missing field(s) 'Etat', 'Debut'"),
        ({"Etat": "RUNNING"}, "unknown status 'RUNNING' (expected SUCCESS or FAILED)"),
        ({"Debut": "yesterday"}, "'Debut' is not a timestamp: 'yesterday'"),
        ({"Fin": "2026-01-05 13:00:00", "Duree secondes": 0}, "end before start"),
        ({"Duree secondes": -3}, "negative duration -3 s"),
        ({"Duree secondes": "abc"}, "'Duree secondes' is not a number: 'abc'"),
        ({"Duree secondes": 75}, "duration 75 s disagrees with Fin - Debut = 60 s (tolerance 2 s)"),
        ({"No_Sequence": "2026-01-05 13:05"}, "'No_Sequence' '2026-01-05 13:05' is not YYYY-MM-DD-HH-MM"),
        ({"No_Sequence": "2026-02-30-13-05"}, "is not a real date and time"),
        ({"Heure_Sequence": "14"}, "'Heure_Sequence' '14' disagrees with No_Sequence"),
        ({"Date_Sequence": "2026-01-04"}, "'Date_Sequence' '2026-01-04' disagrees with No_Sequence"),
        ({"cpu_time (sec)": -1}, "'cpu_time (sec)' must be a non-negative number"),
        ({"memory_used (bytes)": 1.5}, "'memory_used (bytes)' must be a non-negative number"),
        ({"Objet_Id": [1]}, "'Objet_Id' must be text or an integer"),
        ({"Source": 5}, "'Source' must be text"),
        ({"Description": {"x": 1}}, "'Description' must be text"),
        ({"Zone": "1-Raw\x00"}, "must not contain NUL"),
        ({"Debut": "2027-01-05 13:05:00", "Fin": "2027-01-05 13:06:00"}, "is in the future"),
        ({"Debut": "2019-01-05 13:05:00", "Fin": "2019-01-05 13:06:00"}, "is before the first partition"),
    ],
)
def test_every_validation_rule_quarantines_with_a_readable_reason(changes, reason):
    parsed = parse_one(good(**changes))
    assert parsed.accepted == []
    assert reason in parsed.rejected[0].reason
    assert parsed.rejected[0].position == 0
    assert parsed.rejected[0].raw.startswith("{")


def test_every_problem_of_a_record_is_reported_together():
    reason = parse_one(good(Etat="x", **{"Duree secondes": -1})).rejected[0].reason
    assert "unknown status" in reason and "negative duration" in reason


def test_durations_within_the_tolerance_and_lenient_forms_are_accepted():
    rows = parse_file(json.dumps([
        good(**{"Duree secondes": 61.9}),
        good(**{"Duree secondes": "60,4"}, Etat=" failed "),
        good(Debut="2026-01-05T13:05:00Z", Fin="2026-01-05T14:05:00+01:00", **{"Duree secondes": 0}),
        good(Heure_Sequence=13, Minute_Sequence=5, Objet_Id="A-7", **{"cpu_time (sec)": None}),
    ]).encode(), "f.json", OPTIONS)
    assert len(rows.accepted) == 4, [r.reason for r in rows.rejected]
    assert rows.accepted[1]["status"] == "FAILED"
    assert rows.accepted[3]["cpu_time_s"] is None


def test_naive_times_are_read_in_the_configured_timezone():
    options = ParseOptions(timezone="Europe/Paris", now=NOW)
    row = parse_one(good(), options).accepted[0]
    assert row["started_at"] == datetime(2026, 1, 5, 12, 5, tzinfo=timezone.utc)
    assert parse_timestamp("2026-01-05T13:05:00.250+02:00", timezone.utc) == datetime(2026, 1, 5, 11, 5, 0, 250000, tzinfo=timezone.utc)


def test_json_lines_with_bom_keep_good_lines_and_quarantine_bad_ones_by_line_number():
    lines = [json.dumps(good()), "", "{not json", json.dumps(good(Etat="?")), json.dumps([1, 2]), "\xff"]
    data = b"\xef\xbb\xbf" + "\n".join(lines).encode("utf-8", "surrogateescape")
    parsed = parse_file(data, "f.jsonl", OPTIONS)
    assert [r["source_position"] for r in parsed.accepted] == [1]
    assert [(r.position, r.reason.split(" (")[0]) for r in parsed.rejected] == [
        (3, "broken JSON"), (4, "unknown status '?'"), (5, "record is a JSON list, not an object"), (6, "broken JSON"),
    ]
    assert parsed.rejected[0].raw == "{not json"


def test_a_truncated_json_array_keeps_every_complete_item():
    data = json.dumps([good(), good(No_Sequence="2026-01-05-13-06", Debut="2026-01-05 13:06:00", Fin="2026-01-05 13:07:00", Minute_Sequence="06"), good()]).encode()
    parsed = parse_file(data[:-40], "f.json", OPTIONS)
    assert len(parsed.accepted) == 2
    assert len(parsed.rejected) == 1 and parsed.rejected[0].position == 2
    assert "items after this point are unreadable" in parsed.rejected[0].reason


def test_hostile_inputs_are_quarantined_not_crashing():
    options = ParseOptions(now=NOW, max_record_bytes=1000)
    assert parse_file(b"[" * 200_000, "deep.json", options).rejected[0].reason.startswith("JSON nested too deeply")
    assert parse_file(b'{"a":' * 200_000, "deep.jsonl", ParseOptions(now=NOW)).rejected[0].reason == "JSON nested too deeply"
    huge = parse_file(b'{"x": "' + b"a" * 5000 + b'"}\n', "huge.jsonl", options)
    assert huge.rejected[0].reason == "line longer than 1000 bytes" and len(huge.rejected[0].raw) <= 10_100
    assert parse_file(b"", "empty.json", options).read == 0


def test_rejected_records_are_attributed_to_their_own_hour_or_the_files_first_good_hour():
    parsed = parse_file(json.dumps([
        good(Debut="2026-01-05 15:10:00", Fin="2026-01-05 15:11:00", No_Sequence="2026-01-05-15-10",
             Heure_Sequence="15", Minute_Sequence="10"),
        good(Etat="?"),  # bad, but its start parses: 13:00
        {"garbage": True},  # no start: the file's first good hour, 15:00
    ]).encode(), "f.json", OPTIONS)
    hours = parsed.hours(fallback=NOW)
    assert hours == {
        0: datetime(2026, 1, 5, 15, tzinfo=timezone.utc),
        1: datetime(2026, 1, 5, 13, tzinfo=timezone.utc),
        2: datetime(2026, 1, 5, 15, tzinfo=timezone.utc),
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_never_crash_and_every_record_is_counted(data):
    parsed = parse_file(data, "fuzz", OPTIONS)
    assert parsed.read == len(parsed.accepted) + len(parsed.rejected)
    for bad in parsed.rejected:
        assert bad.reason


FIELD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30), st.sampled_from(["SUCCESS", "FAILED", "2026-01-05 13:05:00", "2026-01-05T13:06:00Z", "60", "-1"]),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(list(good())), FIELD_VALUES, max_size=6), max_size=8),
       st.booleans())
def test_near_valid_records_never_crash_and_loaded_plus_quarantined_equals_read(mutations, as_lines):
    records = [good(**m) for m in mutations]
    if as_lines:
        data = "\n".join(json.dumps(r, default=str) for r in records).encode()
    else:
        data = json.dumps(records, default=str).encode()
    parsed = parse_file(data, "near", OPTIONS)
    assert parsed.read == len(records)
    for row in parsed.accepted:
        assert row["ended_at"] >= row["started_at"] and row["duration_s"] >= 0
        assert row["status"] in ("SUCCESS", "FAILED")


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(list(good())), FIELD_VALUES, max_size=5))
def test_the_fast_path_agrees_with_the_detailed_validator(mutation):
    from metrics_pipeline.lib.ingestion_logs.parse import _fast_row, validate_detailed

    record = json.loads(json.dumps(good(**mutation), default=str))
    fast = _fast_row(record, 3, "k", OPTIONS)
    if fast is not None:
        assert fast == validate_detailed(record, 3, "k", OPTIONS)


def test_the_fast_path_takes_ordinary_records():
    from metrics_pipeline.lib.ingestion_logs.parse import _fast_row

    assert _fast_row(good(), 0, "k", OPTIONS) is not None
    assert _fast_row(good(Debut="2026-01-05T13:05:00Z", Fin="2026-01-05T13:06:00Z"), 0, "k", OPTIONS) is not None


@pytest.mark.parametrize(
    "data",
    [
        b'{"Duree secondes": ' + b"9" * 400 + b', "Heure_Sequence": ' + b"9" * 400 + b"}",
        b'[{"a": ' + b"[" * 990 + b"]" * 990 + b"}]",
        '[{"Entreprise": "\\ud800"}]'.encode(),
    ],
)
def test_overflows_deep_items_and_lone_surrogates_are_quarantined_not_raised(data):
    parsed = parse_file(data, "k", OPTIONS)
    assert parsed.read == 1 and len(parsed.rejected) == 1
    parsed.rejected[0].raw.encode("utf-8")  # storable in PostgreSQL


def test_records_that_postgres_cannot_store_are_refused():
    assert "unpaired UTF-16 surrogates" in parse_one(good(Description="\ud800")).rejected[0].reason
    assert "memory_used (bytes)" in parse_one(good(**{"memory_used (bytes)": 2**64})).rejected[0].reason
    row = parse_one(good(**{"memory_used (bytes)": 2**60 + 1})).accepted[0]
    assert row["memory_used_bytes"] == 2**60 + 1  # exact, not rounded through a float


def test_concatenated_arrays_load_and_trailing_text_is_quarantined():
    two = parse_file(json.dumps([good()]).encode() + b"\n" + json.dumps([good(Etat="FAILED")]).encode(), "k", OPTIONS)
    assert [r["status"] for r in two.accepted] == ["SUCCESS", "FAILED"] and two.rejected == []
    trailing = parse_file(json.dumps([good()]).encode() + b" garbage", "k", OPTIONS)
    assert len(trailing.accepted) == 1 and trailing.rejected[0].reason == "text after the end of the JSON array"
