-- BI views that let a reader's filters reach the tables (issue 17).
--
-- Until now every v_* view was a security_barrier view with the tenant filter inside. The barrier
-- keeps every condition of the reader that uses an operator PostgreSQL does not mark leakproof
-- (`labels @> ...`, `labels #>> ...`, `labels ->> 'x' = ...`, `bucket_start >= CURRENT_DATE - 14`,
-- which compares a timestamptz with a date) above the whole view: no partition pruning, no label
-- index, every row of the range joined first. It also rules out parallel plans. For a login that
-- sees every tenant the barrier protects nothing.
--
-- Now each view X is two internal views and a gate:
--   bi_all_X     the rows of every tenant, a plain view: conditions go down to the tables, the join
--                to `series` is a LEFT JOIN on its primary key, so a query that reads no series
--                column does not join at all (a year's count(*) reads the rollup rows only);
--   bi_tenant_X  security_barrier: bi_all_X filtered to visible_tenants(current_user);
--   v_X          bi_all_X when visible_tenants(current_user) IS NULL (the login sees every tenant)
--                UNION ALL bi_tenant_X when it is not.
-- Each gate has no column in it, so PostgreSQL makes it a one-time filter, evaluated before its
-- branch reads a row (EXPLAIN shows the other branch as "never executed"): a restricted login's
-- conditions, pushed into bi_all_X, never run, since bi_all_X never executes for it, and
-- bi_tenant_X keeps the barrier. Only the v_* views are granted to BI roles; the bi_* views are
-- internal (no grant), like the tables.
-- Written so that parallel plans stay possible: the gates call visible_tenants() directly (a
-- `(SELECT ...)` sub-select would be an InitPlan, and PostgreSQL 16 plans nothing parallel below
-- one), and bi_tenant_X semi-joins the tenants as a function scan, evaluated once per scan (a
-- direct call in `tenant = ANY (...)` would run once per row, ~50 us each).
-- Measured in benchmarks/bi_queries.py (docs/benchmarks.md); reasons in docs/data-dictionary.md.
--
-- Also new: v_sla_monthly (UTC months from sla_daily).

DROP VIEW {{schema}}.v_series, {{schema}}.v_points, {{schema}}.v_rollup_5m, {{schema}}.v_rollup_1h,
    {{schema}}.v_rollup_1d, {{schema}}.v_latest, {{schema}}.v_series_health_hourly, {{schema}}.v_sla_hourly,
    {{schema}}.v_sla_daily, {{schema}}.v_ingestion_runs, {{schema}}.v_alerts, {{schema}}.v_quarantine;

-- -- the rows of every tenant ----------------------------------------------------------------------
-- A LEFT JOIN to series: every row has its series (series are never deleted), and PostgreSQL drops
-- a LEFT JOIN to a primary key that the query reads no column of.

CREATE VIEW {{schema}}.bi_all_series AS
SELECT s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'account' AS account, s.labels ->> 'region' AS region,
       s.labels ->> 'statistic' AS statistic, s.first_seen
FROM {{schema}}.series s;

CREATE VIEW {{schema}}.bi_all_points AS
SELECT p.ts, p.value, p.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic
FROM {{schema}}.points p
LEFT JOIN {{schema}}.series s ON s.series_id = p.series_id;

CREATE VIEW {{schema}}.bi_all_rollup_5m AS
SELECT r.bucket AS bucket_start, r.bucket + interval '5 minutes' AS bucket_end,
       r.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_5m r
LEFT JOIN {{schema}}.series s ON s.series_id = r.series_id;

CREATE VIEW {{schema}}.bi_all_rollup_1h AS
SELECT r.bucket AS bucket_start, r.bucket + interval '1 hour' AS bucket_end,
       r.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_1h r
LEFT JOIN {{schema}}.series s ON s.series_id = r.series_id;

CREATE VIEW {{schema}}.bi_all_rollup_1d AS
SELECT r.bucket AS bucket_start, r.bucket + interval '1 day' AS bucket_end,
       r.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_1d r
LEFT JOIN {{schema}}.series s ON s.series_id = r.series_id;

-- Latest raw value per series: one backward index probe per series and day partition.
CREATE VIEW {{schema}}.bi_all_latest AS
SELECT s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       l.ts, l.value, extract(epoch FROM now() - l.ts)::double precision AS age_s
FROM {{schema}}.series s
CROSS JOIN LATERAL (
    SELECT p.ts, p.value FROM {{schema}}.points p
    WHERE p.series_id = s.series_id ORDER BY p.ts DESC LIMIT 1
) l;

CREATE VIEW {{schema}}.bi_all_series_health_hourly AS
SELECT h.bucket AS bucket_start, h.bucket + interval '1 hour' AS bucket_end,
       h.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       h.interval_s, h.expected, h.received, h.completeness, h.no_data, h.max_gap_s,
       h.warning_threshold, h.critical_threshold, h.above_warning_s, h.above_critical_s, h.computed_at
FROM {{schema}}.series_health_hourly h
LEFT JOIN {{schema}}.series s ON s.series_id = h.series_id;

CREATE VIEW {{schema}}.bi_all_sla_hourly AS
SELECT t.bucket AS bucket_start, t.bucket + interval '1 hour' AS bucket_end,
       t.company AS tenant, t.company, t.zone, t.source_system, t.object,
       t.runs, t.successes, t.failures, t.failure_rate, t.duration_p50_s, t.duration_p95_s, t.duration_max_s,
       t.sla_breaches, t.last_success_at, t.time_since_last_success_s, t.cpu_time_s, t.peak_memory_bytes, t.sla_met,
       t.computed_at
FROM {{schema}}.sla_hourly t;

CREATE VIEW {{schema}}.bi_all_sla_daily AS
SELECT t.bucket AS bucket_start, t.bucket + interval '1 day' AS bucket_end,
       t.company AS tenant, t.company, t.zone, t.source_system, t.object,
       t.runs, t.successes, t.failures, t.failure_rate, t.duration_p50_s, t.duration_p95_s, t.duration_max_s,
       t.sla_breaches, t.last_success_at, t.time_since_last_success_s, t.cpu_time_s, t.peak_memory_bytes, t.sla_met,
       t.computed_at
FROM {{schema}}.sla_daily t;

-- UTC calendar months from the daily rows (a month is 28-31 rows per job, so a year of reports
-- reads a few thousand rows). Duration percentiles do not add up across days: the month has the
-- exact longest run and the worst day's p95, named as such; exact monthly percentiles come from
-- v_ingestion_runs. The month in progress is as of its latest daily row.
-- Its month is an index expression: a report's month range reads those months only, and ANALYZE
-- keeps statistics on it, so the planner knows how many rows a range holds.
CREATE INDEX sla_daily_month_idx ON {{schema}}.sla_daily (date_trunc('month', bucket, 'UTC'));

CREATE VIEW {{schema}}.bi_all_sla_monthly AS
SELECT m.month AS bucket_start, m.month + interval '1 month' AS bucket_end,
       t.company AS tenant, t.company, t.zone, t.source_system, t.object,
       count(*)::integer AS days, count(*) FILTER (WHERE t.runs > 0)::integer AS days_with_runs,
       count(*) FILTER (WHERE t.sla_met)::integer AS days_sla_met,
       sum(t.runs)::integer AS runs, sum(t.successes)::integer AS successes, sum(t.failures)::integer AS failures,
       sum(t.failures)::double precision / nullif(sum(t.runs), 0) AS failure_rate,
       max(t.duration_p95_s) AS worst_day_duration_p95_s, max(t.duration_max_s) AS duration_max_s,
       sum(t.sla_breaches)::integer AS sla_breaches, max(t.last_success_at) AS last_success_at,
       sum(t.cpu_time_s) AS cpu_time_s, max(t.peak_memory_bytes) AS peak_memory_bytes,
       bool_and(t.sla_met) AS sla_met, max(t.computed_at) AS computed_at
FROM {{schema}}.sla_daily t
CROSS JOIN LATERAL (SELECT date_trunc('month', t.bucket, 'UTC') AS month) m
GROUP BY m.month, t.company, t.zone, t.source_system, t.object;

CREATE VIEW {{schema}}.bi_all_ingestion_runs AS
SELECT r.started_at, r.ended_at, r.company AS tenant, r.company, r.zone, r.source_system, r.object_id, r.object,
       r.transformation, r.status, r.duration_s, r.description, r.cpu_time_s, r.memory_used_bytes, r.sequence_no
FROM {{schema}}.ingestion_runs r;

CREATE VIEW {{schema}}.bi_all_alerts AS
SELECT a.alert_id, a.alertname, a.severity, a.state, a.starts_at, a.ends_at,
       coalesce(a.ends_at, now()) - a.starts_at AS duration,
       extract(epoch FROM coalesce(a.ends_at, now()) - a.starts_at)::double precision AS duration_s,
       a.labels ->> 'tenant' AS tenant, a.labels, a.annotations ->> 'summary' AS summary,
       a.annotations ->> 'description' AS description, a.fingerprint, a.asset_key, a.partition_key,
       a.run_id, a.generator_url
FROM {{schema}}.alerts a;

-- -- one tenant's rows: the barrier keeps a reader's functions from seeing the rows filtered out ----
-- The monthly SLA view filters the daily rows before grouping them.

CREATE VIEW {{schema}}.bi_tenant_series WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_series WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_points WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_points WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_rollup_5m WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_rollup_5m WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_rollup_1h WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_rollup_1h WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_rollup_1d WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_rollup_1d WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_latest WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_latest WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_series_health_hourly WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_series_health_hourly WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_sla_hourly WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_sla_hourly WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_sla_daily WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_sla_daily WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_sla_monthly WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_sla_monthly WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_ingestion_runs WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_ingestion_runs WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
CREATE VIEW {{schema}}.bi_tenant_alerts WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_alerts WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

-- -- what BI roles read ---------------------------------------------------------------------------

CREATE VIEW {{schema}}.v_series AS
SELECT * FROM {{schema}}.bi_all_series WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_series WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_points AS
SELECT * FROM {{schema}}.bi_all_points WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_points WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_rollup_5m AS
SELECT * FROM {{schema}}.bi_all_rollup_5m WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_rollup_5m WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_rollup_1h AS
SELECT * FROM {{schema}}.bi_all_rollup_1h WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_rollup_1h WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_rollup_1d AS
SELECT * FROM {{schema}}.bi_all_rollup_1d WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_rollup_1d WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_latest AS
SELECT * FROM {{schema}}.bi_all_latest WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_latest WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_series_health_hourly AS
SELECT * FROM {{schema}}.bi_all_series_health_hourly WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_series_health_hourly WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_sla_hourly AS
SELECT * FROM {{schema}}.bi_all_sla_hourly WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_sla_hourly WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_sla_daily AS
SELECT * FROM {{schema}}.bi_all_sla_daily WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_sla_daily WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_sla_monthly AS
SELECT * FROM {{schema}}.bi_all_sla_monthly WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_sla_monthly WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_ingestion_runs AS
SELECT * FROM {{schema}}.bi_all_ingestion_runs WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_ingestion_runs WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

CREATE VIEW {{schema}}.v_alerts AS
SELECT * FROM {{schema}}.bi_all_alerts WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_alerts WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;

-- Refused input records. The raw text is left out on purpose: it may hold whatever a broken job
-- wrote. A refused record has no trusted tenant, so restricted roles see none of it.
CREATE VIEW {{schema}}.v_quarantine AS
SELECT q.record_hour, q.source, q.source_file, q.position, q.reason, q.quarantined_at
FROM {{schema}}.quarantine q
WHERE {{schema}}.visible_tenants(current_user::text) IS NULL;
