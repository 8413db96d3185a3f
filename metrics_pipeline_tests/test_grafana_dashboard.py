"""The Grafana dashboard and its provisioning: every query runs, as the BI role, the way Grafana sends it.

Each panel target and each template-variable query of `grafana/dashboards/metrics_pipeline.json` is
interpolated like Grafana does it (variables, then `$__interval`, then the PostgreSQL macros; see
`grafana_sql`) and executed against a warehouse holding a sample of every source, over the
dashboard's default range and over ranges that select each rollup tier. A time-series target must
return a `time` column, sorted, with text labels and numeric values (what Grafana's long-to-wide
conversion accepts); every target must return rows, and columns named by field overrides must exist.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
import yaml

from metrics_pipeline_tests.support import bi_sample
from metrics_pipeline_tests.support.grafana_sql import (
    TimeRange,
    Variable,
    interpolate,
    parse_duration,
    replace_variables,
)

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARD = json.loads((GRAFANA / "dashboards" / "metrics_pipeline.json").read_text())
DATASOURCE = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "metrics_pipeline.yaml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "metrics_pipeline.yaml").read_text())
PG_TYPE = "grafana-postgresql-datasource"

# The dashboard's default range, and ranges that make `$rollup` pick each tier.
RANGES = {"default": None, "7d": "7d", "400d": "400d"}
EXPECTED_TIER = {"default": "5m", "7d": "1h", "400d": "1d"}

NUMERIC = {"int2", "int4", "int8", "float4", "float8", "numeric"}
TEXT = {"text", "varchar", "bpchar", "name"}


def _panels(panels: list[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # collapsed rows hold their panels


PANELS = [p for p in _panels(DASHBOARD["panels"]) if p["type"] != "row"]
TARGETS = [(panel, target) for panel in PANELS for target in panel.get("targets", [])]


def _target_id(item) -> str:
    panel, target = item
    return f"{panel['id']}-{target['refId']}-{re.sub(r'[^A-Za-z0-9]+', '_', panel['title']).strip('_')}"


@pytest.fixture(scope="module")
def sample(pg_server, migrated_template):
    """The sample warehouse and a read-only BI login on it, shared by this module's tests."""
    with bi_sample.sample_warehouse(pg_server, migrated_template) as pair:
        yield pair


@pytest.fixture
def bi_conn(sample) -> Iterator[psycopg.Connection]:
    with psycopg.connect(sample[1], autocommit=True) as conn:
        yield conn


def dashboard_range(now, name: str) -> TimeRange:
    span = RANGES[name]
    if span is None:
        assert DASHBOARD["time"]["to"] == "now"
        span = DASHBOARD["time"]["from"].removeprefix("now-")
    return TimeRange.relative(now, span)


def panel_range(panel: dict, dashboard: TimeRange) -> TimeRange:
    """A panel's relative time (`timeFrom`) replaces the dashboard range; time shifts are not used."""
    assert "timeShift" not in panel, "timeShift is not reproduced by the test"
    if panel.get("timeFrom"):
        return TimeRange.relative(dashboard.end, panel["timeFrom"])
    return dashboard


def resolve_variables(conn: psycopg.Connection, time_range: TimeRange) -> dict[str, Variable]:
    """Run every variable query in order, then select its values as Grafana keeps them.

    The saved `current` value stays selected when the query still offers it ("All" for include-All
    variables); otherwise Grafana selects the first option (All when there is one).
    """
    resolved: dict[str, Variable] = {}
    for spec in DASHBOARD["templating"]["list"]:
        assert spec["type"] == "query", f"variable {spec['name']}: only query variables are reproduced"
        query = spec["query"] if isinstance(spec["query"], str) else spec["query"]["rawSql"]
        rows = conn.execute(interpolate(query, time_range, resolved)).fetchall()
        options = [str(row[0]) for row in rows if row[0] is not None]
        assert options, f"variable ${spec['name']} offers no value on the sample warehouse"
        if spec.get("sort") == 1:  # alphabetical, ascending
            options = sorted(set(options))
        current = spec.get("current", {}).get("value")
        current = [current] if isinstance(current, str) else list(current or [])
        if spec.get("includeAll") and (not current or current == ["$__all"] or not set(current) <= set(options)):
            values = options
        elif current and set(current) <= set(options):
            values = current
        else:
            values = options[:1]
        resolved[spec["name"]] = Variable(spec["name"], tuple(values), multi=bool(spec.get("multi")),
                                          include_all=bool(spec.get("includeAll")))
    return resolved


def run_target(conn, panel, target, range_name, now):
    dashboard = dashboard_range(now, range_name)
    variables = resolve_variables(conn, dashboard)
    sql = interpolate(target["rawSql"], panel_range(panel, dashboard), variables)
    cur = conn.execute(sql)
    columns = [(c.name, conn.adapters.types.get(c.type_code).name) for c in cur.description]
    return sql, columns, cur.fetchall()


# ---------------------------------------------------------------------------- static checks


def test_the_dashboard_is_a_current_grafana_dashboard_on_the_provisioned_datasource():
    assert DASHBOARD["schemaVersion"] >= 41 and DASHBOARD["uid"] and DASHBOARD["title"]
    assert DASHBOARD["timezone"] == "utc"  # bucket days are UTC days
    ds = DATASOURCE["datasources"][0]
    ref = {"type": PG_TYPE, "uid": ds["uid"]}
    ids = [p["id"] for p in _panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert len(TARGETS) >= 20
    for panel in PANELS:
        assert panel["datasource"] == ref, panel["title"]
        assert panel["targets"], panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == ref and target["rawQuery"] and target["editorMode"] == "code"
            assert target["format"] in ("time_series", "table"), panel["title"]
            if panel["type"] == "timeseries":
                assert target["format"] == "time_series", panel["title"]
            assert re.search(r"\bmetrics\.v_\w+", target["rawSql"]), f"{panel['title']}: read the BI views"
    for spec in DASHBOARD["templating"]["list"]:
        assert spec["datasource"] == ref, spec["name"]


def test_the_dashboard_covers_every_source_and_topic():
    sql = "\n".join(t["rawSql"] for _, t in TARGETS)
    for needle in ("host_cpu_percent", "host_memory_percent", "host_filesystem_used_percent", "metrics.v_latest",
                   "aws_ec2_cpuutilization", "whatap_server_cpu", "metrics.v_series_health_hourly",
                   "metrics.v_sla_daily", "time_since_last_success_s", "sla_breaches", "metrics.v_alerts",
                   "metrics.v_anomalies", "$__timeFilter(bucket_start)"):
        assert needle in sql, needle
    assert {v["name"] for v in DASHBOARD["templating"]["list"]} >= {"host", "metric", "company"}


def test_the_datasource_is_provisioned_read_only_from_the_environment():
    assert DATASOURCE["apiVersion"] == 1
    [ds] = DATASOURCE["datasources"]
    assert ds["type"] == PG_TYPE and ds["uid"] == "metrics-pipeline-pg" and ds["access"] == "proxy"
    assert ds["user"] == "${METRICS_PIPELINE_BI_USER}"
    assert ds["jsonData"]["database"] == "${METRICS_PIPELINE_BI_DATABASE}"
    assert ds["url"] == "${METRICS_PIPELINE_BI_HOST}"
    assert ds["secureJsonData"] == {"password": "${METRICS_PIPELINE_BI_PASSWORD}"}
    assert "password" not in ds and "password" not in ds["jsonData"]
    # Every variable the provisioning files read is documented in grafana/README.md.
    readme = (GRAFANA / "README.md").read_text()
    for path in (GRAFANA / "provisioning").rglob("*.yaml"):
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", path.read_text()):
            assert f"`{name}`" in readme, f"{path.name}: {name} is not documented in grafana/README.md"


def test_the_dashboard_provider_loads_the_dashboards_folder():
    assert PROVIDERS["apiVersion"] == 1
    [provider] = PROVIDERS["providers"]
    assert provider["type"] == "file" and provider["allowUiUpdates"] is False
    path = provider["options"]["path"]
    readme = (GRAFANA / "README.md").read_text()
    assert f"grafana/dashboards:{path}" in readme, "the README's volume mount must match the provider path"


# ---------------------------------------------------------------------------- the macros


@pytest.mark.parametrize("sql, expected", [
    ("resource IN ($host)", "resource IN ('web-1','o''neil')"),
    ("resource IN (${host:sqlstring})", "resource IN ('web-1','o''neil')"),
    ("resource IN ([[host]])", "resource IN ('web-1','o''neil')"),
    ("labels ->> 'statistic' = '$statistic'", "labels ->> 'statistic' = 'Average'"),
    ("metric = '${metric}'", "metric = 'it''s'"),
    ("$__timeFilter(bucket_start)",
     "bucket_start BETWEEN '2026-05-04T10:00:00Z' AND '2026-05-04T11:30:00.25Z'"),
    ("$__timeFrom()::timestamptz", "'2026-05-04T10:00:00Z'::timestamptz"),
    ("$__timeGroupAlias(starts_at, '1h')", 'floor(extract(epoch from starts_at)/3600)*3600 AS "time"'),
    ("$__timeGroup(ts, '5m'), x", 'floor(extract(epoch from ts)/300)*300 AS "time", x'),
    ("$__timeGroup(ts, '5m') ORDER", "floor(extract(epoch from ts)/300)*300 ORDER"),
])
def test_interpolation_is_grafanas(sql, expected):
    from datetime import datetime, timezone

    start = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)
    variables = {
        "host": Variable("host", ("web-1", "o'neil"), multi=True, include_all=True),
        "statistic": Variable("statistic", ("Average",)),
        "metric": Variable("metric", ("it's",)),
    }
    assert interpolate(sql, TimeRange(start, start + timedelta(hours=1, minutes=30, milliseconds=250)),
                       variables) == expected


@pytest.mark.parametrize("sql", ["$__unknownMacro(x)", "resource = '$nosuchvariable'", "${host:json}"])
def test_anything_not_reproduced_fails_loudly(sql):
    from datetime import datetime, timezone

    now = datetime(2026, 5, 4, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        interpolate(sql, TimeRange(now, now), {"host": Variable("host", ("a",), multi=True)})


def test_every_variable_of_the_dashboard_is_used():
    text = json.dumps(DASHBOARD["panels"]) + json.dumps([v["query"] for v in DASHBOARD["templating"]["list"]])
    for spec in DASHBOARD["templating"]["list"]:
        marker = f"@{spec['name']}@"
        variables = {spec["name"]: Variable(spec["name"], (marker,))}
        assert marker in replace_variables(text, variables), f"${spec['name']} is never used"


# ---------------------------------------------------------------------------- against the warehouse


@pytest.mark.parametrize("range_name", list(RANGES))
def test_variable_queries_offer_values_and_pick_the_rollup_tier_for_the_range(sample, bi_conn, range_name):
    warehouse, _ = sample
    variables = resolve_variables(bi_conn, dashboard_range(warehouse.now, range_name))
    assert variables["rollup"].values == (EXPECTED_TIER[range_name],)
    assert set(variables["host"].values) == set(bi_sample.HOSTS)
    assert set(variables["instance"].values) == set(bi_sample.EC2_INSTANCES)
    assert set(variables["whatap_server"].values) == set(bi_sample.WHATAP_SERVERS)
    assert set(variables["company"].values) == set(bi_sample.COMPANIES)
    assert variables["statistic"].values == ("Average",)
    assert variables["metric"].values == ("host_cpu_percent",)


@pytest.mark.parametrize("range_name", list(RANGES))
@pytest.mark.parametrize("item", TARGETS, ids=[_target_id(t) for t in TARGETS])
def test_every_panel_query_runs_as_the_bi_role_and_returns_what_the_panel_needs(sample, bi_conn, item, range_name):
    panel, target = item
    sql, columns, rows = run_target(bi_conn, panel, target, range_name, sample[0].now)
    names = [name for name, _ in columns]
    assert rows, f"{panel['title']}: no rows on the sample warehouse\n{sql}"
    assert len(names) == len(set(names)), f"{panel['title']}: duplicate column names {names}"
    for override in panel["fieldConfig"]["overrides"]:
        if override["matcher"]["id"] == "byName":
            assert override["matcher"]["options"] in names, f"{panel['title']}: override on a missing column"
    if target["format"] != "time_series":
        return
    # Grafana's SQL time series: a column named `time`, ascending; other columns text (labels) or
    # numbers (values); one row per time and label set, or the long-to-wide conversion fails.
    assert "time" in names, f"{panel['title']}: a time series needs a column named time, got {names}"
    t = names.index("time")
    assert columns[t][1] in NUMERIC | {"timestamptz", "timestamp"}, columns[t]
    for name, type_name in columns:
        assert name == "time" or type_name in NUMERIC | TEXT, f"{panel['title']}: column {name} is {type_name}"
    times = [row[t] for row in rows]
    assert times == sorted(times), f"{panel['title']}: rows must be sorted by time"
    label_idx = [i for i, (_, type_name) in enumerate(columns) if type_name in TEXT]
    keys = [(row[t], *(row[i] for i in label_idx)) for row in rows]
    assert len(keys) == len(set(keys)), f"{panel['title']}: several rows for one time and series"
    value_idx = [i for i, (name, type_name) in enumerate(columns) if name != "time" and type_name in NUMERIC]
    assert value_idx, f"{panel['title']}: no value column"


def _by_title(title: str) -> tuple[dict, dict]:
    [item] = [(p, t) for p, t in TARGETS if p["title"] == title]
    return item


def _rows(conn, title, now, range_name="default") -> list[dict]:
    panel, target = _by_title(title)
    _, columns, rows = run_target(conn, panel, target, range_name, now)
    return [dict(zip([c for c, _ in columns], row)) for row in rows]


def test_panels_show_what_the_sample_holds(sample, bi_conn):
    now = sample[0].now
    cpu = _rows(bi_conn, "CPU busy", now)
    assert {r["host"] for r in cpu} == set(bi_sample.HOSTS)
    assert max(r["p95"] for r in cpu if r["host"] == "web-1") == pytest.approx(97.0)
    assert {r["filesystem"] for r in _rows(bi_conn, "Filesystem used", now)} == {
        f"{h}:{m}" for h in bi_sample.HOSTS for m in ("/", "/data")}
    latest = {r["host"]: r for r in _rows(bi_conn, "Latest host values", now)}
    assert latest["web-1"]["cpu_percent"] == 97.0 and latest["db-1"]["fullest_filesystem_percent"] > 83
    assert {r["metric"] for r in _rows(bi_conn, "EC2 CPU utilisation ($statistic)", now)} == set(bi_sample.EC2_INSTANCES)
    whatap = {r["metric"] for r in _rows(bi_conn, "WhaTap server CPU, memory, disk", now)}
    assert whatap == {f"{s} {m}" for s in bi_sample.WHATAP_SERVERS for m in ("cpu", "memory", "disk_used")}
    gaps = {(r["source"], r["resource"]) for r in _rows(bi_conn, "Series with gaps or no data", now)}
    assert ("host", "db-1") in gaps and ("whatap", "web-01") in gaps and ("host", "web-1") not in gaps
    freshness = {(r["company"], r["source_system"]): r for r in _rows(bi_conn, "Time since last success", now)}
    assert freshness[("boreal-logistique", "PowerBI")]["last_success_at"] is None
    # akonovia's Zoho job did not run in the last hour: its last success is older than the others'.
    assert freshness[("akonovia", "PowerBI")]["time_since_last_success_s"] < 80 * 60
    assert freshness[("akonovia", "Zoho")]["time_since_last_success_s"] >= 80 * 60
    rates = {r["metric"]: r["value"] for r in _rows(bi_conn, "Failure rate by company (daily)", now)}
    assert rates == {"akonovia": 0.0, "boreal-logistique": 0.5}
    sla = {(r["company"], r["source_system"]): r for r in _rows(bi_conn, "SLA by job (daily)", now)}
    assert sla[("boreal-logistique", "PowerBI")]["sla_breaches"] == 72 and not sla[("boreal-logistique", "PowerBI")]["sla_met_every_day"]
    active = _rows(bi_conn, "Active alerts", now)
    assert [a["alertname"] for a in active] == ["HostCpuCritical", "FilesystemUsageWarning"]
    assert _rows(bi_conn, "Firing alerts", now) == [{"critical": 1, "warning": 1}]


def test_the_daily_sla_panels_read_their_own_fourteen_days(sample, bi_conn):
    panel, _ = _by_title("SLA by job (daily)")
    dashboard = dashboard_range(sample[0].now, "default")
    assert panel_range(panel, dashboard).start == dashboard.end - parse_duration("14d")
    days = {r["time"] for r in _rows(bi_conn, "Failure rate by company (daily)", sample[0].now)}
    assert len(days) == 3  # the sample's three UTC days, although the dashboard shows 24 hours


def test_the_events_annotation_marks_pushed_events_on_every_panel(bi_conn, sample):
    """Deploys and other pushed events (v_events) show as annotations, with time, text and tags."""
    annotations = [a for a in DASHBOARD["annotations"]["list"] if a.get("datasource", {}).get("type") == PG_TYPE]
    assert annotations, "no annotation reads the warehouse"
    for annotation in annotations:
        target = annotation["target"]
        assert target["rawQuery"] and "metrics.v_events" in target["rawSql"]
        sql = interpolate(target["rawSql"], dashboard_range(sample[0].now, "default"), {})
        cur = bi_conn.execute(sql)
        assert [c.name for c in cur.description] == ["time", "text", "tags"]
        rows = cur.fetchall()
        assert rows and all(text.startswith("deploy: ") for _, text, _ in rows)


def test_the_anomaly_panel_shows_the_most_anomalous_series_with_its_band_and_markers(sample, bi_conn):
    now = sample[0].now
    variables = resolve_variables(bi_conn, dashboard_range(now, "default"))
    series = bi_conn.execute("SELECT metric, resource FROM metrics.v_anomalies WHERE series_id::text = %s LIMIT 1",
                             variables["anomaly_series"].values).fetchone()
    assert series == ("host_cpu_percent", "db-1") or series == ("host_cpu_percent", "web-1")
    band = _rows(bi_conn, "Expected band and anomalies", now)
    assert len(band) == (30 if series[1] == "db-1" else 36)  # three hours of buckets (db-1 is silent half an hour)
    assert all(r["lower"] <= r["expected"] <= r["upper"] for r in band)
    assert [r["anomaly"] for r in band if r["anomaly"] is not None] == [r["value"] for r in band if r["anomaly"]]
    assert sum(r["anomaly"] is not None for r in band) == 1
    recent = _rows(bi_conn, "Recent anomalies", now)
    assert {(r["resource"], r["tenant"]) for r in recent} == {("web-1", "akonovia"), ("db-1", "boreal-logistique")}
    assert all(r["description"].startswith("expected ") for r in recent)

