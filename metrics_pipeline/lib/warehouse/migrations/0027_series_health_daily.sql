-- Daily series health (issue 19): the sums of a day's `series_health_hourly` rows per series, written
-- by the `rollup_1d` refresh of that day (lib/rollups/sql/health_daily.sql), in its transaction.
--
-- Why: the query API's summary reports completeness and time above the thresholds over its span from
-- the hourly health, which is kept 730 days. A year's summary of 10 series read 87,600 hourly rows
-- (8,760 per series) for four sums; whole days now read one row each, as the summary's statistics
-- read the daily rollups for them (lib/query.py `summary_pieces`). Every column adds up, so a day's
-- row answers exactly what its 24 hourly rows would.
--
-- Kept and partitioned with `rollup_1d` (partitioning.RETENTION_OF): the summary uses a tier's days
-- only while that tier keeps them, and a refresh that finds the hourly health expired keeps the
-- day's row as it is (replace_window), as the daily rollup keeps its rows.
CREATE TABLE {{schema}}.series_health_daily (
    series_id           integer NOT NULL,
    bucket              timestamptz NOT NULL,   -- the UTC day
    hours               integer NOT NULL,       -- hourly health rows of the day
    expected            bigint,                 -- samples expected (sum over the hours that know it)
    received_expected   bigint,                 -- samples received in those hours (completeness = this / expected)
    received            bigint NOT NULL,        -- samples received in every hour
    warning_threshold   double precision,
    critical_threshold  double precision,
    above_warning_s     double precision,
    above_critical_s    double precision,
    computed_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT series_health_daily_pkey PRIMARY KEY (series_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE INDEX series_health_daily_bucket_idx ON {{schema}}.series_health_daily (bucket);

COMMENT ON TABLE {{schema}}.series_health_daily IS
    'Per series and UTC day: the sums of its hourly health (series_health_hourly), for summaries over whole days.';

-- Existing warehouses: a partition for every rollup_1d partition (same bounds), filled from the
-- hourly health still kept, so summaries over old days keep their completeness.
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('%I.%I', '{{schema}}', 'rollup_1d')::regclass
    LOOP
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.series_health_daily %s', '{{schema}}',
                       replace(part.relname, 'rollup_1d', 'series_health_daily'), '{{schema}}', part.bound);
    END LOOP;
END $$;

INSERT INTO {{schema}}.series_health_daily (series_id, bucket, hours, expected, received_expected, received,
                                            warning_threshold, critical_threshold, above_warning_s, above_critical_s)
SELECT series_id, date_bin(interval '1 day', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day, count(*)::integer,
       sum(expected), sum(received) FILTER (WHERE expected IS NOT NULL), sum(received),
       max(warning_threshold), max(critical_threshold), sum(above_warning_s), sum(above_critical_s)
FROM {{schema}}.series_health_hourly
WHERE date_bin(interval '1 day', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00')
      IN (SELECT DISTINCT bucket FROM {{schema}}.rollup_1d)  -- days in a rollup_1d partition
GROUP BY 1, 2;

-- The API's reader reads it as it reads the sketches (migration 0017): its tenant's series only.
CREATE VIEW {{schema}}.api_health_1d WITH (security_barrier) AS
SELECT h.series_id, h.bucket, h.hours, h.expected, h.received_expected, h.received, h.warning_threshold,
       h.critical_threshold, h.above_warning_s, h.above_critical_s
FROM {{schema}}.series_health_daily h JOIN {{schema}}.series s ON s.series_id = h.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
