-- SLA and failure metrics per job (company, zone, source_system, object) and bucket of [start, end),
-- from ingestion_runs (SPEC §5): one statement for the whole window, however many buckets.
-- Parameters:
--   start, end   the window, aligned to `width` (1 hour or 1 day); runs belong to the bucket of started_at
--   now          no bucket starting at or after it; the in-progress bucket is measured as of `now`
--   lookback     a job with a run in [bucket - lookback, bucket) and none in the bucket gets a runs = 0 row
--   targets      jsonb array of rules {ord, company, zone, source_system, object, max_failure_rate,
--                max_duration_s, max_hours_without_success}; a NULL match field matches anything, the
--                last rule is the defaults (matches everything, sets every target)
-- "As of" a bucket is its end, or `now` for the in-progress bucket: the latest success is the latest
-- run with status SUCCESS that ended before it, looked up over the whole of ingestion_runs.
WITH rules AS (
    SELECT t.*, (t.company IS NOT NULL)::integer + (t.zone IS NOT NULL)::integer
                + (t.source_system IS NOT NULL)::integer + (t.object IS NOT NULL)::integer AS specificity
    FROM jsonb_to_recordset(%(targets)s::jsonb) AS t(
        ord integer, company text, zone text, source_system text, object text,
        max_failure_rate double precision, max_duration_s double precision,
        max_hours_without_success double precision)
), seen AS (
    -- Every job with a run in the window or in the lookback before it; its latest start before the window.
    SELECT r.company, r.zone, r.source_system, r.object,
           max(r.started_at) FILTER (WHERE r.started_at < %(start)s) AS started_before
    FROM {{schema}}.ingestion_runs r
    WHERE r.started_at >= %(start)s::timestamptz - %(lookback)s::interval AND r.started_at < %(end)s
    GROUP BY 1, 2, 3, 4
), jobs AS MATERIALIZED (
    -- Per job, once (not per bucket): its targets, its latest success before the window and, for a
    -- job that never succeeded, its first run (freshness counts from there: a new job is not late).
    SELECT s.company, s.zone, s.source_system, s.object, s.started_before,
           tg.max_failure_rate, tg.max_duration_s, tg.max_hours_without_success, ps.success_before,
           CASE WHEN ps.success_before IS NULL THEN (
               SELECT min(r.started_at) FROM {{schema}}.ingestion_runs r
               WHERE r.company = s.company AND r.zone = s.zone AND r.source_system = s.source_system
                 AND r.object = s.object) END AS first_started_at
    FROM seen s
    CROSS JOIN LATERAL (
        -- each target from the most specific matching rule that sets it; ties: the earlier rule
        SELECT (array_agg(ru.max_failure_rate ORDER BY ru.specificity DESC, ru.ord)
                    FILTER (WHERE ru.max_failure_rate IS NOT NULL))[1] AS max_failure_rate,
               (array_agg(ru.max_duration_s ORDER BY ru.specificity DESC, ru.ord)
                    FILTER (WHERE ru.max_duration_s IS NOT NULL))[1] AS max_duration_s,
               (array_agg(ru.max_hours_without_success ORDER BY ru.specificity DESC, ru.ord)
                    FILTER (WHERE ru.max_hours_without_success IS NOT NULL))[1] AS max_hours_without_success
        FROM rules ru
        WHERE (ru.company IS NULL OR ru.company = s.company) AND (ru.zone IS NULL OR ru.zone = s.zone)
          AND (ru.source_system IS NULL OR ru.source_system = s.source_system)
          AND (ru.object IS NULL OR ru.object = s.object)
    ) tg
    CROSS JOIN LATERAL (
        SELECT max(r.ended_at) AS success_before FROM {{schema}}.ingestion_runs r
        WHERE r.company = s.company AND r.zone = s.zone AND r.source_system = s.source_system
          AND r.object = s.object AND r.status = 'SUCCESS'
          AND r.ended_at < least(%(start)s::timestamptz, %(now)s::timestamptz)
    ) ps
), successes AS (
    -- Latest success per job and bucket of its end, for the successes that end inside the window.
    SELECT j.company, j.zone, j.source_system, j.object, e.bucket, e.last_end
    FROM jobs j
    CROSS JOIN LATERAL (
        SELECT date_bin(%(width)s::interval, r.ended_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               max(r.ended_at) AS last_end
        FROM {{schema}}.ingestion_runs r
        WHERE r.company = j.company AND r.zone = j.zone AND r.source_system = j.source_system
          AND r.object = j.object AND r.status = 'SUCCESS'
          AND r.ended_at >= %(start)s AND r.ended_at < least(%(end)s::timestamptz, %(now)s::timestamptz)
        GROUP BY 1
    ) e
), observed AS (
    -- The runs that started in each bucket: exact percentiles over the raw durations.
    SELECT r.company, r.zone, r.source_system, r.object,
           date_bin(%(width)s::interval, r.started_at, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           count(*)::integer AS runs,
           count(*) FILTER (WHERE r.status = 'SUCCESS')::integer AS successes,
           count(*) FILTER (WHERE r.status = 'FAILED')::integer AS failures,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_s) AS duration_p50_s,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_s) AS duration_p95_s,
           max(r.duration_s) AS duration_max_s,
           count(*) FILTER (WHERE r.duration_s > j.max_duration_s)::integer AS sla_breaches,
           sum(r.cpu_time_s) AS cpu_time_s,
           max(r.memory_used_bytes) AS peak_memory_bytes,
           max(r.started_at) AS last_started_at
    FROM {{schema}}.ingestion_runs r
    JOIN jobs j ON j.company = r.company AND j.zone = r.zone AND j.source_system = r.source_system
               AND j.object = r.object
    WHERE r.started_at >= %(start)s AND r.started_at < %(end)s
    GROUP BY 1, 2, 3, 4, 5
), grid AS (
    -- Every job x every bucket up to now; running maxima carry "last start" and "last success" forward.
    SELECT j.company, j.zone, j.source_system, j.object, g.bucket,
           j.max_failure_rate, j.max_duration_s, j.max_hours_without_success, j.first_started_at,
           o.runs, o.successes, o.failures, o.duration_p50_s, o.duration_p95_s, o.duration_max_s,
           o.sla_breaches, o.cpu_time_s, o.peak_memory_bytes,
           greatest(j.started_before, max(o.last_started_at) OVER before_bucket) AS started_before_bucket,
           greatest(j.success_before, max(su.last_end) OVER up_to_bucket) AS last_success_at,
           least(g.bucket + %(width)s::interval, %(now)s::timestamptz) AS as_of
    FROM jobs j
    CROSS JOIN generate_series(%(start)s::timestamptz, %(end)s::timestamptz - %(width)s::interval,
                               %(width)s::interval) AS g(bucket)
    LEFT JOIN observed o ON o.company = j.company AND o.zone = j.zone AND o.source_system = j.source_system
                        AND o.object = j.object AND o.bucket = g.bucket
    LEFT JOIN successes su ON su.company = j.company AND su.zone = j.zone AND su.source_system = j.source_system
                          AND su.object = j.object AND su.bucket = g.bucket
    WHERE g.bucket < %(now)s
    WINDOW per_job AS (PARTITION BY j.company, j.zone, j.source_system, j.object ORDER BY g.bucket),
           before_bucket AS (per_job ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
           up_to_bucket AS (per_job ROWS UNBOUNDED PRECEDING)
)
INSERT INTO {{schema}}.{{table}}
    (bucket, company, zone, source_system, object, runs, successes, failures, failure_rate,
     duration_p50_s, duration_p95_s, duration_max_s, sla_breaches, last_success_at,
     time_since_last_success_s, cpu_time_s, peak_memory_bytes, sla_met)
SELECT g.bucket, g.company, g.zone, g.source_system, g.object,
       coalesce(g.runs, 0), coalesce(g.successes, 0), coalesce(g.failures, 0), f.failure_rate,
       g.duration_p50_s, g.duration_p95_s, g.duration_max_s, coalesce(g.sla_breaches, 0), g.last_success_at,
       extract(epoch FROM g.as_of - g.last_success_at)::double precision,
       g.cpu_time_s, g.peak_memory_bytes,
       -- no runs: nothing failed and nothing was slow, but freshness still counts
       coalesce(f.failure_rate <= g.max_failure_rate, true)
       AND coalesce(g.duration_p95_s <= g.max_duration_s, true)
       AND coalesce(extract(epoch FROM g.as_of - coalesce(g.last_success_at, g.first_started_at))
                    <= g.max_hours_without_success * 3600, false)
FROM grid g
CROSS JOIN LATERAL (SELECT g.failures::double precision / nullif(g.runs, 0) AS failure_rate) f
WHERE g.runs IS NOT NULL OR g.started_before_bucket >= g.bucket - %(lookback)s::interval
