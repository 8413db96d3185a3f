"""The read endpoints over every source (issue 19), under real uvicorn, on the BI sample warehouse:
values checked against the raw points read independently, tenant isolation on every endpoint."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from metrics_pipeline.api.app import create_app
from metrics_pipeline.api.idempotency import IdempotencyStore
from metrics_pipeline.lib import api_keys, query, rollups
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter
from metrics_pipeline.lib.custom.reads import as_tenant
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.retention import RetentionConfig
from metrics_pipeline_tests.support import bi_sample
from metrics_pipeline_tests.support.api import serving

TENANTS = ("akonovia", "boreal-logistique", "cyberdyne")  # cyberdyne: no sample data, a test loads its own


class Reader:
    def __init__(self, url: str, keys: dict[str, str], sample: bi_sample.Sample):
        self.url, self.keys, self.sample = url, keys, sample

    def get(self, path: str, key: str | None = "akonovia", headers: dict | None = None, **params) -> requests.Response:
        headers = dict(headers or {})
        if key is not None:
            headers["Authorization"] = f"Bearer {self.keys[key]}"
        return requests.get(f"{self.url}/api/v1/{path}", params=params, headers=headers, timeout=20)

    def json(self, path: str, key: str = "akonovia", **params) -> dict:
        response = self.get(path, key, **params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def reader(pg_server, migrated_template, tmp_path_factory) -> Iterator[Reader]:
    with bi_sample.sample_warehouse(pg_server, migrated_template) as (sample, _):
        warehouse = Warehouse(sample.dsn)
        keys = {}
        for tenant in TENANTS:
            api_keys.create_tenant(warehouse, tenant)
            keys[tenant] = api_keys.create_key(warehouse, tenant, ["read"]).token
        keys["writer"] = api_keys.create_key(warehouse, TENANTS[0], ["write"]).token
        landing = tmp_path_factory.mktemp("landing")
        config = ApiConfig(landing=str(landing))
        ring = api_keys.KeyRing(warehouse, refresh_s=0.5).start()
        writer = PushWriter(config)
        app = create_app(config=config, keys=ring, writer=writer, reader=warehouse,
                         remembered=IdempotencyStore(landing / "idempotency", config.idempotency_ttl),
                         retention=RetentionConfig())
        try:
            with serving(app) as url:
                yield Reader(url, keys, sample)
        finally:
            ring.stop()
            writer.close()


def raw(sample: bi_sample.Sample, sql: str, params=()) -> list[tuple]:
    with psycopg.connect(sample.dsn) as conn:
        return conn.execute(sql, params).fetchall()


def points_of(sample, series_id: int, start: datetime, end: datetime) -> tuple[np.ndarray, np.ndarray]:
    rows = raw(sample, "SELECT extract(epoch FROM ts)::float8, value FROM metrics.points WHERE series_id = %s AND ts >= %s "
                       "AND ts < %s ORDER BY ts", (series_id, start, end))
    return np.array([r[0] for r in rows]), np.array([r[1] for r in rows])


def tenant_of(sample, series_ids) -> set[str]:
    return {t for (t,) in raw(sample, "SELECT tenant FROM metrics.series WHERE series_id = ANY(%s)", (list(series_ids),))}


def lower_quantile(values: np.ndarray, q: float) -> float:
    return float(np.quantile(values, q, method="lower"))


def test_series_are_the_keys_tenants_only_filtered_and_paged(reader):
    everything = reader.json("series", limit=10_000)["items"]
    assert everything and tenant_of(reader.sample, [s["series_id"] for s in everything]) == {"akonovia"}
    assert {s["source"] for s in everything} == {"host", "cloudwatch"}
    cpu = reader.json("series", metric="host_cpu_percent")["items"]
    assert [(s["resource"], s["unit"]) for s in cpu] == [("web-1", "percent")]
    data = reader.json("series", **{"label.mount": "/data"})["items"]
    assert [s["labels"]["mount"] for s in data] == ["/data"]
    both = reader.json("series", metric=["host_cpu_percent", "host_load1"])["items"]
    assert {s["metric"] for s in both} == {"host_cpu_percent", "host_load1"}
    pages, cursor = [], None
    while True:
        page = reader.json("series", limit=3, **({"cursor": cursor} if cursor else {}))
        pages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == everything
    other = reader.json("series", key="boreal-logistique", limit=10_000)["items"]
    assert tenant_of(reader.sample, [s["series_id"] for s in other]) == {"boreal-logistique"}
    assert not {s["series_id"] for s in other} & {s["series_id"] for s in everything}


def test_latest_is_each_series_newest_sample_and_its_age(reader):
    items = reader.json("latest", source="host")["items"]
    assert items and all(i["source"] == "host" for i in items)
    for item in items:
        (ts, value), = raw(reader.sample, "SELECT ts, value FROM metrics.points WHERE series_id = %s "
                                          "ORDER BY ts DESC LIMIT 1", (item["series_id"],))
        assert datetime.fromisoformat(item["ts"]) == ts and item["value"] == value
        age = (datetime.now(timezone.utc) - ts).total_seconds()
        assert age - 60 < item["age_s"] <= age + 1
    assert tenant_of(reader.sample, [i["series_id"] for i in items]) == {"akonovia"}


@pytest.mark.parametrize(("step", "tier"), [("60", "raw"), ("5m", "5m"), ("15m", "5m"), ("1h", "1h")])
@pytest.mark.parametrize("stat", query.STATISTICS)
def test_history_matches_the_raw_points_whatever_the_tier(reader, step, tier, stat):
    sample = reader.sample
    answer = reader.json("query", metric="host_cpu_percent", step=step, stat=stat,
                         **{"from": sample.start.isoformat(), "to": sample.end.isoformat()})
    assert answer["tier"] == tier and answer["statistic"] == stat
    width = query.parse_step(step)
    assert answer["step"] == width.total_seconds()
    (series,) = answer["series"]
    epochs, values = points_of(sample, series["series_id"], sample.start, sample.end)
    buckets = (epochs // width.total_seconds()) * width.total_seconds()
    expected = {}
    for bucket in np.unique(buckets):
        chunk = values[buckets == bucket]
        expected[bucket] = {"avg": chunk.mean(), "min": chunk.min(), "max": chunk.max(), "sum": chunk.sum(),
                            "count": len(chunk), "last": chunk[-1], "p50": lower_quantile(chunk, 0.5),
                            "p95": lower_quantile(chunk, 0.95), "p99": lower_quantile(chunk, 0.99)}[stat]
    steps = [ts for ts, _ in series["points"]]
    assert steps == list(range(int(sample.start.timestamp()), int(sample.end.timestamp()), int(width.total_seconds())))
    got = {ts: value for ts, value in series["points"] if value is not None}
    assert set(got) == set(expected)
    for bucket, value in got.items():
        if stat.startswith("p") and tier != "raw":  # a sketch: within 1 % of the sample of that rank
            assert abs(value - expected[bucket]) <= 0.01 * abs(expected[bucket]) + 1e-9
        else:
            assert value == pytest.approx(expected[bucket], rel=1e-12)


def test_history_is_tenant_scoped_and_limits_say_which_step_fits(reader, monkeypatch):
    sample = reader.sample
    span = {"from": sample.start.isoformat(), "to": sample.end.isoformat()}
    mine = reader.json("query", metric="aws_ec2_cpuutilization", step="1h", **span)["series"]
    assert mine and tenant_of(sample, [s["series_id"] for s in mine]) == {"akonovia"}
    too_fine = reader.get("query", step="1s", **{"from": (sample.end - timedelta(days=1)).isoformat(),
                                                  "to": sample.end.isoformat()})
    assert too_fine.status_code == 400 and "raise the step" in too_fine.json()["detail"]
    series = len(reader.json("series")["items"])
    monkeypatch.setattr(query, "MAX_TOTAL_POINTS", 10_800 * series - 1)  # the server runs in this process
    many = reader.get("query", step="1s", **span)  # 10,800 steps x every series of the tenant
    assert many.status_code == 400 and "raise the step to at least 5s" in many.json()["detail"]
    monkeypatch.undo()
    assert reader.get("query", step="1s", **span).status_code == 200
    old = reader.get("query", step="60", **{"from": (sample.end - timedelta(days=30)).isoformat(),
                                            "to": (sample.end - timedelta(days=29)).isoformat()})
    assert old.status_code == 400 and "multiple of 5m" in old.json()["detail"]
    assert reader.get("query", step="sometimes").status_code == 400
    assert reader.get("query", stat="median").status_code == 400
    assert reader.get("query", **{"from": "yesterday"}).status_code == 400
    default = reader.json("query", metric="host_cpu_percent", **span)
    assert default["step"] == 60 and default["tier"] == "raw"  # 3 h / 300 -> 36 s -> 60 s
    assert (default["from"], default["to"]) == (sample.start.timestamp(), sample.end.timestamp())
    gap = reader.json("query", key="boreal-logistique", metric="host_cpu_percent", resource="db-1", step="5m",
                      **span)["series"][0]["points"]  # db-1's CPU stops for 30 minutes in the second hour
    assert len(gap) == 36 and [v is None for _, v in gap].count(True) == 6


def test_a_summary_reads_each_piece_of_the_span_from_the_coarsest_tier_holding_it_whole(reader):
    sample = reader.sample
    h = timedelta(hours=1)
    start, end = sample.start + timedelta(minutes=7), sample.end - timedelta(minutes=11)
    for lo, hi, pieces in (
            (sample.start, sample.end, [("1h", sample.start, sample.end)]),
            (start, end, [("raw", start, start + timedelta(minutes=3)), ("5m", start + timedelta(minutes=3), sample.start + h),
                          ("1h", sample.start + h, sample.end - h), ("5m", sample.end - h, end - timedelta(minutes=4)),
                          ("raw", end - timedelta(minutes=4), end)])):
        answer = reader.json("summary", metric="host_cpu_percent", **{"from": lo.isoformat(), "to": hi.isoformat()})
        assert answer["pieces"] == [{"tier": t, "from": a.timestamp(), "to": b.timestamp()} for t, a, b in pieces]
        assert (answer["from"], answer["to"]) == (lo.timestamp(), hi.timestamp())
        (row,) = answer["series"]
        _, values = points_of(sample, row["series_id"], lo, hi)
        assert row["count"] == len(values) and row["min"] == values.min() and row["max"] == values.max()
        assert row["avg"] == pytest.approx(values.mean(), rel=1e-12) and row["last"] == values[-1]
        p95 = lower_quantile(values, 0.95)
        assert abs(row["p95"] - p95) <= 0.01 * abs(p95)
        health = raw(sample, "SELECT sum(received), sum(expected), sum(above_warning_s), sum(above_critical_s) "
                             "FROM metrics.series_health_hourly WHERE series_id = %s AND bucket >= %s AND bucket < %s",
                     (row["series_id"], lo.replace(minute=0), hi))[0]
        assert row["completeness"] == pytest.approx(min(1, health[0] / health[1]))
        assert row["above_warning_s"] == pytest.approx(health[2]) and row["above_critical_s"] == pytest.approx(health[3])
        assert row["above_critical_s"] > 0 and row["critical_threshold"] == 95
    short = reader.json("summary", metric="host_cpu_percent", **{"from": (start + timedelta(seconds=30)).isoformat(),
                                                                 "to": (start + timedelta(minutes=2)).isoformat()})
    (row,) = short["series"]  # all raw: the p95 is exact
    _, values = points_of(sample, row["series_id"], start + timedelta(seconds=30), start + timedelta(minutes=2))
    assert short["pieces"][0]["tier"] == "raw" and row["p95"] == lower_quantile(values, 0.95)
    db = reader.json("summary", key="boreal-logistique", metric="host_cpu_percent",
                     **{"from": sample.start.isoformat(), "to": sample.end.isoformat()})["series"]
    assert [r["resource"] for r in db] == ["db-1"] and db[0]["completeness"] < 1  # its 30-minute gap


def test_the_hour_in_progress_is_read_from_raw_points_not_from_rollups_not_refreshed_yet(reader):
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0)
    ts = pd.date_range(hour, datetime.now(timezone.utc), freq="20s", inclusive="left")
    frame = points_frame([{"metric": "queue_depth", "resource": "", "labels": {"tenant": "cyberdyne"},
                           "unit": "count", "ts": ts, "value": np.arange(len(ts), dtype=float)}])
    loader.load_points(Warehouse(reader.sample.dsn), frame, source="custom", start=hour, end=hour + timedelta(hours=1))
    window = {"from": (hour - timedelta(hours=2)).isoformat(), "to": datetime.now(timezone.utc).isoformat()}
    summary = reader.json("summary", key="cyberdyne", **window)
    assert summary["pieces"][-1]["tier"] == "raw" and summary["series"][0]["count"] == len(ts)
    history = reader.json("query", key="cyberdyne", step="5m", stat="count", **window)
    assert history["tier"] == "5m"  # no 5-minute rows exist for this hour: its steps come from raw points
    counts = [v for _, v in history["series"][0]["points"] if v is not None]
    assert sum(counts) == len(ts)


def test_a_summary_over_whole_days_reads_daily_rollups_and_daily_health(reader):
    """Days read one rollup row and one health row each (series_health_daily): the same answer as
    the points and the hourly health, and JSON numbers (not decimals) for the sums."""
    first = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=5)
    end = first + timedelta(days=3)
    ts = pd.date_range(first, end, freq="10min", inclusive="left")
    ts = ts[(ts < first + timedelta(hours=30)) | (ts >= first + timedelta(hours=33))]  # three silent hours
    values = 60 + 39 * np.sin(np.arange(len(ts)) / 7.0)
    frame = points_frame([{"metric": "host_cpu_percent", "resource": "batch-7", "labels": {"tenant": "cyberdyne"},
                           "unit": "percent", "ts": ts, "value": values}])
    warehouse = Warehouse(reader.sample.dsn)
    loader.load_points(warehouse, frame, source="custom", start=first, end=end)
    rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], first, end)
    rollups.refresh_health(warehouse, first, end, now=end)
    rollups.refresh(warehouse, ["rollup_1d"], first, end)
    for lo, hi, tiers in ((first, end, ["1d"]), (first + timedelta(hours=5), end - timedelta(hours=4), ["1h", "1d", "1h"])):
        answer = reader.json("summary", key="cyberdyne", metric="host_cpu_percent",
                             **{"from": lo.isoformat(), "to": hi.isoformat()})
        assert [p["tier"] for p in answer["pieces"]] == tiers
        (row,) = answer["series"]
        inside = values[(ts >= lo) & (ts < hi)]
        assert row["count"] == len(inside) and row["max"] == inside.max() and row["min"] == inside.min()
        health = raw(reader.sample, "SELECT sum(received), sum(expected), sum(above_warning_s), sum(above_critical_s), "
                                    "count(*) FROM metrics.series_health_hourly WHERE series_id = %s "
                                    "AND bucket >= %s AND bucket < %s", (row["series_id"], lo, hi))[0]
        assert row["health_hours"] == health[4] == (hi - lo) / timedelta(hours=1)
        assert row["completeness"] == pytest.approx(health[0] / health[1]) and row["completeness"] < 1
        assert row["above_warning_s"] == pytest.approx(health[2]) and row["above_warning_s"] > 0
        assert row["above_critical_s"] == pytest.approx(health[3])


def test_a_summary_over_months_adds_up_monthly_sketches_to_the_same_percentile(reader):
    """Whole UTC months read one monthly sketch each (migration 0028): the p95 is the daily sketches'
    (within 1 % of the exact sample), whichever mix of months and days the span is cut into."""
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
    first = end - timedelta(days=80)
    ts = pd.date_range(first, end, freq="30min", inclusive="left")
    values = np.random.default_rng(5).lognormal(3.0, 0.8, len(ts))
    frame = points_frame([{"metric": "queue_wait_ms", "resource": "q-1", "labels": {"tenant": "cyberdyne"},
                           "unit": "ms", "ts": ts, "value": values}])
    warehouse = Warehouse(reader.sample.dsn)
    loader.load_points(warehouse, frame, source="custom", start=first, end=end)
    rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], first, end)
    rollups.refresh(warehouse, ["rollup_1d"], first, end)
    assert raw(reader.sample, "SELECT count(*) FROM metrics.rollup_1mo_sketch k JOIN metrics.series s "
                              "USING (series_id) WHERE s.metric = 'queue_wait_ms'")[0][0] == 3
    for lo, hi in ((first, end), (first + timedelta(days=3, hours=5), end - timedelta(days=2))):
        (row,) = reader.json("summary", key="cyberdyne", metric="queue_wait_ms",
                             **{"from": lo.isoformat(), "to": hi.isoformat()})["series"]
        inside = values[(ts >= lo) & (ts < hi)]
        assert row["count"] == len(inside) and row["max"] == inside.max()
        exact = lower_quantile(inside, 0.95)
        assert abs(row["p95"] - exact) <= 0.01 * exact


def test_alerts_are_the_tenants_filtered_by_state_and_severity(reader):
    firing = reader.json("alerts")["items"]
    assert [a["alertname"] for a in firing] == ["HostCpuCritical"] and firing[0]["ends_at"] is None
    everything = reader.json("alerts", state="any")["items"]
    assert {a["alertname"] for a in everything} == {"HostCpuCritical", "IngestionFailureRate"}
    assert [a["alert_id"] for a in everything] == sorted((a["alert_id"] for a in everything), reverse=True)
    assert reader.json("alerts", state="any", severity="warning")["items"][0]["alertname"] == "IngestionFailureRate"
    recent = reader.json("alerts", state="any", since=(reader.sample.now - timedelta(hours=1)).isoformat())["items"]
    assert [a["alertname"] for a in recent] == ["HostCpuCritical"]
    theirs = reader.json("alerts", key="boreal-logistique")["items"]
    assert [a["alertname"] for a in theirs] == ["FilesystemUsageWarning"]
    assert reader.get("alerts", state="sometimes").status_code == 400


@pytest.mark.parametrize("path", ["series", "latest", "query", "summary", "alerts"])
def test_every_endpoint_needs_a_read_key_and_speaks_csv(reader, path):
    assert reader.get(path, key=None).status_code == 401
    assert reader.get(path, key="writer").status_code == 403
    params = {"metric": "host_cpu_percent", "state": "any"}
    as_json = reader.json(path, **params)
    response = reader.get(path, headers={"Accept": "text/csv"}, **params)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    if path == "query":
        expected = sum(len(s["points"]) for s in as_json["series"])  # one row per (series, step), empty ones too
    else:
        expected = len(as_json.get("items", as_json.get("series", [])))
    assert len(rows) == 1 + expected and expected > 0


RETENTION = RetentionConfig()
NOW = datetime(2026, 12, 6, 13, 37, 11, tzinfo=timezone.utc)
steps = st.sampled_from([1, 10, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 86400, 604800])


@given(back=st.integers(0, 400 * 86400), length=st.integers(1, 30 * 86400), step=steps)
@settings(max_examples=300, deadline=None)
def test_the_chosen_tier_serves_whole_steps_of_data_retention_still_holds(back, length, step):
    start = NOW - timedelta(seconds=back)
    end, width = start + timedelta(seconds=length), timedelta(seconds=step)
    try:
        tier, lo, hi = query.choose_tier(start, end, width, NOW, RETENTION)
    except query.BadQuery:
        assert all(start - (start - query.ORIGIN) % width < NOW - query.kept(t, RETENTION) or
                   (not t.raw and width % t.width) for t in query.TIERS)
        return
    assert lo <= start < end <= hi and (lo - query.ORIGIN) % width == timedelta(0) == (hi - query.ORIGIN) % width
    assert lo >= NOW - query.kept(tier, RETENTION) and (tier.raw or width % tier.width == timedelta(0))
    coarser = query.TIERS[query.TIERS.index(tier) + 1:]
    assert not [t for t in coarser if width % t.width == timedelta(0) and lo >= NOW - query.kept(t, RETENTION)]
    default = query.default_step(start, end, NOW, RETENTION)
    if start >= NOW - RETENTION.rollup_1d + timedelta(days=1):
        query.choose_tier(start, end, default, NOW, RETENTION)  # the default step always has a tier


@given(back=st.integers(0, 800 * 86400), length=st.integers(1, 400 * 86400), seconds=st.integers(0, 86399))
@settings(max_examples=400, deadline=None)
def test_summary_pieces_tile_the_span_each_from_a_tier_holding_it_whole(back, length, seconds):
    start = NOW.replace(hour=0, minute=0, second=0) - timedelta(days=back // 86400, seconds=seconds)
    end = min(start + timedelta(seconds=length), NOW + timedelta(hours=2))
    if end <= start:
        return
    pieces, lo, hi = query.summary_pieces(start, end, NOW, RETENTION)
    assert lo <= start and hi >= end and pieces[0][1] == lo and pieces[-1][2] == hi
    assert all(a < b for _, a, b in pieces) and all(p[2] == q[1] for p, q in zip(pieces, pieces[1:]))
    in_progress = NOW.replace(minute=0, second=0, microsecond=0)
    for tier, a, b in pieces:
        assert a >= NOW - query.kept(tier, RETENTION) or (tier.raw and a >= NOW - RETENTION.points)
        if not tier.raw:
            assert (a - query.ORIGIN) % tier.width == timedelta(0) == (b - query.ORIGIN) % tier.width and b <= in_progress
    if start >= NOW - RETENTION.points:
        assert (lo, hi) == (start, end)  # raw points hold the edges: the span is the one asked for
    # Daily pieces: whole UTC months (one monthly sketch each) and the days left, tiling them exactly.
    dailies = [p for p in pieces if p[0].name == "1d"]
    days, months = query.month_spans(dailies)
    assert all(a.day == 1 and b.day == 1 and a.hour == 0 == b.hour for _, a, b in months)
    assert not [(a, b) for _, a, b in days if query._month(a, up=True) < query._month(b)]  # no whole month left
    parts = sorted((a, b) for _, a, b in days + months)
    assert all(p[1] <= q[0] for p, q in zip(parts, parts[1:]))  # no day read twice
    assert all(any(x <= a and b <= y for _, x, y in dailies) for a, b in parts)  # none outside the daily pieces
    assert sum((b - a for a, b in parts), timedelta(0)) == sum((b - a for _, a, b in dailies), timedelta(0))
    # Series health: the daily pieces' days and every other hour overlapping the span, none twice.
    hour = timedelta(hours=1)
    days, hours = query.health_spans(pieces)
    assert days == [(a, b) for tier, a, b in pieces if tier.name == "1d"]
    read = [a + i * hour for a, b in days + hours for i in range(int((b - a) / hour))]
    first = lo - (lo - query.ORIGIN) % hour
    assert len(read) == len(set(read)) and set(read) == {first + i * hour for i in range(int(-(-(hi - first) // hour)))}


@given(arrays=st.lists(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=40), max_size=30),
       wide=st.lists(st.lists(st.integers(-(2**63), 2**63 - 1), max_size=40), max_size=30))
@settings(max_examples=60, deadline=None)
def test_sketch_arrays_decode_in_one_gather_exactly_as_postgresql_sent_them(reader, arrays, wide):
    """`_elements` reads many array_send blobs at once: empty arrays, extremes, any lengths."""
    with psycopg.connect(reader.sample.dsn) as conn:
        cursor = conn.cursor(binary=True)
        blobs = [cursor.execute("SELECT array_send(%s::integer[])", (a,)).fetchone()[0] for a in arrays]
        wide_blobs = [cursor.execute("SELECT array_send(%s::bigint[])", (a,)).fetchone()[0] for a in wide]
    values, sizes = query._elements(blobs, wide=False)
    assert values.tolist() == [v for a in arrays for v in a] and sizes.tolist() == [len(a) for a in arrays]
    values, sizes = query._elements(wide_blobs, wide=True)
    assert values.tolist() == [v for a in wide for v in a] and sizes.tolist() == [len(a) for a in wide]


def _rank_key_naive(bins: dict[int, int], percent: int) -> int:
    """The bin of the sample of rank floor(q (n - 1)), walking the bins in order (no numpy)."""
    n, running = sum(bins.values()), 0
    for key in sorted(bins):
        running += bins[key]
        if running * 100 > percent * (n - 1):
            return key
    raise AssertionError("unreachable")


@given(rows=st.lists(st.tuples(st.integers(0, 5),
                               st.lists(st.tuples(st.one_of(st.integers(999_000, 1_001_000),
                                                            st.integers(-1_001_000, -999_000), st.just(0)),
                                                  st.integers(1, 10**12)), max_size=12)), max_size=25),
       percents=st.lists(st.integers(0, 100), min_size=1, max_size=3), cells=st.sampled_from([1 << 22, 7]))
@settings(max_examples=150, deadline=None)
def test_every_groups_percentile_bin_is_the_one_a_walk_through_its_bins_finds(rows, percents, cells):
    """`_rank_keys` ranks all groups at once (rows of a group in any order, repeated bins, groups
    without samples, keys of both signs, passes of a few groups when bins are many) as a walk
    through each group's bins in order does."""
    groups = np.array([g for g, bins in rows for _ in bins], dtype=np.int64)
    keys = np.array([k for _, bins in rows for k, _ in bins], dtype=np.int64)
    counts = np.array([c for _, bins in rows for _, c in bins], dtype=np.int64)
    ranked = query._rank_keys(groups, 6, keys, counts, percents, cells)
    for group in range(6):
        bins: dict[int, int] = {}
        for g, pairs in rows:
            for k, c in pairs:
                if g == group:
                    bins[k] = bins.get(k, 0) + c
        assert ranked[group].tolist() == [_rank_key_naive(bins, p) if bins else -1 for p in percents]


def test_history_points_are_the_servers_json_spliced_and_read_as_lists():
    points = query.Points('[[1700000000, 1.5], [1700000060, null]]')
    assert points == [[1700000000, 1.5], [1700000060, None]] and len(points) == 2 and points[1][1] is None
    assert points.text.startswith("[[1700000000")


def test_an_answer_read_in_several_statements_sees_one_snapshot(reader):
    """A summary reads rows, sketches and health in separate statements: a load committing in between
    must not show in the later ones (as_tenant reads at REPEATABLE READ)."""
    warehouse = Warehouse(reader.sample.dsn)
    count = "SELECT count(*) FROM metrics.v_series WHERE metric = 'snapshot_probe'"
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=30)
    with as_tenant(warehouse, "cyberdyne") as conn:
        assert conn.execute(count).fetchone()[0] == 0
        frame = points_frame([{"metric": "snapshot_probe", "resource": "", "labels": {"tenant": "cyberdyne"},
                               "unit": "count", "ts": pd.DatetimeIndex([hour]), "value": np.array([1.0])}])
        loader.load_points(warehouse, frame, source="custom", start=hour, end=hour + timedelta(hours=1))
        assert conn.execute(count).fetchone()[0] == 0
    with as_tenant(warehouse, "cyberdyne") as conn:
        assert conn.execute(count).fetchone()[0] == 1


def test_the_sketch_cache_keeps_an_entry_for_its_version_within_its_budget_and_age():
    cache = query.SketchCache(budget_bytes=3 * (16 + 16 + 256), ttl_s=3600)
    k, n = np.array([1, 2]), np.array([5, 6])
    for i in range(3):
        cache.put(("db", 1, i, 0), 10, k, n)
    assert cache.get(("db", 1, 0, 0), 11) is None  # the row changed: dropped
    assert cache.get(("db", 1, 1, 0), 10)[0].tolist() == [1, 2]  # used: now the most recent
    cache.put(("db", 1, 3, 0), 10, k, n)
    cache.put(("db", 1, 4, 0), 10, k, n)  # over budget: the least recently used (2) goes
    assert cache.get(("db", 1, 2, 0), 10) is None and cache.get(("db", 1, 1, 0), 10) is not None
    assert len(cache) == 3
    old = query.SketchCache(ttl_s=0.0)
    old.put(("db", 1, 0, 0), 10, k, n)
    assert old.get(("db", 1, 0, 0), 10) is None  # too old
    off = query.SketchCache(budget_bytes=0)
    off.put(("db", 1, 0, 0), 10, k, n)
    assert len(off) == 0


def test_summaries_from_cached_sketches_equal_fresh_ones_after_their_rows_are_rewritten(reader):
    """The API keeps decoded sketches by row version (migration 0030): a summary answered from the
    cache is the one a cold read gives, and a rollup re-run over changed points (new row versions)
    is seen at once, months, days, hours and 5-minute edges alike."""
    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)
    first = end - timedelta(days=40)
    ts = pd.date_range(first, end, freq="20min", inclusive="left")
    warehouse = Warehouse(reader.sample.dsn)

    def load(values):
        frame = points_frame([{"metric": "cache_probe_ms", "resource": "q-9", "labels": {"tenant": "cyberdyne"},
                               "unit": "ms", "ts": ts, "value": values}])
        loader.load_points(warehouse, frame, source="custom", start=first, end=end)
        rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], first, end)
        rollups.refresh(warehouse, ["rollup_1d"], first, end)

    spans = [(first, end), (first + timedelta(days=2, hours=5), end - timedelta(days=1, hours=3)),
             (end - timedelta(hours=30, minutes=25), end - timedelta(hours=2, minutes=5))]

    def answers():
        return [reader.json("summary", key="cyberdyne", metric="cache_probe_ms",
                            **{"from": a.isoformat(), "to": b.isoformat()})["series"] for a, b in spans]

    rng = np.random.default_rng(11)
    load(rng.lognormal(2.0, 0.5, len(ts)))
    query.SKETCHES.clear()
    cold = answers()
    assert len(query.SKETCHES) > 0 and answers() == cold  # warm: the same
    load(rng.lognormal(4.0, 0.9, len(ts)))  # every row rewritten: new versions
    warm = answers()
    query.SKETCHES.clear()
    assert warm == answers() and warm != cold


@given(epochs=st.sets(st.integers(0, 200), max_size=60), most=st.integers(1, 20))
@settings(max_examples=200, deadline=None)
def test_the_runs_of_missing_buckets_cover_them_and_little_else(epochs, most):
    width = 3600
    buckets = {e * width for e in epochs}
    runs = query._runs(buckets, width, most)
    covered = {e for e in range(0, 201 * width, width)
               if any(a.timestamp() <= e < b.timestamp() for a, b in runs)}
    assert buckets <= covered and len(runs) <= most
    if len(runs) > 1 or len(buckets) <= 1:
        assert covered == buckets  # exact unless merged into one run
