-- Monthly sketches (issue 19): per series and UTC month, the bins of the month's daily sketches added
-- up, rewritten with every refresh of a day of the month (lib/rollups `refresh`), in its transaction.
--
-- Why: a percentile over a year (the API's summary of a year) added up 365 daily sketches a series;
-- PostgreSQL spends ~30 ns sending each bin (array_send), and a year of 10 series is ~440,000 bins:
-- ~30 ms of the server's time and as much again to decode, per request. Whole months now read one
-- sketch each: the same bins summed, so the same percentile to the bit. No statistics here: the
-- daily rows answer count, sum, min, max and last cheaply (365 narrow rows a series).
--
-- Partitioned and kept with rollup_1d (partitioning.RETENTION_OF: same yearly bounds, dropped with it).
-- Not a BI table: only the API's reader reads it, through api_sketch_1mo.
CREATE TABLE {{schema}}.rollup_1mo_sketch (
    series_id      integer NOT NULL,
    bucket         timestamptz NOT NULL,   -- the first instant of the UTC month
    days           integer NOT NULL,       -- daily sketches added up
    sketch_keys    integer[] NOT NULL,
    sketch_counts  bigint[] NOT NULL,
    CONSTRAINT rollup_1mo_sketch_pkey PRIMARY KEY (bucket, series_id)
) PARTITION BY RANGE (bucket);

COMMENT ON TABLE {{schema}}.rollup_1mo_sketch IS
    'Per series and UTC month: the sum of its daily sketches (rollup_1d_sketch), for percentiles over months.';

-- Existing warehouses: a partition per rollup_1d partition (same bounds), filled from the daily sketches.
DO $$
DECLARE
    part record;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = format('%I.%I', '{{schema}}', 'rollup_1d')::regclass
    LOOP
        EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.rollup_1mo_sketch %s', '{{schema}}',
                       replace(part.relname, 'rollup_1d', 'rollup_1mo_sketch'), '{{schema}}', part.bound);
    END LOOP;
END $$;

INSERT INTO {{schema}}.rollup_1mo_sketch (series_id, bucket, days, sketch_keys, sketch_counts)
SELECT b.series_id, b.month, c.days, array_agg(b.k ORDER BY b.k), array_agg(b.n ORDER BY b.k)
FROM (SELECT d.series_id, date_trunc('month', d.bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month, u.k,
             sum(u.n)::bigint AS n
      FROM {{schema}}.rollup_1d_sketch d CROSS JOIN LATERAL unnest(d.sketch_keys, d.sketch_counts) AS u(k, n)
      GROUP BY 1, 2, 3) b
JOIN (SELECT series_id, date_trunc('month', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month,
             count(*)::integer AS days
      FROM {{schema}}.rollup_1d_sketch GROUP BY 1, 2) c USING (series_id, month)
GROUP BY b.series_id, b.month, c.days;

CREATE VIEW {{schema}}.api_sketch_1mo WITH (security_barrier) AS
SELECT k.series_id, k.bucket, k.sketch_keys, k.sketch_counts
FROM {{schema}}.rollup_1mo_sketch k JOIN {{schema}}.series s ON s.series_id = k.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
