-- Mergeable percentile sketches on every rollup tier, per-series health, SLA lookups (SPEC §3, §5).

-- A fixed log-scale histogram (the DDSketch mapping) with relative accuracy alpha = 1 %:
-- gamma = (1 + alpha) / (1 - alpha), a value v > 0 falls in bin k = ceil(log_gamma(v)) and every
-- value of bin k is within alpha of its representative 2 * gamma^k / (gamma + 1). Negative values
-- mirror the positive bins; |v| <= 1e-9 is the zero bin. Keys are encoded into one integer that
-- sorts in value order: positive bins 1000000 + k, zero 0, negative -(1000000 + k).
-- ln(gamma) = ln(1.01 / 0.99) = 0.020000666706669; 2 / (gamma + 1) = 0.99.
-- Not STRICT on purpose: a STRICT SQL function whose body is not itself strict is never inlined,
-- and calling it through the function executor per point tripled the rollup time (benchmarks/rollups.py).
CREATE FUNCTION {{schema}}.sketch_key(v double precision) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN v IS NULL THEN NULL
                  WHEN v > 1e-9 THEN 1000000 + ceil(ln(v) / 0.020000666706669)::integer
                  WHEN v < -1e-9 THEN -(1000000 + ceil(ln(-v) / 0.020000666706669)::integer)
                  ELSE 0 END $$;

CREATE FUNCTION {{schema}}.sketch_value(k integer) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT CASE WHEN k IS NULL THEN NULL
                  WHEN k > 0 THEN 0.99 * exp((k - 1000000) * 0.020000666706669)
                  WHEN k < 0 THEN -0.99 * exp((-k - 1000000) * 0.020000666706669)
                  ELSE 0 END $$;

-- Sparse sketch per row: bin keys ascending, and the number of values in each bin.
ALTER TABLE {{schema}}.rollup_5m ADD COLUMN sketch_keys integer[], ADD COLUMN sketch_counts bigint[];
ALTER TABLE {{schema}}.rollup_1h ADD COLUMN sketch_keys integer[], ADD COLUMN sketch_counts bigint[];
ALTER TABLE {{schema}}.rollup_1d ADD COLUMN sketch_keys integer[], ADD COLUMN sketch_counts bigint[];

-- Dashboard queries read the statistics, not the sketches: covering primary keys on the tiers
-- dashboards scan over long ranges let them read the index only, never the wide rows
-- (benchmarks/bi_queries.py: a 1-year daily trend 40.7 -> 9.4 ms p95; ~1.5x the index size).
ALTER TABLE {{schema}}.rollup_1h DROP CONSTRAINT rollup_1h_pkey,
    ADD CONSTRAINT rollup_1h_pkey PRIMARY KEY (series_id, bucket) INCLUDE (count, sum, min, max, avg, last, p50, p95, p99);
ALTER TABLE {{schema}}.rollup_1d DROP CONSTRAINT rollup_1d_pkey,
    ADD CONSTRAINT rollup_1d_pkey PRIMARY KEY (series_id, bucket) INCLUDE (count, sum, min, max, avg, last, p50, p95, p99);

-- Dashboards ask "this bucket range, all series": the primary keys serve "one series, a range".
CREATE INDEX rollup_5m_bucket_idx ON {{schema}}.rollup_5m (bucket);
CREATE INDEX rollup_1h_bucket_idx ON {{schema}}.rollup_1h (bucket);
CREATE INDEX rollup_1d_bucket_idx ON {{schema}}.rollup_1d (bucket);

-- Completeness and time above thresholds per series and hour, for the metric sources (SPEC §5).
-- A series that reported in the previous day but not in this hour gets a row with received = 0
-- ("no data"), which is not the same thing as a series reporting zeros.
CREATE TABLE {{schema}}.series_health_hourly (
    series_id           integer NOT NULL,
    bucket              timestamptz NOT NULL,
    interval_s          double precision,       -- typical sampling interval (median spacing); NULL if unknown
    expected            integer,                -- samples expected in the covered part of the hour
    received            integer NOT NULL,
    completeness        double precision,       -- received / expected, capped at 1; NULL when expected unknown
    no_data             boolean NOT NULL,
    max_gap_s           double precision,       -- longest stretch without a sample, hour edges included
    warning_threshold   double precision,
    critical_threshold  double precision,
    above_warning_s     double precision,       -- seconds spent above the thresholds (NULL: no threshold)
    above_critical_s    double precision,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT series_health_hourly_pkey PRIMARY KEY (series_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX series_health_hourly_bucket_idx ON {{schema}}.series_health_hourly (bucket);

-- "Time since last success" looks back per job; SLA windows scan by end time.
CREATE INDEX ingestion_runs_last_success_idx ON {{schema}}.ingestion_runs
    (company, zone, source_system, object, ended_at) WHERE status = 'SUCCESS';
CREATE INDEX sla_daily_bucket_idx ON {{schema}}.sla_daily (bucket);
CREATE INDEX sla_hourly_company_idx ON {{schema}}.sla_hourly (company, bucket);

-- Per-tenant visibility for BI roles (optional row-level security on the views): a role listed
-- here sees only its tenants' rows; a role not listed sees every tenant. `*` means all tenants.
-- The views pass current_user in: inside a SECURITY DEFINER function current_user is the owner.
CREATE TABLE {{schema}}.tenant_access (
    role_name  text NOT NULL,
    tenant     text NOT NULL,
    CONSTRAINT tenant_access_pkey PRIMARY KEY (role_name, tenant)
);

-- NULL = every tenant; else the tenants `p_role` may see: the rows listed for it or for any role it
-- is a member of (so a group can be restricted once for all its logins). Superusers see all.
-- The views call it once per query (an uncorrelated sub-select), not once per row.
CREATE FUNCTION {{schema}}.visible_tenants(p_role text) RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT CASE WHEN (SELECT rolsuper FROM pg_roles WHERE rolname = p_role) THEN NULL
                  WHEN bool_or(a.tenant = '*') OR count(*) = 0 THEN NULL
                  ELSE array_agg(DISTINCT a.tenant) END
      FROM {{schema}}.tenant_access a
      JOIN pg_roles r ON r.rolname = a.role_name
      WHERE pg_has_role(p_role, r.oid, 'MEMBER') $$;

CREATE INDEX series_metric_idx ON {{schema}}.series (metric);

COMMENT ON TABLE {{schema}}.series_health_hourly IS 'Per series and hour: expected vs received samples, gaps, time above thresholds.';
COMMENT ON TABLE {{schema}}.tenant_access IS 'BI roles restricted to some tenants; roles not listed see all tenants.';
