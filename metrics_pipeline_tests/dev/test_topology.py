"""The production topology, end to end, without Docker (SPEC §7, issue 8).

A gRPC code server, `dagster-webserver` and `dagster-daemon` run as three processes on PostgreSQL
instance storage with the repository's own dagster.yaml and workspace.yaml. A backfill of three
hours of every asset is launched through the GraphQL API, the daemon runs it, and we check the
warehouse and the asset check results the runs recorded.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from metrics_pipeline.dev.demo_host import BUSY_HOST
from metrics_pipeline.dev.demo_sources import local_sources
from metrics_pipeline.dev.devserver import sqlalchemy_url
from metrics_pipeline.dev.topology import Topology

HOURLY = ("host_points", "ingestion_log_records", "cloudwatch_points", "whatap_points",
          "rollup_5m", "rollup_1h", "series_health_hourly", "sla_hourly")
DAILY = ("rollup_1d", "sla_daily")

CHECK_EXECUTIONS = """
query($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 100) {
    status partition runId
    evaluation { severity success }
  }
}
"""


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_backfill_through_graphql_on_code_server_webserver_and_daemon(pg_server, warehouse_dsn, tmp_path):
    # Three closed hours of yesterday (the daily partition is closed too, so rollup_1d/sla_daily run).
    day = (datetime.now(timezone.utc) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    start, end = day + timedelta(hours=10), day + timedelta(hours=13)
    first, last = start.strftime("%Y-%m-%d-%H:%M"), (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    dagster_db = pg_server.create_database()
    try:
        with local_sources(tmp_path / "sources", start, end, hosts=(BUSY_HOST, "web-1")) as sources:
            env = {**sources.env, "METRICS_PIPELINE_DSN": warehouse_dsn, "METRICS_PIPELINE_HOME": str(tmp_path / "state")}
            with Topology(tmp_path / "dagster_home", env, sqlalchemy_url(pg_server.dsn(dagster_db))) as topo:
                ranges = {key: (first, last) for key in HOURLY}
                ranges.update({key: (day.strftime("%Y-%m-%d"),) * 2 for key in DAILY})
                backfill = topo.launch_backfill(ranges, title="e2e")
                state = topo.wait_backfill(backfill, timeout=600)
                assert state["status"] == "COMPLETED_SUCCESS", (state, topo.log_tail("daemon"))
                failed = {run["runId"]: topo.run_errors(run["runId"]) for run in state["runs"] if run["status"] != "SUCCESS"}
                assert state["runs"] and not failed, failed
                # Backfill policies put a range in few runs: far fewer runs than asset-partitions.
                assert len(state["runs"]) < len(HOURLY) * 3

                executions = {
                    (asset, check): topo.graphql(CHECK_EXECUTIONS, {"key": {"path": [asset]}, "name": check})["assetCheckExecutions"]
                    for asset, check in [("host_points", "threshold_alerts"), ("host_points", "values_in_range"),
                                         ("host_points", "duplicate_points"), ("ingestion_log_records", "quarantine_ratio"),
                                         ("series_health_hourly", "completeness"), ("sla_hourly", "sla_alerts"),
                                         ("cloudwatch_points", "values_in_range"), ("whatap_points", "values_in_range")]
                }
    finally:
        pg_server.drop_database(dagster_db)

    # Every check ran on every partition of the backfill.
    for (asset, check), runs in executions.items():
        assert {run["partition"] for run in runs} >= {first, last}, (asset, check, runs)
        assert all(run["status"] in {"SUCCEEDED", "FAILED"} for run in runs), (asset, check, runs)
    # The clean data passes its data-quality checks; the busy host fires threshold alerts (a failed
    # WARN check: it does not block the rollups, which still materialised).
    for key in [("host_points", "values_in_range"), ("host_points", "duplicate_points"),
                ("cloudwatch_points", "values_in_range"), ("whatap_points", "values_in_range")]:
        assert all(run["evaluation"]["success"] for run in executions[key]), executions[key]
    fired = [run for run in executions[("host_points", "threshold_alerts")] if not run["evaluation"]["success"]]
    assert fired and {run["evaluation"]["severity"] for run in fired} <= {"WARN", "ERROR"}

    with psycopg.connect(warehouse_dsn) as conn:
        per_source = dict(conn.execute(
            "SELECT s.source, count(*) FROM metrics.points p JOIN metrics.series s USING (series_id) "
            "WHERE p.ts >= %s AND p.ts < %s GROUP BY 1", (start, end)).fetchall())
        assert per_source["host"] == sources.counts["host_samples"]
        assert per_source["cloudwatch"] > 0 and per_source["whatap"] > 0
        records = conn.execute("SELECT count(*) FROM metrics.ingestion_runs WHERE started_at >= %s AND started_at < %s",
                               (start, end)).fetchone()[0]
        quarantined = conn.execute("SELECT count(*) FROM metrics.quarantine").fetchone()[0]
        assert records > 0 and records + quarantined >= sources.counts["ingestion_records"] * 0.95
        hours = conn.execute("SELECT count(DISTINCT bucket) FROM metrics.rollup_1h WHERE bucket >= %s AND bucket < %s",
                             (start, end)).fetchone()[0]
        assert hours == 3
        assert conn.execute("SELECT count(*) FROM metrics.rollup_5m WHERE bucket >= %s AND bucket < %s",
                            (start, end)).fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM metrics.rollup_1d WHERE bucket = %s", (day,)).fetchone()[0] > 0
        assert conn.execute("SELECT count(*) FROM metrics.sla_hourly WHERE bucket >= %s AND bucket < %s",
                            (start, end)).fetchone()[0] > 0
        alerts = conn.execute("SELECT DISTINCT labels->>'resource' FROM metrics.alerts").fetchall()
        assert (BUSY_HOST,) in alerts
