"""Measures of every shape for property tests of the push API's rules and the Kafka loader's quick path
(`validate.ItemJudge.quick`): mutations of a well-formed measure, one or two fields at a time, with
values mostly right or nearly right (times of the RFC 3339 shape with one part wrong, times just
outside the window, numbers that are not finite, metadata maps in another key order), so that a
good share of them are ones the quick path decides.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

from hypothesis import strategies as st

from metrics_pipeline.lib.custom.validate import MEASURE_FIELDS

#: the time of receipt the shapes are drawn around (= `lib/custom/conftest.NOW`)
NOW = datetime(2026, 1, 5, 13, 0, 0, 250_000, tzinfo=timezone.utc)

WELL_FORMED = {"name": "orders", "value": 1.5, "ts": "2026-01-05T12:59:00.5Z", "metadata": {"host": "a", "zone": "b"},
               "unit": "ms"}


@st.composite
def rfc3339ish(draw) -> str:
    """Times of the RFC 3339 shape near NOW, half right and half with one part wrong (separator, date,
    clock, fraction, zone), a third of them just outside the window."""
    seconds = draw(st.one_of(st.integers(-7 * 86_400, 600), st.integers(-6 * 86_400 - 3, -6 * 86_400 + 3),
                             st.integers(297, 303)))
    moment = NOW + timedelta(seconds=seconds, microseconds=draw(st.sampled_from([0, -250_000, -249_999, 1, 500])))
    zone = draw(st.one_of(st.just("Z"), st.tuples(st.sampled_from("+-"), st.integers(0, 23), st.integers(0, 59))))
    if isinstance(zone, tuple):  # the same moment in that offset
        sign, hours, minutes = zone
        moment = moment.astimezone(timezone((1 if sign == "+" else -1) * timedelta(hours=hours, minutes=minutes)))
        zone = f"{sign}{hours:02d}:{minutes:02d}"
    parts = {"date": f"{moment:%Y-%m-%d}", "separator": "T", "clock": f"{moment:%H:%M:%S}",
             "fraction": draw(st.sampled_from(["", f".{moment:%f}", f".{moment:%f}"[:4], f".{moment:%f}5",  # rounded
                                                f".{moment:%f}499"])), "zone": zone}
    wrong = {"date": st.sampled_from([f"{moment:%Y-%m}-32", f"{moment:%Y-%m-%d}x", "２０２６-01-05", f"{moment:%Y%m%d}",
                                      f"{moment:%Y}-02-30", "0000-01-05"]),
             "separator": st.sampled_from(["t", " ", "_", ""]),
             "clock": st.sampled_from(["24:00:00", "12:60:00", "1:00:00", f"{moment:%H%M%S}", "12:00", "١٢:00:00"]),
             "fraction": st.one_of(st.text("0123456789", max_size=10).map(lambda d: "." + d), st.just(",5"),
                                   st.just(".１"), st.sampled_from([".1234565", ".99999951", ".123456789"])),
             "zone": st.one_of(st.sampled_from(["z", "", "+0000", "+00", "Z ", " Z", "+00:00:00"]),
                               st.tuples(st.sampled_from("+-"), st.integers(0, 99), st.integers(0, 99)).map(
                                   lambda t: f"{t[0]}{t[1]:02d}:{t[2]:02d}"))}
    broken = draw(st.sampled_from([None] * 5 + sorted(wrong)))
    if broken:
        parts[broken] = draw(wrong[broken])
    return "".join(parts[p] for p in ("date", "separator", "clock", "fraction", "zone"))


FIELD_VALUES = {
    "name": st.one_of(st.just("orders"), st.sampled_from(["1orders", "", "a\x00b", "a\ud800", "o" * 201, "Orders"]),
                      st.text(max_size=5), st.integers(), st.none(), st.lists(st.just("orders"), max_size=1)),
    "value": st.one_of(st.floats(), st.sampled_from([math.inf, -math.inf, math.nan]), st.integers(),
                       st.integers(min_value=2 ** 1000, max_value=2 ** 1100), st.booleans(), st.none(),
                       st.text(max_size=3)),
    "ts": st.one_of(rfc3339ish(), rfc3339ish(), rfc3339ish(), st.none(), st.integers(-10, 2 * 10 ** 12), st.floats(),
                    st.booleans(), st.text(max_size=30), st.lists(st.integers(), max_size=1)),
    "metadata": st.one_of(st.just({"host": "a", "zone": "b"}), st.just({"zone": "b", "host": "a"}), st.none(),
                          st.dictionaries(st.sampled_from(["host", "zone", "tenant", "1k", "source"]),
                                          st.one_of(st.sampled_from(["a", "b", "a\x00"]), st.integers(), st.none(),
                                                    st.lists(st.just("a"), max_size=1)), max_size=3),
                          st.lists(st.just("a"), max_size=1), st.text(max_size=3)),
    "unit": st.one_of(st.just("ms"), st.none(), st.text(max_size=3), st.just("u" * 64), st.just("u" * 65),
                      st.just("ms\x00"), st.just("\udc80"), st.integers()),
    "tenant": st.one_of(st.just("demo"), st.text(max_size=3), st.none()),
    "host": st.just("web-1"),
}


@st.composite
def measures(draw, ts=None) -> dict:
    """A measure: `WELL_FORMED` with `ts` drawn (from `ts` when given), at most one other field changed and
    at most one dropped."""
    raw = dict(WELL_FORMED, ts=draw(ts if ts is not None else FIELD_VALUES["ts"], label="ts"))
    for field in draw(st.lists(st.sampled_from(sorted(set(FIELD_VALUES) - {"ts"})), max_size=1), label="changed"):
        raw[field] = draw(FIELD_VALUES[field], label=field)
    for field in draw(st.sets(st.sampled_from(MEASURE_FIELDS), max_size=1), label="dropped"):
        raw.pop(field)
    return raw
