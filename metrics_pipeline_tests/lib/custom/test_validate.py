"""Validation of pushed bodies (SPEC §12): every rule, the whole batch refused listing every invalid
item, and timestamps (RFC 3339 offsets, epoch seconds and milliseconds, microseconds, window edges)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.validate import (
    MAX_ERRORS_PER_ITEM,
    BatchTooLarge,
    Event,
    InvalidBatch,
    ItemJudge,
    Measure,
    validate_events,
    validate_measures,
)
from metrics_pipeline_tests.lib.custom.conftest import NOW
from metrics_pipeline_tests.support.measure_shapes import WELL_FORMED, measures

CONFIG = ApiConfig(landing="/nonexistent")
M = {"name": "orders", "value": 1}
E = {"name": "deploy"}


def refused(body, validate=validate_measures) -> list[dict]:
    with pytest.raises(InvalidBatch) as caught:
        validate(body, NOW, CONFIG)
    return caught.value.errors


BAD = [
    # (kind, item, field, reason contains)
    ("measure", {"value": 1}, "name", "required"),
    ("measure", {"name": 5, "value": 1}, "name", "must be a string, not a number"),
    ("measure", {"name": ["orders"], "value": 1}, "name", "must be a string, not a list"),
    ("measure", {"name": {"n": "orders"}, "value": 1}, "name", "must be a string, not an object"),
    ("measure", {"name": "1orders", "value": 1}, "name", "must match [A-Za-z_][A-Za-z0-9_.:-]{0,199}"),
    ("measure", {"name": "orders per second", "value": 1}, "name", "must match"),
    ("measure", {"name": "o" * 201, "value": 1}, "name", "must match"),
    ("measure", {"name": "", "value": 1}, "name", "must match"),
    ("measure", {"name": "a\x00b", "value": 1}, "name", "must not contain NUL characters"),
    ("measure", {"name": "a\ud800", "value": 1}, "name", "must not contain unpaired UTF-16 surrogates"),
    ("measure", {"name": "orders"}, "value", "required"),
    ("measure", {"name": "orders", "value": None}, "value", "required"),
    ("measure", {"name": "orders", "value": True}, "value", "must be a number, not true/false"),
    ("measure", {"name": "orders", "value": "12"}, "value", "must be a number, not a string"),
    ("measure", {"name": "orders", "value": float("nan")}, "value", "must be a finite number"),
    ("measure", {"name": "orders", "value": float("-inf")}, "value", "must be a finite number"),
    ("measure", {"name": "orders", "value": 10 ** 400}, "value", "must be a finite number"),
    ("measure", {**M, "ts": True}, "ts", "must be an RFC 3339 string or epoch seconds/milliseconds, not true/false"),
    ("measure", {**M, "ts": [1]}, "ts", "not a list"),
    ("measure", {**M, "ts": "2026-01-05T13:00:00"}, "ts", "must be an RFC 3339 time with an offset or Z"),
    ("measure", {**M, "ts": "2026-01-05"}, "ts", "must be an RFC 3339 time"),
    ("measure", {**M, "ts": "yesterday"}, "ts", "must be an RFC 3339 time"),
    ("measure", {**M, "ts": "2026-02-30T00:00:00Z"}, "ts", "2026-02-30T00:00:00Z is not a valid date and time"),
    ("measure", {**M, "ts": "2026-01-05T13:00:00+24:00"}, "ts", "is not a valid date and time"),
    ("measure", {**M, "ts": float("nan")}, "ts", "must be a finite number"),
    ("measure", {**M, "ts": "2025-12-30T13:00:00.249999Z"}, "ts", "more than 6 days before now (the back window)"),
    ("measure", {**M, "ts": "2026-01-05T13:05:00.250001Z"}, "ts", "more than 5 minutes ahead of now"),
    ("measure", {**M, "ts": 1e300}, "ts", "more than 5 minutes ahead of now"),
    ("measure", {**M, "ts": 0}, "ts", "more than 6 days before now"),
    ("measure", {**M, "metadata": ["host", "a"]}, "metadata", "must be an object of string values, not a list"),
    ("measure", {**M, "metadata": "host=a"}, "metadata", "must be an object of string values, not a string"),
    ("measure", {**M, "metadata": {f"k{i}": "v" for i in range(33)}}, "metadata", "at most 32 metadata keys (got 33)"),
    ("measure", {**M, "metadata": {"tenant": "acme"}}, "metadata.tenant", "reserved key: the tenant comes from the API key"),
    ("measure", {**M, "metadata": {"alertname": "x"}}, "metadata.alertname", "reserved key"),
    ("measure", {**M, "metadata": {"severity": "x"}}, "metadata.severity", "reserved key"),
    ("measure", {**M, "metadata": {"source": "x"}}, "metadata.source", "reserved key"),
    ("measure", {**M, "metadata": {"host": 1}}, "metadata.host", "must be a string, not a number"),
    ("measure", {**M, "metadata": {"host": None}}, "metadata.host", "must be a string, not null"),
    ("measure", {**M, "metadata": {"host": {"name": "a"}}}, "metadata.host", "must be a string, not an object"),
    ("measure", {**M, "metadata": {"1host": "a"}}, "metadata.1host", "key must match [A-Za-z_][A-Za-z0-9_.:-]{0,63}"),
    ("measure", {**M, "metadata": {"h" * 65: "a"}}, "metadata." + "h" * 65, "key must match"),
    ("measure", {**M, "metadata": {"h" * 200: "a"}}, "metadata." + "h" * 77 + "...", "key must match"),
    ("measure", {**M, "metadata": {"host": "a" * 1025}}, "metadata.host", "at most 1024 characters (got 1025)"),
    ("measure", {**M, "metadata": {"host": "a\x00"}}, "metadata.host", "must not contain NUL characters"),
    ("measure", {**M, "metadata": {"host": "\udc80"}}, "metadata.host", "must not contain unpaired UTF-16 surrogates"),
    ("measure", {**M, "metadata": {"h\ud800": "a"}}, "metadata.h\\ud800", "must not contain unpaired UTF-16 surrogates"),
    ("measure", {**M, "metadata": {"h\x00": "a"}}, "metadata.h\\x00", "must not contain NUL characters"),
    ("measure", {**M, "unit": 5}, "unit", "must be a string, not a number"),
    ("measure", {**M, "unit": "u" * 65}, "unit", "at most 64 characters (got 65)"),
    ("measure", {**M, "unit": "ms\x00"}, "unit", "must not contain NUL characters"),
    ("measure", {**M, "host": "web-1"}, "host", "unknown field; allowed: name, value, ts, metadata, unit"),
    ("measure", {**M, "text": "hello"}, "text", "unknown field"),
    ("measure", {**M, "Name": "x"}, "Name", "unknown field"),
    ("event", {}, "name", "required"),
    ("event", {**E, "text": 5}, "text", "must be a string, not a number"),
    ("event", {**E, "text": "é" * 32769}, "text", "at most 65536 bytes of UTF-8 (got 65538)"),
    ("event", {**E, "text": "ok\x00"}, "text", "must not contain NUL characters"),
    ("event", {**E, "text": "\udfff"}, "text", "must not contain unpaired UTF-16 surrogates"),
    ("event", {**E, "value": 1}, "value", "unknown field; allowed: name, ts, metadata, text"),
    ("event", {**E, "unit": "ms"}, "unit", "unknown field"),
    ("event", {**E, "metadata": {"tenant": "x"}}, "metadata.tenant", "reserved key"),
    ("event", {**E, "ts": "2026-01-05T13:00:00"}, "ts", "must be an RFC 3339 time"),
]


@pytest.mark.parametrize(("kind", "item", "field", "reason"), BAD, ids=lambda v: repr(v)[:40] if isinstance(v, dict) else None)
def test_an_invalid_item_names_its_field_and_the_rule(kind, item, field, reason):
    validate = validate_measures if kind == "measure" else validate_events
    errors = refused([dict(M) if kind == "measure" else dict(E), item], validate)
    assert [(e["index"], e["field"]) for e in errors] == [(1, field)]
    assert reason in errors[0]["reason"]


@pytest.mark.parametrize(("kind", "item"), [
    ("measure", {"name": "o" * 200, "value": -1.5e300}),
    ("measure", {"name": "_a.b:c-d_9", "value": 0}),
    ("measure", {**M, "metadata": {f"k{i}": "v" * 1024 for i in range(32)}}),
    ("measure", {**M, "metadata": {"h" * 64: "é"}}),
    ("measure", {**M, "unit": "u" * 64}),
    ("event", {**E, "text": "é" * 32768}),
    ("event", {**E, "text": ""}),
])
def test_items_at_the_limits_are_accepted(kind, item):
    validate = validate_measures if kind == "measure" else validate_events
    assert len(validate(item, NOW, CONFIG)) == 1


def test_a_batch_with_invalid_items_is_refused_whole_listing_every_one():
    body = [M, {"name": "1x", "value": 1}, M, {"name": "ok", "value": "x", "metadata": {"tenant": "t"}}, 7]
    errors = refused(body)
    assert errors == [
        {"index": 1, "field": "name", "reason": errors[0]["reason"]},
        {"index": 3, "field": "value", "reason": "must be a number, not a string"},
        {"index": 3, "field": "metadata.tenant", "reason": "reserved key: the tenant comes from the API key"},
        {"index": 4, "field": None, "reason": "must be a JSON object"},
    ]


def test_every_invalid_item_of_a_full_batch_is_listed_with_a_bounded_number_of_problems_each():
    bad = {"name": "1x", "value": "x", "metadata": {f"{i}k": 1 for i in range(40)}}
    errors = refused([bad] * 10_000)
    assert {e["index"] for e in errors} == set(range(10_000))
    assert len(errors) == 10_000 * MAX_ERRORS_PER_ITEM


@pytest.mark.parametrize(("body", "reason"), [
    (5, "the body must be a JSON object or a list of objects"),
    ("orders", "the body must be a JSON object or a list of objects"),
    (None, "the body must be a JSON object or a list of objects"),
    ([], "the batch is empty"),
])
def test_a_body_that_is_no_batch_is_refused_with_a_null_index(body, reason):
    errors = refused(body)
    assert len(errors) == 1 and errors[0]["index"] is None and reason in errors[0]["reason"]


def test_a_batch_over_the_item_limit_is_its_own_refusal_before_any_item_is_read():
    with pytest.raises(BatchTooLarge) as caught:
        validate_measures([7] * 10_001, NOW, CONFIG)  # invalid items, but the size is what is said
    assert not isinstance(caught.value, InvalidBatch)
    assert caught.value.errors == [{"index": None, "field": None, "reason": "at most 10000 items a batch (got 10001)"}]
    assert len(validate_measures([M] * 10_000, NOW, CONFIG)) == 10_000


def test_a_lone_object_is_a_batch_of_one_with_the_defaults_filled_in():
    assert validate_measures({"name": "orders", "value": 3, "ts": None, "metadata": None, "unit": None}, NOW, CONFIG) == [
        Measure("orders", 3.0, NOW, {}, "")]
    assert validate_events({"name": "deploy", "metadata": {"version": "2.3"}}, NOW, CONFIG) == [
        Event("deploy", NOW, {"version": "2.3"}, None)]
    [measure] = validate_measures({"name": "orders", "value": 3}, NOW, CONFIG)
    assert type(measure.value) is float
    with pytest.raises(AttributeError):
        measure.value = 4  # frozen


def ts_of(ts) -> datetime:
    [measure] = validate_measures({**M, "ts": ts}, NOW, CONFIG)
    assert measure.ts.tzinfo is timezone.utc
    return measure.ts


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.mark.parametrize(("ts", "expected"), [
    ("2026-01-05T12:00:00Z", utc(2026, 1, 5, 12)),
    ("2026-01-05T12:00:00z", utc(2026, 1, 5, 12)),
    ("2026-01-05t12:00:00Z", utc(2026, 1, 5, 12)),
    ("2026-01-05 12:00:00Z", utc(2026, 1, 5, 12)),
    ("2026-01-05T14:00:00+02:00", utc(2026, 1, 5, 12)),
    ("2026-01-05T06:30:00-05:30", utc(2026, 1, 5, 12)),
    ("2026-01-05T12:00:00+00:00", utc(2026, 1, 5, 12)),
    ("2026-01-05T12:00:00.5Z", utc(2026, 1, 5, 12, 0, 0, 500_000)),
    ("2026-01-05T12:00:00.123456Z", utc(2026, 1, 5, 12, 0, 0, 123_456)),
    ("2026-01-05T14:00:00.000001+02:00", utc(2026, 1, 5, 12, 0, 0, 1)),
    ("2026-01-05T12:00:00.1234565Z", utc(2026, 1, 5, 12, 0, 0, 123_457)),  # rounded, as PostgreSQL does
    ("2026-01-05T12:00:00.123456499Z", utc(2026, 1, 5, 12, 0, 0, 123_456)),
    ("2026-01-05T12:59:59.9999996Z", utc(2026, 1, 5, 13)),
    (1_767_614_400, utc(2026, 1, 5, 12)),  # epoch seconds
    (1_767_614_400.123456, utc(2026, 1, 5, 12, 0, 0, 123_456)),
    (1_767_614_400_123, utc(2026, 1, 5, 12, 0, 0, 123_000)),  # epoch milliseconds (above 1e11)
    (1_767_614_400_123.456, utc(2026, 1, 5, 12, 0, 0, 123_456)),
])
def test_timestamps_are_read_in_every_accepted_form_to_the_microsecond(ts, expected):
    assert ts_of(ts) == expected


@pytest.mark.parametrize(("offset", "accepted"), [
    (-timedelta(days=6), True),
    (-timedelta(days=6, microseconds=1), False),
    (timedelta(minutes=5), True),
    (timedelta(minutes=5, microseconds=1), False),
])
def test_the_window_includes_its_edges_to_the_microsecond(offset, accepted):
    moment = NOW + offset
    for ts in (moment.isoformat(), moment.isoformat().replace("+00:00", "Z")):
        if accepted:
            assert ts_of(ts) == moment
        else:
            assert refused({**M, "ts": ts})[0]["field"] == "ts"
    micros = (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
    epoch_ms = micros / 1000  # a float of milliseconds keeps the microseconds
    if accepted:
        assert ts_of(epoch_ms) == moment
    else:
        assert refused({**M, "ts": epoch_ms})[0]["field"] == "ts"


def test_an_item_without_ts_is_stamped_with_the_time_of_receipt_in_utc():
    local = NOW.astimezone(timezone(timedelta(hours=9)))
    [measure] = validate_measures(M, local, CONFIG)
    assert measure.ts == NOW and measure.ts.tzinfo is timezone.utc


def test_the_window_follows_the_configuration():
    config = ApiConfig(landing="/nonexistent", ts_back="1h", ts_ahead="0s")
    with pytest.raises(InvalidBatch, match="more than 1 hour before now"):
        validate_measures({**M, "ts": (NOW - timedelta(hours=2)).isoformat()}, NOW, config)
    with pytest.raises(InvalidBatch, match="more than 0 seconds ahead of now"):
        validate_measures({**M, "ts": (NOW + timedelta(seconds=1)).isoformat()}, NOW, config)


def test_a_naive_now_is_a_programming_error():
    with pytest.raises(ValueError, match="aware"):
        validate_measures(M, NOW.replace(tzinfo=None), CONFIG)


# The Kafka loader's quick path (`ItemJudge.quick`) must accept only what the full rules accept, with the
# same values. Items are mutations of a well-formed measure whose name, metadata and unit the judge has
# seen, so that the quick path is the one that decides; the full rules judge them on a fresh judge.
@settings(max_examples=800, deadline=None)
@given(data=st.data())
def test_the_quick_path_accepts_only_what_the_full_rules_accept_with_the_same_values(data):
    warm = ItemJudge("measures", NOW, CONFIG)
    for known in (WELL_FORMED, {**WELL_FORMED, "metadata": {"zone": "b", "host": "a"}}):
        assert warm.judge(known)[1] is None
    raw = data.draw(measures(), label="raw")
    ignored = data.draw(st.sampled_from([None, "tenant", "host"]), label="ignored")
    quick = warm.quick(raw, ignored)
    if quick is not None:
        full, problem = ItemJudge("measures", NOW, CONFIG).judge({k: v for k, v in raw.items() if k != ignored})
        assert problem is None
        assert quick == (full.name, full.value, full.ts, full.metadata, full.unit)
        assert type(quick[1]) is float and quick[2].tzinfo is timezone.utc


@pytest.mark.parametrize("ts", [None, "2026-01-05T12:59:00Z", "2026-01-05T12:59:00.123456Z",
                                "2026-01-05T14:59:00.1+02:00", "2026-01-05T07:59:00-05:00"])
def test_the_quick_path_takes_well_formed_measures_of_known_series(ts):
    judge = ItemJudge("measures", NOW, CONFIG)
    judge.judge(WELL_FORMED)
    item = {**WELL_FORMED, "ts": ts, "value": 7}
    assert judge.quick(item) == ("orders", 7.0, judge.judge(item)[0].ts, {"host": "a", "zone": "b"}, "ms")
    assert judge.quick({**item, "tenant": "demo"}) is None and judge.quick({**item, "tenant": "demo"}, "tenant")
    assert ItemJudge("events", NOW, CONFIG).quick({"name": "deploy"}) is None  # events: always the full rules
