"""Backfill benchmark (SPEC §8): days of every source through every asset and check, through Dagster.

What a user does: the production topology (gRPC code server, webserver, daemon on PostgreSQL
storage, the repository's dagster.yaml and workspace.yaml), demo data for every source over closed
days (host samples at 1 s, CloudWatch at 60 s from the local double, WhaTap from its double,
simulated ingestion logs), and one backfill of every asset over the whole range launched through
the GraphQL API; the daemon runs it. Reported: wall time, points and records per second, runs
launched, and where the time went per run, from Dagster's own records:
  queued       run created -> launched (waiting for a run slot; contention, not overhead)
  start        launched -> the run worker reports RUN_START (process start, imports, code load)
  steps        sum of step durations: our code (API calls, COPY, SQL), with its event writes
  in-run       the rest of the run: resources, event log, teardown
Dagster overhead = (start + in-run) / (launched -> end), summed over runs. `idle` is wall time in
which no run was executing (the backfill daemon wakes every 30 s to launch the next tier and to
mark the backfill done). "No step running" is the share of the wall time in which none of our steps
was executing: every Dagster cost together, idle included.

The reference, measured in the same invocation on a subset of hours: the same backfill with one
run per partition (METRICS_PIPELINE_MAX_PARTITIONS_PER_RUN=1), what Dagster does without our
backfill policies.

    python benchmarks/backfill.py                 # 7 days, 3 hosts, 500 CloudWatch metrics
    python benchmarks/backfill.py --days 1 --subset-hours 3 --no-write   # a quick look
"""

from __future__ import annotations

import argparse
import shutil
import signal
import time
from datetime import datetime, timedelta, timezone

import psycopg
from common import append_result, replace_section
from psycopg.conninfo import make_conninfo

from metrics_pipeline.defs.partitions import hour_key
from metrics_pipeline.dev.demo_sources import local_sources
from metrics_pipeline.dev.devserver import sqlalchemy_url
from metrics_pipeline.dev.topology import Topology
from metrics_pipeline.lib import settings
from metrics_pipeline.lib.warehouse import migrate
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres

HOURLY = ("host_points", "ingestion_log_records", "cloudwatch_points", "whatap_points",
          "rollup_5m", "rollup_1h", "series_health_hourly", "sla_hourly")
DAILY = ("rollup_1d", "sla_daily")

RUN_TIMINGS = """
query($id: ID!) {
  runOrError(runId: $id) {
    ... on Run {
      status creationTime startTime endTime
      stepStats { stepKey startTime endTime }
      eventConnection(afterCursor: null) { events { __typename ... on MessageEvent { timestamp } } }
    }
  }
}
"""


def ranges_for(start: datetime, end: datetime) -> dict[str, tuple[str, str]]:
    ranges = {key: (hour_key(start), hour_key(end - timedelta(hours=1))) for key in HOURLY}
    days = (start.strftime("%Y-%m-%d"), (end - timedelta(seconds=1)).strftime("%Y-%m-%d"))
    ranges.update({key: days for key in DAILY})
    return ranges


def run_timings(topo: Topology, run_ids: list[str]) -> list[dict]:
    timings = []
    for run_id in run_ids:
        run = topo.graphql(RUN_TIMINGS, {"id": run_id})["runOrError"]
        events = run["eventConnection"]["events"]
        launched = next((int(e["timestamp"]) / 1000 for e in events if e["__typename"] == "RunStartingEvent"),
                        run["creationTime"])
        steps = sum((s["endTime"] or 0) - (s["startTime"] or 0) for s in run["stepStats"] if s["startTime"])
        timings.append({
            "status": run["status"], "created": run["creationTime"], "launched": launched,
            "started": run["startTime"] or launched, "ended": run["endTime"] or launched, "steps": steps,
            "by_step": {s["stepKey"]: (s["endTime"] or 0) - (s["startTime"] or 0) for s in run["stepStats"] if s["startTime"]},
            "step_intervals": [(s["startTime"], s["endTime"]) for s in run["stepStats"] if s["startTime"] and s["endTime"]],
        })
    return timings


def _union(intervals) -> float:
    """Seconds covered by at least one of the (start, end) intervals."""
    covered, edge = 0.0, None
    for lo, hi in sorted(intervals):
        lo = lo if edge is None else max(lo, edge)
        if hi > lo:
            covered += hi - lo
        edge = hi if edge is None else max(edge, hi)
    return covered


def summarise(timings: list[dict], wall: float) -> dict:
    queued = sum(t["launched"] - t["created"] for t in timings)
    start = sum(t["started"] - t["launched"] for t in timings)
    steps = sum(t["steps"] for t in timings)
    life = sum(t["ended"] - t["launched"] for t in timings)
    in_run = life - start - steps
    busy = _union((t["launched"], t["ended"]) for t in timings)
    working = _union(i for t in timings for i in t["step_intervals"])
    by_step: dict[str, float] = {}
    for t in timings:
        for key, seconds in t["by_step"].items():
            by_step[key] = by_step.get(key, 0.0) + seconds
    return {"by_step": dict(sorted(by_step.items(), key=lambda kv: -kv[1])), "runs": len(timings), "failed": sum(t["status"] != "SUCCESS" for t in timings), "wall": wall,
            "queued": queued, "start": start, "steps": steps, "in_run": in_run, "life": life,
            "overhead": (start + in_run) / life if life else 0.0, "idle": max(wall - busy, 0.0),
            "wall_share": 1 - working / wall if wall else 0.0}


def backfill(server: EmbeddedPostgres, name: str, start: datetime, end: datetime, args, *, per_run: int | None = None) -> dict:
    """Fresh warehouse and Dagster databases, the topology, one backfill of [start, end); its figures."""
    admin = server.dsn("postgres")
    warehouse, dagster_db = f"bench_{name}", f"bench_{name}_dagster"
    with psycopg.connect(admin, autocommit=True) as conn:
        for db in (warehouse, dagster_db):
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {db}")
    dsn = make_conninfo(admin, dbname=warehouse)
    migrate.migrate(Warehouse(dsn, "metrics"))
    state = settings.state_dir() / "bench-backfill" / name
    shutil.rmtree(state, ignore_errors=True)
    try:
        t0 = time.perf_counter()
        with local_sources(state / "sources", start, end, hosts=[f"bench-host-{i}" for i in range(args.hosts)],
                           cloudwatch_metrics=args.cloudwatch_metrics) as sources:
            generated = time.perf_counter() - t0
            env = {**sources.env, settings.DSN_ENV: dsn, settings.HOME_ENV: str(state / "home")}
            if per_run:
                env["METRICS_PIPELINE_MAX_PARTITIONS_PER_RUN"] = str(per_run)
            with Topology(state / "dagster_home", env, sqlalchemy_url(make_conninfo(admin, dbname=dagster_db))) as topo:
                print(f"[{name}] data generated in {generated:.0f} s; topology up; launching the backfill", flush=True)
                t1 = time.perf_counter()
                backfill_id = topo.launch_backfill(ranges_for(start, end), title=f"benchmark {name}")
                state_ = topo.wait_backfill(backfill_id, timeout=6 * 3600, poll=2.0)
                wall = time.perf_counter() - t1
                result = summarise(run_timings(topo, [r["runId"] for r in state_["runs"]]), wall)
                result["status"] = state_["status"]
        with psycopg.connect(dsn) as conn:
            result["points"] = conn.execute("SELECT count(*) FROM metrics.points").fetchone()[0]
            result["bytes_per_point"] = conn.execute(
                "SELECT sum(pg_total_relation_size(relid)) / greatest(%s, 1) FROM pg_partition_tree('metrics.points')", (result["points"],)).fetchone()[0]
            result["records"] = conn.execute(
                "SELECT (SELECT count(*) FROM metrics.ingestion_runs) + (SELECT count(*) FROM metrics.quarantine)"
            ).fetchone()[0]
            result["rollup_rows"] = conn.execute(
                "SELECT (SELECT count(*) FROM metrics.rollup_5m) + (SELECT count(*) FROM metrics.rollup_1h)"
                " + (SELECT count(*) FROM metrics.rollup_1d)").fetchone()[0]
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for db in (warehouse, dagster_db):
                conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        shutil.rmtree(state, ignore_errors=True)
    print(f"[{name}] {fmt(result)}", flush=True)
    print(f"[{name}] steps: " + ", ".join(f"{k} {v:.1f} s" for k, v in result["by_step"].items()), flush=True)
    return result


def fmt(r: dict) -> str:
    return (f"{r['status']}: wall {r['wall']:.0f} s, {r['runs']} runs ({r['failed']} failed), "
            f"{r['points']:,} points ({r['points'] / r['wall']:,.0f}/s), {r['records']:,} records; "
            f"per run: queued {r['queued']:.0f} s, start {r['start']:.0f} s, steps {r['steps']:.0f} s, "
            f"in-run {r['in_run']:.0f} s; Dagster overhead {r['overhead']:.0%} of run time; idle {r['idle']:.0f} s; "
            f"no step of ours running for {r['wall_share']:.0%} of the wall time")


def _interrupt(signum, frame):  # noqa: ARG001 - signal handler signature
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    signal.signal(signal.SIGTERM, _interrupt)  # stop the topology and PostgreSQL on `kill` too
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--cloudwatch-metrics", type=int, default=500)
    parser.add_argument("--subset-hours", type=int, default=24, help="hours of the one-run-per-partition comparison")
    parser.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    args = parser.parse_args()

    end = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)  # closed days only
    start = end - timedelta(days=args.days)
    server = EmbeddedPostgres(settings.state_dir() / "bench-pg").start()
    try:
        sub_end = start + timedelta(hours=args.subset_hours)
        batched = backfill(server, "subset_policy", start, sub_end, args)
        single = backfill(server, "subset_per_partition", start, sub_end, args, per_run=1)
        full = backfill(server, "full", start, end, args)
    finally:
        server.stop()

    speedup = single["wall"] / batched["wall"]
    data = (f"{args.days} days: {args.hosts} hosts at 1 s, {args.cloudwatch_metrics} CloudWatch metrics at 60 s, "
            f"WhaTap double, ingestion logs; every asset and check")
    print(f"speed-up over one run per partition ({args.subset_hours} h subset): {speedup:.1f}x")
    if args.no_write:
        return
    append_result(
        "backfill", data,
        f"{full['wall'] / 60:.1f} min, {full['runs']} runs, {full['points'] / full['wall']:,.0f} points/s, "
        f"Dagster overhead {full['overhead']:.0%} of run time, {full['wall_share']:.0%} of wall",
        f"{args.subset_hours} h: one run per partition {single['wall']:.0f} s vs {batched['wall']:.0f} s",
        f"{speedup:.1f}x",
    )
    rows = [("full backfill", full), (f"{args.subset_hours} h, backfill policies", batched),
            (f"{args.subset_hours} h, one run per partition", single)]
    table = ["| backfill | wall | runs | points | points/s | records | queued | process start | our steps | "
             "in-run Dagster | Dagster overhead (run time) | idle | no step running (wall) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    table += [f"| {label} | {r['wall']:.0f} s | {r['runs']} | {r['points']:,} | {r['points'] / r['wall']:,.0f} | "
              f"{r['records']:,} | {r['queued']:.0f} s | {r['start']:.0f} s | {r['steps']:.0f} s | {r['in_run']:.0f} s | "
              f"{r['overhead']:.0%} | {r['idle']:.0f} s | {r['wall_share']:.0%} |" for label, r in rows]
    table += ["", "Step time over the full backfill (sum over runs): " + ", ".join(
        f"{key} {seconds:.0f} s" for key, seconds in list(full["by_step"].items())[:8]) + "."]
    replace_section("backfill", f"Measured {datetime.now(timezone.utc):%Y-%m-%d} with `python benchmarks/backfill.py` "
                    f"({data}).\n\n" + "\n".join(table) + f"\n\nSpeed-up over one run per partition: **{speedup:.1f}x**. "
                    f"`points` on disk, indexes included: {full['bytes_per_point']:.0f} bytes per point.")


if __name__ == "__main__":
    main()
