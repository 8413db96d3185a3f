-- Stable views for BI tools (SPEC §3): series labels joined in, friendly names, units, tenants.
-- Documented column by column in docs/data-dictionary.md; the BI role reads these and nothing else.
-- security_barrier keeps a reader's own functions from seeing rows the tenant filter removes.

CREATE VIEW {{schema}}.v_series WITH (security_barrier) AS
SELECT s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'account' AS account, s.labels ->> 'region' AS region,
       s.labels ->> 'statistic' AS statistic, s.first_seen
FROM {{schema}}.series s
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_points WITH (security_barrier) AS
SELECT p.ts, p.value, s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic
FROM {{schema}}.points p
JOIN {{schema}}.series s ON s.series_id = p.series_id
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_rollup_5m WITH (security_barrier) AS
SELECT r.bucket AS bucket_start, r.bucket + interval '5 minutes' AS bucket_end,
       s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_5m r
JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_rollup_1h WITH (security_barrier) AS
SELECT r.bucket AS bucket_start, r.bucket + interval '1 hour' AS bucket_end,
       s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_1h r
JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_rollup_1d WITH (security_barrier) AS
SELECT r.bucket AS bucket_start, r.bucket + interval '1 day' AS bucket_end,
       s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       r.count AS samples, r.avg, r.min, r.max, r.sum, r.last, r.p50, r.p95, r.p99
FROM {{schema}}.rollup_1d r
JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

-- Latest raw value per series (series with no raw point inside the raw retention are not listed).
-- One backward index probe per series and day partition, not a scan of the points.
CREATE VIEW {{schema}}.v_latest WITH (security_barrier) AS
SELECT s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       l.ts, l.value, extract(epoch FROM now() - l.ts)::double precision AS age_s
FROM {{schema}}.series s
CROSS JOIN LATERAL (
    SELECT p.ts, p.value FROM {{schema}}.points p
    WHERE p.series_id = s.series_id ORDER BY p.ts DESC LIMIT 1
) l
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_series_health_hourly WITH (security_barrier) AS
SELECT h.bucket AS bucket_start, h.bucket + interval '1 hour' AS bucket_end,
       s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       h.interval_s, h.expected, h.received, h.completeness, h.no_data, h.max_gap_s,
       h.warning_threshold, h.critical_threshold, h.above_warning_s, h.above_critical_s, h.computed_at
FROM {{schema}}.series_health_hourly h
JOIN {{schema}}.series s ON s.series_id = h.series_id
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR s.tenant = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_sla_hourly WITH (security_barrier) AS
SELECT t.bucket AS bucket_start, t.bucket + interval '1 hour' AS bucket_end,
       t.company AS tenant, t.company, t.zone, t.source_system, t.object,
       t.runs, t.successes, t.failures, t.failure_rate, t.duration_p50_s, t.duration_p95_s, t.duration_max_s,
       t.sla_breaches, t.last_success_at, t.time_since_last_success_s, t.cpu_time_s, t.peak_memory_bytes, t.sla_met,
       t.computed_at
FROM {{schema}}.sla_hourly t
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR t.company = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_sla_daily WITH (security_barrier) AS
SELECT t.bucket AS bucket_start, t.bucket + interval '1 day' AS bucket_end,
       t.company AS tenant, t.company, t.zone, t.source_system, t.object,
       t.runs, t.successes, t.failures, t.failure_rate, t.duration_p50_s, t.duration_p95_s, t.duration_max_s,
       t.sla_breaches, t.last_success_at, t.time_since_last_success_s, t.cpu_time_s, t.peak_memory_bytes, t.sla_met,
       t.computed_at
FROM {{schema}}.sla_daily t
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR t.company = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_ingestion_runs WITH (security_barrier) AS
SELECT r.started_at, r.ended_at, r.company AS tenant, r.company, r.zone, r.source_system, r.object_id, r.object,
       r.transformation, r.status, r.duration_s, r.description, r.cpu_time_s, r.memory_used_bytes, r.sequence_no
FROM {{schema}}.ingestion_runs r
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR r.company = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

CREATE VIEW {{schema}}.v_alerts WITH (security_barrier) AS
SELECT a.alert_id, a.alertname, a.severity, a.state, a.starts_at, a.ends_at,
       coalesce(a.ends_at, now()) - a.starts_at AS duration,
       extract(epoch FROM coalesce(a.ends_at, now()) - a.starts_at)::double precision AS duration_s,
       a.labels ->> 'tenant' AS tenant, a.labels, a.annotations ->> 'summary' AS summary,
       a.annotations ->> 'description' AS description, a.fingerprint, a.asset_key, a.partition_key,
       a.run_id, a.generator_url
FROM {{schema}}.alerts a
WHERE ((SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL
       OR a.labels ->> 'tenant' = ANY ((SELECT {{schema}}.visible_tenants(current_user::text))::text[]));

-- Refused input records, for the quarantine ratio and "what is being refused, and why". The raw
-- text is left out on purpose: it may hold whatever a broken job wrote. Not tenant-scoped (a
-- refused record has no trusted company), so restricted roles see none of it.
CREATE VIEW {{schema}}.v_quarantine WITH (security_barrier) AS
SELECT q.record_hour, q.source, q.source_file, q.position, q.reason, q.quarantined_at
FROM {{schema}}.quarantine q
WHERE (SELECT {{schema}}.visible_tenants(current_user::text)) IS NULL;
