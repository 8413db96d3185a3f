"""5 m + 1 h rollups of one day of 1-second data vs the bare SQL aggregate, same run (SPEC §8 "Rollups").

    python benchmarks/rollups.py [--series 50] [--repeat 3] [--work-mem 4MB,256MB] [--alternatives] [--explain]
                                 [--fresh-series 515] [--fresh-interval 60] [--fresh-repeat 3] [--label TEXT]

One day of 1-second samples for 50 host series (4.32 M points: CPU, memory, filesystem, network
and disk rates, so sketches see both narrow and heavy-tailed buckets) is loaded with the COPY
loader (timed and reported, not part of the result). Then, on the same server, both sides compute
5-minute and 1-hour statistics for the day and commit what they wrote:
* ours: `rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], day, day + 1)`, end to end
  (sketches, written to their own tables, 5 m from the points, 1 h merged from the fresh 5 m rows,
  one transaction);
* reference: the GROUP BY a person would write over the raw points, once for 5-minute and once
  for 1-hour buckets: count, sum, min, max, avg, last, percentile_cont(0.5/0.95/0.99), INSERTed into
  unlogged scratch tables (no sketch, nothing mergeable: the floor, not an alternative).
Each side runs `--repeat` times (alternating which goes first, tables emptied and a CHECKPOINT
before each run); the median counts. Both results are compared (count/sum/min/max/last exactly,
percentiles within the sketch's bound plus the gap between percentile_cont and a sample).
`--work-mem` re-times both sides with other work_mem values; `--alternatives` times rewrites of a
copy of from_points.sql (see ALTERNATIVES; the package is not touched); `--explain` prints
EXPLAIN (ANALYZE, BUFFERS) of every statement.

Fresh hour (issue 16): an hour is rolled up right after its load, before anything has analysed it,
in a day partition whose statistics predate the load (the normal order; a plan that depended on
statistics went from 0.27 s to 165 s there). `--fresh-series` CloudWatch-like series x 1 hour at
`--fresh-interval` s are loaded after 3 earlier hours that were analysed (autovacuum off on the
day's partitions), rolled up (5 m + 1 h) `--fresh-repeat` times, then ANALYZEd and rolled up again;
both medians are reported, in the results row and in the `rollups_fresh_hour` section.
`--label` prefixes the results row (e.g. "before the fix").

Uses METRICS_PIPELINE_DSN's server if set, otherwise the embedded PostgreSQL under
.metrics_pipeline/bench-pg (durable settings, fsync on); the scratch database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
from common import append_result, replace_section, scratch_database
from psycopg.conninfo import make_conninfo

from metrics_pipeline.lib import points, rollups
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse import migrate, partitioning
from metrics_pipeline.lib.warehouse.db import Warehouse

DAY = datetime(2026, 1, 5, tzinfo=timezone.utc)
END = DAY + timedelta(days=1)
BENCH_DB = "metrics_bench_rollups"
SCHEMA = "metrics"
ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"

# The bare aggregate, as a person would write it: one GROUP BY per bucket width over the raw points.
REFERENCE_SQL = """
INSERT INTO bench_ref.ref_{name} (series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99)
SELECT series_id, date_bin(interval '{width}', ts, {origin}) AS bucket,
       count(*), sum(value), min(value), max(value), avg(value),
       (array_agg(value ORDER BY ts DESC))[1],
       percentile_cont(0.5) WITHIN GROUP (ORDER BY value),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY value),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY value)
FROM {schema}.points
WHERE ts >= %(start)s AND ts < %(end)s
GROUP BY 1, 2
"""
REFERENCE_TIERS = (("5m", "5 minutes"), ("1h", "1 hour"))

# The fresh-hour case (issue 16): the normal order is "load an hour, then roll it up", so the hour is
# rolled up before anything has analysed it, while its day partition holds statistics from before.
FRESH_DAY = END  # the next day: partitions of its own
FRESH_HOUR = (FRESH_DAY + timedelta(hours=3), FRESH_DAY + timedelta(hours=4))


# Alternatives to lib/rollups/sql/from_points.sql, timed by --alternatives on a copy of the SQL
# (the package is left alone; `rollups.tier_sql` is swapped for the duration of the race).
# A: the sketch key written inline. sketch_key() is a STRICT SQL function whose CASE body is not
#    strict, so PostgreSQL cannot inline it and runs the SQL-function executor once per point.
SKETCH_KEY_INLINE = (
    "CASE WHEN p.value > 1e-9 THEN 1000000 + ceil(ln(p.value) / 0.020000666706669)::integer "
    "WHEN p.value < -1e-9 THEN -(1000000 + ceil(ln(-p.value) / 0.020000666706669)::integer) ELSE 0 END"
)
# B: sums added in whatever order rows arrive (what issue 16 fixed): the cost of deterministic sums.
# C: no exact extremes (min_count / max_count left NULL, percentiles the clamped bin representative,
#    as before issue 16): the cost of counting the values equal to the minimum and the maximum.
UNORDERED_SUMS = {"sum(value ORDER BY value)": "sum(value)", "sum(s ORDER BY k)": "sum(s)"}
_SHIPPED_TIER_SQL = rollups.tier_sql


def inlined_key_sql(schema: str, table: str) -> str:
    text = _SHIPPED_TIER_SQL(schema, table)
    if table == "rollup_5m":
        call = f"{schema}.sketch_key(p.value)"
        assert call in text, f"from_points.sql no longer calls {call}: alternative A is stale"
        text = text.replace(call, SKETCH_KEY_INLINE)
    return text


def _rewritten(table_name: str, replacements: dict[str, str]) -> Callable[[str, str], str]:
    """The shipped SQL of `table_name` with each key of `replacements` (which must occur) replaced."""
    def build(schema: str, table: str) -> str:
        text = _SHIPPED_TIER_SQL(schema, table)
        if table == table_name:
            for old, new in replacements.items():
                assert old in text, f"{table} SQL no longer contains {old!r}: the alternative is stale"
                text = text.replace(old, new)
        return text
    return build


def without_exact_extremes(schema: str, table: str) -> str:
    text = _SHIPPED_TIER_SQL(schema, table)
    if table == "rollup_5m":
        head, tail = text.split("           CASE WHEN m.hi_first = m.min", 1)
        assert "AS max_count\n" in tail, "from_points.sql changed: alternative C is stale"
        text = head + "           NULL::bigint AS min_count, NULL::bigint AS max_count\n" + tail.split("AS max_count\n", 1)[1]
    return text


#: name -> (the tier SQL builder standing in for `rollups.tier_sql`, whether its percentiles must
#: equal the shipped ones: C's read the bin representative where the shipped ones read an extreme)
ALTERNATIVES: dict[str, tuple[Callable[[str, str], str], bool]] = {
    "A: sketch_key inlined": (inlined_key_sql, True),
    "B: sums in arrival order (not deterministic)": (_rewritten("rollup_5m", UNORDERED_SUMS), True),
    "C: no exact extremes": (without_exact_extremes, False),
}


@contextmanager
def tier_sql_replaced(builder: Callable[[str, str], str]) -> Iterator[None]:
    rollups.tier_sql = builder
    try:
        yield
    finally:
        rollups.tier_sql = _SHIPPED_TIER_SQL


def make_frame(n_series: int) -> pd.DataFrame:
    """A day at 1 s of a realistic host mix: noisy percentages, slow gauges, heavy-tailed rates."""
    ts = pd.date_range(DAY, END, freq="1s", inclusive="left")
    n = len(ts)
    t = np.arange(n) / n
    rng = np.random.default_rng(11)
    kinds = [
        ("host_cpu_percent", "percent", lambda: np.clip(rng.gamma(2.0, 8.0, n) * (1 + 0.5 * np.sin(2 * np.pi * t)), 0, 100).round(1)),
        ("host_memory_percent", "percent", lambda: np.clip(55 + np.cumsum(rng.normal(0, 0.02, n)) + rng.normal(0, 0.3, n), 1, 99).round(1)),
        ("host_filesystem_used_percent", "percent", lambda: (40 + 10 * t + rng.normal(0, 0.01, n)).round(2)),
        ("host_network_receive_bytes_per_second", "bytes/s", lambda: rng.lognormal(11.0, 1.5, n).round()),
        ("host_disk_write_ops_per_second", "ops/s", lambda: np.where(rng.random(n) < 0.3, 0.0, rng.lognormal(3.0, 1.0, n).round())),
    ]
    series = []
    for i in range(n_series):
        metric, unit, values = kinds[i % len(kinds)]
        host = f"host-{i // len(kinds):03d}"
        series.append({"metric": metric, "resource": host, "labels": {"host": host}, "unit": unit, "ts": ts, "value": values()})
    return points.points_frame(series)


def with_options(dsn: str, options: str | None) -> str:
    """The same DSN, with settings for every session it opens (refresh() opens its own)."""
    return make_conninfo(dsn, options=options) if options else dsn


def settle(conn: psycopg.Connection, tables: tuple[str, ...]) -> None:
    """Same starting line for every timed run: the side's outputs empty, dirty pages flushed."""
    conn.execute(f"TRUNCATE {', '.join(tables)}")
    conn.execute("CHECKPOINT")


def reference(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:  # one transaction, committed on exit, like refresh()
        for name, width in REFERENCE_TIERS:
            conn.execute(REFERENCE_SQL.format(name=name, width=width, origin=ORIGIN, schema=SCHEMA),
                         {"start": DAY, "end": END})


def ours(dsn: str) -> None:
    rollups.refresh(Warehouse(dsn, SCHEMA), ["rollup_5m", "rollup_1h"], DAY, END)


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def race(conn: psycopg.Connection, dsn: str, repeat: int) -> tuple[float, float]:
    """Median seconds of (ours, reference) over `repeat` alternating runs; both results kept."""
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    steps = [
        ("ours", tuple(f"{SCHEMA}.{t}" for t in ("rollup_5m", "rollup_1h", "rollup_5m_sketch", "rollup_1h_sketch")),
         lambda: ours(dsn)),
        ("ref", ("bench_ref.ref_5m", "bench_ref.ref_1h"), lambda: reference(dsn)),
    ]
    for i in range(repeat):
        for name, tables, fn in steps if i % 2 == 0 else reversed(steps):
            settle(conn, tables)
            times[name].append(timed(fn))
    return statistics.median(times["ours"]), statistics.median(times["ref"])


def compare(conn: psycopg.Connection) -> str:
    """Check both sides hold the same buckets and statistics; percentiles: the sketch vs
    percentile_cont gap (the sketch is within 1 % of a sample, percentile_cont interpolates)."""
    report = []
    for name, _ in REFERENCE_TIERS:
        row = conn.execute(f"""
            SELECT count(*), count(o.series_id), count(r.series_id),
                   count(*) FILTER (WHERE o.count <> r.count OR o.min <> r.min OR o.max <> r.max OR o.last <> r.last
                                       OR abs(o.sum - r.sum) > 1e-9 * greatest(1, abs(r.sum))),
                   avg(abs(o.p95 - r.p95) / nullif(abs(r.p95), 0)),
                   max(abs(o.p50 - r.p50) / nullif(abs(r.p50), 0)), max(abs(o.p95 - r.p95) / nullif(abs(r.p95), 0)),
                   max(abs(o.p99 - r.p99) / nullif(abs(r.p99), 0))
            FROM {SCHEMA}.rollup_{name} o FULL JOIN bench_ref.ref_{name} r USING (series_id, bucket)""").fetchone()
        rows, ours_rows, ref_rows, mismatched, mean95, *worst = row
        assert rows == ours_rows == ref_rows > 0 and mismatched == 0, f"rollup_{name} differs from the reference: {row}"
        report.append(f"{name} {rows:,} rows equal; percentile gap vs percentile_cont: p95 mean {mean95 or 0:.2%}, "
                      "max p50/p95/p99 " + "/".join(f"{g or 0:.1%}" for g in worst))
    return "; ".join(report)


def with_sketches(name: str) -> str:
    """The rows of rollup_`name` with their sketches (kept in rollup_`name`_sketch, migration 0013)."""
    return (f"SELECT r.*, k.sketch_keys, k.sketch_counts FROM {SCHEMA}.rollup_{name} r "
            f"LEFT JOIN {SCHEMA}.rollup_{name}_sketch k USING (series_id, bucket)")


def snapshot(conn: psycopg.Connection) -> None:
    """Keep the shipped SQL's rollups, to check that every alternative writes exactly the same rows."""
    for name, _ in REFERENCE_TIERS:
        conn.execute(f"CREATE TABLE bench_ref.shipped_{name} AS {with_sketches(name)}")


def same_as_shipped(conn: psycopg.Connection, alternative: str, percentiles: bool = True) -> None:
    """Same buckets, counts, extremes, last, sketches and (if `percentiles`) percentiles; sums to
    rounding (an alternative may add them up in another order)."""
    exact = "a.count, a.min, a.max, a.last, a.sketch_keys, a.sketch_counts"
    if percentiles:
        exact += ", a.p50, a.p95, a.p99"
    for name, _ in REFERENCE_TIERS:
        row = conn.execute(f"""
            SELECT count(*), count(*) FILTER (WHERE a.series_id IS NULL OR b.series_id IS NULL
                OR ({exact}) IS DISTINCT FROM ({exact.replace("a.", "b.")})
                OR abs(a.sum - b.sum) > 1e-9 * greatest(1, abs(b.sum)))
            FROM ({with_sketches(name)}) a FULL JOIN bench_ref.shipped_{name} b USING (series_id, bucket)""").fetchone()
        assert row[0] > 0 and row[1] == 0, f"alternative {alternative}: rollup_{name} differs from the shipped SQL's: {row}"


def explain(dsn: str, alternatives: bool) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every timed statement, in one rolled-back transaction."""
    params = {"start": DAY, "end": END}
    statements = [(f"ours: rollup_{t}", rollups.tier_sql(SCHEMA, f"rollup_{t}")) for t, _ in REFERENCE_TIERS]
    statements += [(f"reference: ref_{name}", REFERENCE_SQL.format(name=name, width=width, origin=ORIGIN, schema=SCHEMA))
                   for name, width in REFERENCE_TIERS]
    if alternatives:
        statements += [(f"alternative {name}: rollup_5m", builder(SCHEMA, "rollup_5m"))
                       for name, (builder, _) in ALTERNATIVES.items()]
    with psycopg.connect(dsn) as conn:
        conn.execute(f"TRUNCATE {SCHEMA}.rollup_5m, {SCHEMA}.rollup_1h, {SCHEMA}.rollup_5m_sketch, "
                     f"{SCHEMA}.rollup_1h_sketch, bench_ref.ref_5m, bench_ref.ref_1h")
        for title, sql in statements:  # ANALYZE executes: the 1 h tier reads the 5 m rows just written
            if title.startswith("alternative"):
                conn.execute(f"TRUNCATE {SCHEMA}.rollup_5m, {SCHEMA}.rollup_5m_sketch")
            plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            print(f"\n--- EXPLAIN (ANALYZE, BUFFERS) {title}")
            print("\n".join(line for (line,) in plan))
        conn.rollback()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work-mem", default="4MB,256MB", help="comma-separated work_mem values to re-time ('' for none)")
    parser.add_argument("--alternatives", action="store_true", help="also time the SQL alternatives (ALTERNATIVES)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of every statement")
    parser.add_argument("--fresh-series", type=int, default=515,
                        help="series of the fresh-hour case (0: skip it)")
    parser.add_argument("--fresh-interval", type=int, default=60, help="sampling interval (s) of the fresh-hour case")
    parser.add_argument("--fresh-repeat", type=int, default=3, help="runs per case of the fresh-hour case")
    parser.add_argument("--label", default="", help="prefix of this run's figures in docs/benchmarks.md")
    parser.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = parser.parse_args()

    with scratch_database(BENCH_DB) as dsn:
        run(dsn, args)


def run(dsn: str, args: argparse.Namespace) -> None:
    migrate.migrate(Warehouse(dsn, SCHEMA))
    frame = make_frame(args.series)
    n = len(frame)
    load_s = timed(lambda: loader.load_points(Warehouse(dsn, SCHEMA), frame, source="host", start=DAY, end=END))
    print(f"loaded {n:,} points ({args.series} series, 1 s, one day) with the COPY loader in {load_s:.1f} s "
          f"({n / load_s:,.0f} points/s; not part of the result)")

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA bench_ref")
        for name, _ in REFERENCE_TIERS:
            conn.execute(f"""CREATE UNLOGGED TABLE bench_ref.ref_{name} (series_id integer, bucket timestamptz,
                count bigint, sum float8, min float8, max float8, avg float8, last float8, p50 float8, p95 float8, p99 float8)""")
        for table in ("rollup_5m", "rollup_1h"):
            partitioning.ensure_partitions(conn, SCHEMA, table, DAY, END)  # DDL is not what is measured
        conn.execute(f"VACUUM ANALYZE {SCHEMA}.points")
        default_work_mem = conn.execute("SHOW work_mem").fetchone()[0]

        ours_s, ref_s = race(conn, dsn, args.repeat)
        agreement = compare(conn)
        snapshot(conn)
        ratio = ours_s / ref_s
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        print(f"{args.repeat} runs each, median; work_mem {default_work_mem}")
        print(f"bare SQL aggregate (5 m + 1 h) : {ref_s:6.2f} s  {n / ref_s:12,.0f} points/s")
        print(f"rollups.refresh (5 m + 1 h)    : {ours_s:6.2f} s  {n / ours_s:12,.0f} points/s  "
              f"ratio {ratio:.2f} x reference ({verdict} the 1.5 x target)")
        print(f"agreement: {agreement}")

        extra = []
        for work_mem in filter(None, (w.strip() for w in args.work_mem.split(","))):
            o, r = race(conn, with_options(dsn, f"-c work_mem={work_mem}"), args.repeat)
            extra.append(f"work_mem {work_mem}: {o:.2f} s vs {r:.2f} s = {o / r:.2f} x")
            print(f"work_mem {work_mem:>6}: ours {o:6.2f} s, reference {r:6.2f} s, ratio {o / r:.2f} x")
        if args.alternatives:
            print("alternatives to lib/rollups/sql/from_points.sql (a copy, timed the same way):")
            for name, (builder, same_percentiles) in ALTERNATIVES.items():
                with tier_sql_replaced(builder):
                    o, r = race(conn, dsn, args.repeat)
                same_as_shipped(conn, name, same_percentiles)  # the alternative must write the same rollups
                extra.append(f"alt. {name.split(':')[0]}: {o:.2f} s vs {r:.2f} s = {o / r:.2f} x")
                print(f"  {name:<50}: ours {o:6.2f} s, reference {r:6.2f} s, ratio {o / r:.2f} x")

    fresh = fresh_hour(dsn, args.fresh_series, args.fresh_interval, args.fresh_repeat) if args.fresh_series else None
    if fresh:
        extra.append(f"fresh hour ({fresh.series} series x 1 h at {fresh.interval_s} s, no ANALYZE since its load) "
                     f"{fresh.fresh_s:.2f} s vs {fresh.analysed_s:.2f} s analysed")

    if args.explain:
        explain(dsn, args.alternatives)

    if not args.no_write:
        label = f"{args.label}: " if args.label else ""
        append_result(
            "rollups", f"{n:,} points / {args.series} series, 1 day at 1 s (COPY load {load_s:.1f} s, not timed)",
            f"{label}refresh 5 m + 1 h {ours_s:.2f} s ({n / ours_s:,.0f} pts/s) at work_mem {default_work_mem}"
            + "".join(f"; {v}" for v in extra),
            f"bare GROUP BY 5 m + 1 h, percentile_cont: {ref_s:.2f} s", f"{ratio:.2f} x",
        )
        if fresh:
            replace_section("rollups_fresh_hour", fresh.markdown(args.label))


def fresh_frame(n_series: int, interval_s: int, start: datetime, end: datetime, seed: int) -> pd.DataFrame:
    """CloudWatch-like series (EC2/RDS gauges and counters) at `interval_s` over [start, end)."""
    ts = pd.date_range(start, end, freq=f"{interval_s}s", inclusive="left")
    rng = np.random.default_rng(seed)
    metrics = ("aws_ec2_cpuutilization", "aws_ec2_networkin", "aws_rds_databaseconnections", "aws_ec2_statuscheckfailed")
    values = {
        "aws_ec2_cpuutilization": lambda: rng.gamma(2.0, 6.0, len(ts)).round(2),
        "aws_ec2_networkin": lambda: rng.lognormal(12, 1.5, len(ts)).round(),
        "aws_rds_databaseconnections": lambda: rng.poisson(20, len(ts)).astype(float),
        "aws_ec2_statuscheckfailed": lambda: (rng.random(len(ts)) < 0.02).astype(float),
    }
    return points.points_frame([
        {"metric": metrics[i % len(metrics)], "resource": f"i-{i:05d}", "labels": {}, "unit": "1", "ts": ts,
         "value": values[metrics[i % len(metrics)]]()}
        for i in range(n_series)
    ])


@dataclasses.dataclass(frozen=True)
class FreshHour:
    series: int
    interval_s: int
    points: int
    repeat: int
    estimate_fresh: float  # the planner's row estimate for the hour's points, before / after ANALYZE
    estimate_analysed: float
    fresh_s: float
    analyze_s: float
    analysed_s: float

    def markdown(self, label: str | None) -> str:
        when = f"{datetime.now(timezone.utc):%Y-%m-%d}" + (f", {label}" if label else "")
        return (
            f"Last run ({when}; `python benchmarks/rollups.py`): {self.series} series x 1 hour at {self.interval_s} s "
            f"({self.points:,} points) loaded into a day partition analysed with the 3 hours before it (autovacuum off "
            f"on the day's partitions, so nothing analyses in between), then `rollups.refresh(..., [\"rollup_5m\", "
            f"\"rollup_1h\"], hour)`; median of {self.repeat} runs per case.\n\n"
            "| case | planner's estimate of the hour's points | refresh 5 m + 1 h |\n|---|---|---|\n"
            f"| fresh: right after the load, no ANALYZE since | {self.estimate_fresh:,.0f} of {self.points:,} "
            f"| {self.fresh_s:.2f} s |\n"
            f"| analysed: after ANALYZE of the day partition (itself {self.analyze_s:.2f} s) "
            f"| {self.estimate_analysed:,.0f} of {self.points:,} | {self.analysed_s:.2f} s |\n\n"
            f"Fresh / analysed: **{self.fresh_s / self.analysed_s:.2f} x**."
        )


def hour_estimate(conn: psycopg.Connection) -> float:
    (plan,) = conn.execute(f"EXPLAIN (FORMAT JSON) SELECT * FROM {SCHEMA}.points WHERE ts >= %s AND ts < %s",
                           FRESH_HOUR).fetchone()
    return plan[0]["Plan"]["Plan Rows"]


def fresh_hour(dsn: str, n_series: int, interval_s: int, repeat: int) -> FreshHour:
    """Roll up an hour right after loading it, with statistics from before the load; then again after
    ANALYZE. The day partition was analysed with the earlier hours, as autovacuum would have done."""
    warehouse = Warehouse(dsn, SCHEMA)
    day_end = FRESH_DAY + timedelta(days=1)
    (partition, _, _), = partitioning.partition_bounds("points", FRESH_DAY, day_end)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("points", "rollup_5m", "rollup_1h"):
            partitioning.ensure_partitions(conn, SCHEMA, table, FRESH_DAY, day_end)
            for name, _, _ in partitioning.partition_bounds(table, FRESH_DAY, day_end):
                conn.execute(f"ALTER TABLE {SCHEMA}.{name} SET (autovacuum_enabled = off)")
        loader.load_points(warehouse, fresh_frame(n_series, interval_s, FRESH_DAY, FRESH_HOUR[0], seed=1),
                           source="cloudwatch", start=FRESH_DAY, end=FRESH_HOUR[0])
        conn.execute(f"ANALYZE {SCHEMA}.{partition}")
        frame = fresh_frame(n_series, interval_s, *FRESH_HOUR, seed=2)
        loader.load_points(warehouse, frame, source="cloudwatch", start=FRESH_HOUR[0], end=FRESH_HOUR[1])
        estimate_fresh = hour_estimate(conn)

        def refresh() -> None:
            rollups.refresh(warehouse, ["rollup_5m", "rollup_1h"], *FRESH_HOUR)

        fresh = []
        for _ in range(repeat):
            fresh.append(timed(refresh))
            print(f"fresh hour, no ANALYZE since its load: {fresh[-1]:.2f} s", flush=True)
        analyze_s = timed(lambda: conn.execute(f"ANALYZE {SCHEMA}.{partition}"))
        estimate_analysed = hour_estimate(conn)
        analysed = [timed(refresh) for _ in range(repeat)]
    result = FreshHour(n_series, interval_s, len(frame), repeat, estimate_fresh, estimate_analysed,
                       statistics.median(fresh), analyze_s, statistics.median(analysed))
    print(f"fresh hour ({n_series} series x 1 h at {interval_s} s, {len(frame):,} points): planner expected "
          f"{estimate_fresh:,.0f} rows; refresh {result.fresh_s:.2f} s; after ANALYZE ({analyze_s:.2f} s, "
          f"expects {estimate_analysed:,.0f}): {result.analysed_s:.2f} s; ratio {result.fresh_s / result.analysed_s:.2f} x")
    return result


if __name__ == "__main__":
    main()
