"""SLA tables equal a pandas recomputation from the raw runs; targets, silent jobs, idempotency, config."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest

from metrics_pipeline.lib import rollups, sla
from metrics_pipeline.lib.sla.config import ConfigError, SlaConfig, load_config, parse_config
from metrics_pipeline.lib.warehouse import partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

DAY = datetime(2026, 3, 2, tzinfo=timezone.utc)
NOW = DAY + timedelta(hours=20, minutes=30)  # the 20:00 hour (and the day) are in progress
KEY = ["company", "zone", "source_system", "object"]
COLUMNS = ["bucket", *KEY, "runs", "successes", "failures", "failure_rate", "duration_p50_s", "duration_p95_s",
           "duration_max_s", "sla_breaches", "last_success_at", "time_since_last_success_s", "cpu_time_s",
           "peak_memory_bytes", "sla_met"]
ROOT = Path(__file__).resolve().parents[3]


# --- data ------------------------------------------------------------------------------------------

def insert_runs(dsn: str, runs: list[dict]) -> None:
    """Rows straight into ingestion_runs (partitions created as the loader would)."""
    starts = [r["started_at"] for r in runs]
    with psycopg.connect(dsn, autocommit=True) as conn:
        partitioning.ensure_partitions(conn, "metrics", "ingestion_runs", min(starts), max(starts) + timedelta(hours=1))
        with conn.cursor() as cur:
            cur.executemany(
                """INSERT INTO metrics.ingestion_runs (sequence_no, company, zone, source_system, object_id, object,
                       transformation, status, started_at, ended_at, duration_s, description, cpu_time_s,
                       memory_used_bytes, source_file, source_position)
                   VALUES (%(seq)s, %(company)s, %(zone)s, %(source_system)s, %(object_id)s, %(object)s, 'REST API',
                           %(status)s, %(started_at)s, %(ended_at)s, %(duration_s)s, NULL, %(cpu_time_s)s,
                           %(memory_used_bytes)s, 'test.jsonl', %(i)s)""",
                [{**r, "seq": f"{i}", "i": i} for i, r in enumerate(runs)],
            )


def run(company, zone, source_system, obj, started_at, duration_s, status="SUCCESS", *, object_id="1",
        cpu_time_s=1.0, memory_used_bytes=1000):
    return {"company": company, "zone": zone, "source_system": source_system, "object": obj, "object_id": object_id,
            "status": status, "started_at": started_at, "ended_at": started_at + timedelta(seconds=duration_s),
            "duration_s": float(duration_s), "cpu_time_s": cpu_time_s, "memory_used_bytes": memory_used_bytes}


def realistic_runs(seed: int = 3) -> list[dict]:
    """Three days of runs before DAY's end, with the cases SLA tables get wrong."""
    rng = np.random.default_rng(seed)
    runs = []
    jobs = [(c, z, s, o) for c in ("akonovia", "boreal") for z in ("1-Raw", "2-Standardized")
            for s, o in (("PowerBI", "Dataset"), ("Zoho", "Deals"))]
    t = DAY - timedelta(days=2)
    while t < DAY + timedelta(days=1):
        for job in jobs:
            for object_id in ("1", "2"):
                if rng.random() < 0.7:
                    start = t + timedelta(seconds=float(rng.uniform(0, 3600)))
                    runs.append(run(*job, start, round(float(rng.lognormal(6.5, 0.9)), 1),
                                    "FAILED" if rng.random() < 0.12 else "SUCCESS", object_id=object_id,
                                    cpu_time_s=None if rng.random() < 0.1 else round(float(rng.uniform(0, 50)), 3),
                                    memory_used_bytes=None if rng.random() < 0.1 else int(rng.integers(1e6, 1e9))))
        t += timedelta(hours=1)
    # A job that stopped at 06:00 on DAY: silent hours must show runs = 0, then a freshness breach.
    for h in range(-30, 6, 2):
        runs.append(run("akonovia", "1-Raw", "Efficy", "Companies", DAY + timedelta(hours=h, minutes=5), 60))
    # A job that only ever failed (new on DAY - 2h): freshness counts from its first run.
    for h in range(-2, 12):
        runs.append(run("boreal", "3-Application", "SharePoint", "Lists", DAY + timedelta(hours=h, minutes=1), 20, "FAILED"))
    # Seen 8 days ago only: outside the 7-day lookback, no row.
    runs.append(run("cedrus", "1-Raw", "Zoho", "Deals", DAY - timedelta(days=8), 30))
    # A run crossing the hour: it counts in 10:00 (its start), its success in 11:00 (its end).
    runs.append(run("cedrus", "1-Raw", "EasyProjects", "Tasks", DAY + timedelta(hours=10, minutes=50), 1800))
    # A success started before midnight that ends at 01:50: not yet a success as of 01:00.
    runs.append(run("cedrus", "1-Raw", "EasyProjects", "Projects", DAY - timedelta(minutes=10), 7200))
    # Runs after `now` (clock skew, or a test's now): no row for their bucket.
    runs.append(run("cedrus", "1-Raw", "EasyProjects", "Tasks", DAY + timedelta(hours=22), 10))
    return runs


# --- reference implementation ----------------------------------------------------------------------

def resolve(config: SlaConfig, key: tuple, field: str) -> float:
    best = None
    for order, rule in enumerate(config.targets):
        value = getattr(rule, field)
        if value is None or any(getattr(rule, f) not in (None, v) for f, v in zip(KEY, key)):
            continue
        if best is None or rule.specificity > best[0]:
            best = (rule.specificity, order, value)
    return best[2] if best else getattr(config.defaults, field)


def expected(runs: list[dict], width: timedelta, start, end, now, config: SlaConfig) -> pd.DataFrame:
    frame = pd.DataFrame(runs)
    frame["key"] = list(zip(*(frame[k] for k in KEY)))
    rows = []
    bucket = start
    while bucket < end and bucket < now:
        as_of = min(bucket + width, now)
        in_bucket = frame[(frame.started_at >= bucket) & (frame.started_at < bucket + width)]
        recent = frame[(frame.started_at >= bucket - config.silent_job_lookback) & (frame.started_at < bucket)]
        for key in sorted(set(in_bucket.key) | set(recent.key)):
            mine = in_bucket[in_bucket.key == key]
            history = frame[frame.key == key]
            ok = history[(history.status == "SUCCESS") & (history.ended_at < as_of)]
            last_success = ok.ended_at.max() if len(ok) else pd.NaT
            since = (as_of - last_success).total_seconds() if len(ok) else np.nan
            age = since if len(ok) else (as_of - history.started_at.min()).total_seconds()
            n, failures = len(mine), int((mine.status == "FAILED").sum())
            rate = failures / n if n else np.nan
            p50, p95 = (np.percentile(mine.duration_s, [50, 95]) if n else (np.nan, np.nan))
            targets = {f: resolve(config, key, f) for f in sla.config.TARGET_FIELDS}
            met = ((not n or rate <= targets["max_failure_rate"]) and (not n or p95 <= targets["max_duration_s"])
                   and age <= targets["max_hours_without_success"] * 3600)
            rows.append([bucket, *key, n, n - failures, failures, rate, p50, p95,
                         mine.duration_s.max() if n else np.nan,
                         int((mine.duration_s > targets["max_duration_s"]).sum()), last_success, since,
                         mine.cpu_time_s.astype(float).sum(min_count=1) if n else np.nan,
                         mine.memory_used_bytes.astype(float).max() if n else np.nan, bool(met)])
        bucket += width
    return normalise(pd.DataFrame(rows, columns=COLUMNS))


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("bucket", "last_success_at"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    for column in ("failure_rate", "duration_p50_s", "duration_p95_s", "duration_max_s", "time_since_last_success_s",
                   "cpu_time_s", "peak_memory_bytes"):
        frame[column] = frame[column].astype(float)
    for column in ("runs", "successes", "failures", "sla_breaches"):
        frame[column] = frame[column].astype(int)
    frame["sla_met"] = frame["sla_met"].astype(bool)
    return frame.sort_values(["bucket", *KEY]).reset_index(drop=True)


def table(dsn: str, name: str) -> pd.DataFrame:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT {', '.join(COLUMNS)} FROM metrics.{name}").fetchall()
    return normalise(pd.DataFrame(rows, columns=COLUMNS))


@pytest.fixture
def runs(warehouse_dsn):
    data = realistic_runs()
    insert_runs(warehouse_dsn, data)
    return data


# --- every column against pandas -------------------------------------------------------------------

TARGETED = parse_config({"targets": [
    {"source_system": "PowerBI", "max_duration_s": 900},
    {"company": "akonovia", "zone": "1-Raw", "max_failure_rate": "20%", "max_hours_without_success": 12},
    # ties with the rules above for some jobs: never chosen for those, chosen where alone
    {"object": "Dataset", "max_duration_s": 100},
    {"zone": "1-Raw", "source_system": "Zoho", "max_failure_rate": 0.5, "max_hours_without_success": 0.5},
]})


@pytest.mark.parametrize("config", [SlaConfig(), TARGETED], ids=["defaults", "targeted"])
def test_every_hourly_column_matches_a_pandas_recomputation_from_the_raw_runs(warehouse_dsn, runs, config):
    start, end = DAY - timedelta(hours=6), DAY + timedelta(days=1)  # 30 hours in one statement
    result = sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", start, end, config, now=NOW)
    got = table(warehouse_dsn, "sla_hourly")
    want = expected(runs, timedelta(hours=1), start, end, NOW, config)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9)
    assert result.rows == len(want) and result.table == "sla_hourly"
    assert result.rows_breaching == int((~want.sla_met).sum()) > 0
    assert result.groups_breaching == want[~want.sla_met][KEY].drop_duplicates().shape[0]
    assert len(result.worst) == 10 and all(r["bucket"] < NOW for r in result.worst)


def test_daily_rows_use_exact_percentiles_over_the_days_raw_runs(warehouse_dsn, runs):
    start, end = DAY - timedelta(days=2), DAY + timedelta(days=2)  # the day after `now` gets no row
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "day", start, end, TARGETED, now=NOW)
    got = table(warehouse_dsn, "sla_daily")
    pd.testing.assert_frame_equal(got, expected(runs, timedelta(days=1), start, end, NOW, TARGETED),
                                  check_exact=False, rtol=1e-9)
    assert got.bucket.max() == pd.Timestamp(DAY)


def test_a_job_that_stopped_running_gets_runs_0_rows_and_then_breaches_freshness(warehouse_dsn, runs):
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), SlaConfig(), now=NOW)
    got = table(warehouse_dsn, "sla_hourly")
    stopped = got[(got.source_system == "Efficy")].set_index("bucket")
    assert len(stopped) == 21  # every hour up to the in-progress 20:00, none after `now`
    silent = stopped[stopped.runs == 0]
    assert len(silent) == 21 - 3  # it ran at 00:05, 02:05 and 04:05 only
    assert silent.failure_rate.isna().all() and silent.duration_p95_s.isna().all() and silent.cpu_time_s.isna().all()
    assert (silent.sla_breaches == 0).all()
    after = silent.loc[pd.Timestamp(DAY + timedelta(hours=5)):]
    assert len(after) == 16 and (after.last_success_at == pd.Timestamp(DAY + timedelta(hours=4, minutes=6))).all()
    in_progress = stopped.loc[pd.Timestamp(DAY + timedelta(hours=20))]
    assert in_progress.time_since_last_success_s == (NOW - DAY - timedelta(hours=4, minutes=6)).total_seconds()
    assert stopped.sla_met.all()  # 16 h 24 min since its last success: under the 24 h default
    strict = parse_config({"defaults": {"max_hours_without_success": 6}})
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), strict, now=NOW)
    stopped = table(warehouse_dsn, "sla_hourly").query("source_system == 'Efficy'").set_index("bucket")
    late = stopped.index[~stopped.sla_met]
    assert late.min() == pd.Timestamp(DAY + timedelta(hours=10))  # as of 11:00, 6 h 54 min without success


def test_jobs_outside_the_lookback_get_no_rows_and_no_bucket_after_now_is_written(warehouse_dsn, runs):
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), SlaConfig(), now=NOW)
    got = table(warehouse_dsn, "sla_hourly")
    assert not ((got.company == "cedrus") & (got.source_system == "Zoho")).any()  # seen 8 days ago only
    assert got.bucket.max() == pd.Timestamp(DAY + timedelta(hours=20))
    short = parse_config({"silent_job_lookback_hours": 2})
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), short, now=NOW)
    stopped = table(warehouse_dsn, "sla_hourly").query("source_system == 'Efficy'")
    assert stopped.bucket.max() == pd.Timestamp(DAY + timedelta(hours=6))  # 04:05 + 2 h lookback


def test_a_job_that_never_succeeded_counts_freshness_from_its_first_run(warehouse_dsn, runs):
    config = parse_config({"defaults": {"max_failure_rate": 1, "max_hours_without_success": 5}})
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), config, now=NOW)
    failing = table(warehouse_dsn, "sla_hourly").query("source_system == 'SharePoint'").set_index("bucket")
    assert failing.last_success_at.isna().all() and failing.time_since_last_success_s.isna().all()
    # first run at DAY - 1:59: 4 h 59 min before the end of the 02:00 bucket, late from 03:00 on
    assert failing.sla_met.loc[:pd.Timestamp(DAY + timedelta(hours=2))].all()
    assert not failing.sla_met.loc[pd.Timestamp(DAY + timedelta(hours=3)):].any()


def test_a_success_counts_for_freshness_when_it_ends_not_when_it_starts(warehouse_dsn, runs):
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(days=1), SlaConfig(), now=NOW)
    got = table(warehouse_dsn, "sla_hourly").query("object == 'Tasks'").set_index("bucket")
    ten, eleven = got.loc[pd.Timestamp(DAY + timedelta(hours=10))], got.loc[pd.Timestamp(DAY + timedelta(hours=11))]
    assert ten.runs == 1 and ten.successes == 1 and pd.isna(ten.last_success_at)  # still running at 11:00
    assert eleven.runs == 0 and eleven.last_success_at == pd.Timestamp(DAY + timedelta(hours=11, minutes=20))
    # The same for a run that started before the window: not a success as of 01:00, one as of 02:00.
    crossing = table(warehouse_dsn, "sla_hourly").query("object == 'Projects'").set_index("bucket")
    assert pd.isna(crossing.loc[pd.Timestamp(DAY)].last_success_at)
    assert crossing.loc[pd.Timestamp(DAY + timedelta(hours=1))].last_success_at == pd.Timestamp(DAY + timedelta(hours=1, minutes=50))


# --- targets ---------------------------------------------------------------------------------------

def test_each_target_comes_from_the_most_specific_matching_rule_ties_to_the_first(warehouse_dsn):
    durations = [100, 200, 300, 400, 500]
    insert_runs(warehouse_dsn, [run("acme", "1-Raw", "PowerBI", "Dataset", DAY + timedelta(minutes=5 * i), d)
                                for i, d in enumerate(durations)]
                + [run("acme", "2-Standardized", "PowerBI", "Dataset", DAY, 450),
                   run("other", "1-Raw", "Zoho", "Deals", DAY, 450)])
    config = parse_config({
        "defaults": {"max_duration_s": 1000},
        "targets": [
            {"source_system": "PowerBI", "max_duration_s": 420},                               # 1 field
            {"zone": "1-Raw", "object": "Dataset", "max_duration_s": 350},                    # 2 fields, first
            {"company": "acme", "zone": "1-Raw", "max_duration_s": 50},                       # 2 fields, tie: loses
            {"company": "acme", "zone": "1-Raw", "source_system": "PowerBI", "max_failure_rate": 0.5},  # sets no duration
            {"company": "nobody", "zone": "1-Raw", "source_system": "PowerBI", "object": "Dataset", "max_duration_s": 1},
        ],
    })
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(hours=1), config, now=DAY + timedelta(days=1))
    breaches = table(warehouse_dsn, "sla_hourly").set_index("company zone".split())["sla_breaches"]
    assert breaches.loc[("acme", "1-Raw")] == 2            # > 350: the first of the two 2-field rules
    assert breaches.loc[("acme", "2-Standardized")] == 1   # > 420: only the PowerBI rule matches
    assert breaches.loc[("other", "1-Raw")] == 0           # > 1000: the defaults


def test_sla_met_needs_failure_rate_p95_and_freshness_within_target(warehouse_dsn):
    start = DAY + timedelta(hours=1)
    insert_runs(warehouse_dsn, [
        run("a", "z", "s", "ok", start, 10), run("a", "z", "s", "ok", start + timedelta(minutes=1), 10, "FAILED"),
        run("a", "z", "s", "slow", start, 100), run("a", "z", "s", "slow", start + timedelta(minutes=1), 2000),
        run("a", "z", "s", "stale", DAY - timedelta(hours=30), 10),
        run("a", "z", "s", "stale", start + timedelta(minutes=1), 10, "FAILED"),
    ])
    config = parse_config({"defaults": {"max_failure_rate": "50%"}})
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", start, start + timedelta(hours=1), config, now=DAY + timedelta(days=1))
    got = table(warehouse_dsn, "sla_hourly").set_index("object")
    assert got.loc["ok"].failure_rate == 0.5 and got.loc["ok"].sla_met            # 50 % <= 50 %
    assert got.loc["slow"].duration_p95_s > 1800 and not got.loc["slow"].sla_met  # p95 over 1800 s
    assert got.loc["stale"].failure_rate == 1.0 and not got.loc["stale"].sla_met  # 1 failure in 1 run
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", start, start + timedelta(hours=1),
                parse_config({"defaults": {"max_failure_rate": 1}}), now=DAY + timedelta(days=1))
    got = table(warehouse_dsn, "sla_hourly").set_index("object")
    assert not got.loc["stale"].sla_met and got.loc["stale"].time_since_last_success_s > 24 * 3600


# --- idempotency and windows -----------------------------------------------------------------------

def test_re_running_a_window_gives_the_identical_table(warehouse_dsn, runs):
    args = (Warehouse(warehouse_dsn), "hour", DAY - timedelta(hours=6), DAY + timedelta(days=1), TARGETED)
    first = sla.refresh(*args, now=NOW)
    before = table(warehouse_dsn, "sla_hourly")
    second = sla.refresh(*args, now=NOW)
    pd.testing.assert_frame_equal(table(warehouse_dsn, "sla_hourly"), before)
    assert second.deleted == first.rows == second.rows
    # Refreshing one hour inside the window replaces that hour only, with the same rows.
    hour = sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY + timedelta(hours=3), DAY + timedelta(hours=4),
                       TARGETED, now=NOW)
    pd.testing.assert_frame_equal(table(warehouse_dsn, "sla_hourly"), before)
    assert hour.deleted == hour.rows == (before.bucket == pd.Timestamp(DAY + timedelta(hours=3))).sum()


def test_a_window_whose_runs_expired_keeps_its_rows(warehouse_dsn, runs):
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "day", DAY, DAY + timedelta(days=1), SlaConfig(), now=NOW)
    before = table(warehouse_dsn, "sla_daily")
    old = sla.refresh(Warehouse(warehouse_dsn, "metrics"), "day", datetime(2025, 1, 1, tzinfo=timezone.utc),
                      datetime(2025, 1, 3, tzinfo=timezone.utc), SlaConfig(), now=NOW)
    assert old.skipped and old.rows == old.deleted == 0
    pd.testing.assert_frame_equal(table(warehouse_dsn, "sla_daily"), before)


def test_an_empty_warehouse_is_skipped_not_an_error(warehouse_dsn):
    result = sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", DAY, DAY + timedelta(hours=1), SlaConfig(), now=NOW)
    assert result.skipped and result.rows == 0


@pytest.mark.parametrize("grain, start, end, message", [
    ("hour", DAY + timedelta(minutes=30), DAY + timedelta(hours=1), "not aligned"),
    ("day", DAY, DAY + timedelta(hours=1), "not aligned"),
    ("hour", DAY, DAY, "empty window"),
    ("week", DAY, DAY + timedelta(days=7), "unknown SLA grain"),
    ("hour", DAY.replace(tzinfo=None), DAY + timedelta(hours=1), "timezone-aware"),
])
def test_windows_must_be_aware_and_aligned_to_the_grain(grain, start, end, message):
    with pytest.raises(ValueError, match=message):
        sla.refresh(Warehouse("dbname=unused"), grain, start, end, SlaConfig(), now=NOW)


# --- configuration ---------------------------------------------------------------------------------

def test_defaults_follow_the_spec_and_the_rollup_thresholds(tmp_path):
    config = load_config(tmp_path / "missing.yaml")
    assert (config.defaults.max_failure_rate, config.defaults.max_duration_s,
            config.defaults.max_hours_without_success) == (0.05, 1800, 24)
    assert config.targets == [] and config.silent_job_lookback == timedelta(days=7)
    assert config.metrics.health_thresholds() == list(rollups.DEFAULT_THRESHOLDS)
    assert config.metrics.no_data_lookback == timedelta(hours=24)
    assert [len(g.metrics) for g in config.metrics.thresholds] == [4, 3, 3]  # grouped by (warning, critical)


def test_the_environment_names_the_config_file_and_the_example_is_valid(tmp_path, monkeypatch):
    path = tmp_path / "sla.yaml"
    path.write_text("defaults:\n  max_failure_rate: 10%\nmetrics:\n  thresholds:\n"
                    "    - {metrics: [host_cpu_percent], warning: 70, critical: 90}\n")
    monkeypatch.setenv(sla.CONFIG_ENV, str(path))
    config = load_config()
    assert config.defaults.max_failure_rate == pytest.approx(0.1)
    assert config.metrics.health_thresholds() == [{"metric": "host_cpu_percent", "warning": 70.0, "critical": 90.0}]
    example = load_config(ROOT / "config" / "sla.example.yaml")
    assert example.targets and example.metrics.thresholds


@pytest.mark.parametrize("raw, message", [
    ({"target": []}, "target: unknown key"),
    ({"defaults": {"max_failure_rate": 5}}, "defaults.max_failure_rate: 5.0 is not a fraction"),
    ({"defaults": {"max_failure_rate": "five%"}}, "defaults.max_failure_rate: 'five%' is not a percentage"),
    ({"defaults": {"max_duration_s": 0}}, "defaults.max_duration_s: Input should be greater than 0"),
    ({"targets": [{"source_system": "Zoho"}]}, "targets[0]: a rule must set at least one of"),
    ({"targets": [{"source": "Zoho", "max_duration_s": 5}]}, "targets[0].source: unknown key"),
    ({"targets": [{"zone": "", "max_duration_s": 5}]}, "targets[0].zone: String should have at least 1 character"),
    ({"silent_job_lookback_hours": 0}, "silent_job_lookback_hours: Input should be greater than or equal to 1"),
    ({"metrics": {"thresholds": [{"metrics": ["host_cpu_percent"], "warning": 90, "critical": 80}]}},
     "metrics.thresholds[0]: critical (80.0) must be at least warning (90.0)"),
    ({"metrics": {"thresholds": [{"metrics": ["a_b"], "warning": 1, "critical": 2},
                                 {"metrics": ["a_b"], "warning": 3, "critical": 4}]}},
     "metrics.thresholds: metric(s) ['a_b'] listed in more than one threshold group"),
    ({"metrics": {"thresholds": [{"metrics": ["CPU"], "warning": 1, "critical": 2}]}},
     "metrics.thresholds[0].metrics[0]: String should match pattern"),
    ({"metrics": {"no_data_lookback": 3}}, "metrics.no_data_lookback: unknown key"),
])
def test_invalid_configuration_names_the_bad_key(raw, message):
    with pytest.raises(ConfigError) as error:
        parse_config(raw, "sla.yaml")
    assert str(error.value).startswith("sla.yaml: ") and message in str(error.value)


def test_broken_yaml_is_a_config_error_naming_the_file(tmp_path):
    path = tmp_path / "sla.yaml"
    path.write_text("defaults: [unclosed\n")
    with pytest.raises(ConfigError, match="sla.yaml: not valid YAML"):
        load_config(path)
