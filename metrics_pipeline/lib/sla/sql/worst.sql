-- The rows of [start, end) that miss their SLA, worst first: most failing, then most slow runs,
-- then longest without a success (never succeeded first).
SELECT bucket, company, zone, source_system, object, runs, failures, failure_rate, duration_p95_s,
       sla_breaches, time_since_last_success_s
FROM {{schema}}.{{table}}
WHERE bucket >= %(start)s AND bucket < %(end)s AND NOT sla_met
ORDER BY coalesce(failure_rate, 0) DESC, sla_breaches DESC, time_since_last_success_s DESC NULLS FIRST,
         bucket DESC, company, zone, source_system, object
LIMIT %(limit)s
