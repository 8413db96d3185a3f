-- The HTTP API's query endpoints (issue 19) answer percentiles over spans no tier bucket has (a
-- 15-minute step over 5-minute rows, a 30-day summary over hourly rows) by adding up the rows'
-- sketches, as the rollups' own merge does (lib/rollups/sql/merge.sql): a percentile is never an
-- average of percentiles. The sketches live in side tables (migration 0013) that no reader may
-- read. These views give the API's reader role (`<schema>_api_read`, migration 0016) the sketches
-- of the series its request's tenant may see, and nothing else: the same tenant filter and the
-- same barrier as the BI views' restricted branch. They are not `v_*` views: BI roles are not
-- granted them (lib/warehouse/bi.grant_views grants them to the API's reader only).
CREATE VIEW {{schema}}.api_sketch_5m WITH (security_barrier) AS
SELECT k.series_id, k.bucket, k.sketch_keys, k.sketch_counts
FROM {{schema}}.rollup_5m_sketch k JOIN {{schema}}.series s ON s.series_id = k.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.api_sketch_1h WITH (security_barrier) AS
SELECT k.series_id, k.bucket, k.sketch_keys, k.sketch_counts
FROM {{schema}}.rollup_1h_sketch k JOIN {{schema}}.series s ON s.series_id = k.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.api_sketch_1d WITH (security_barrier) AS
SELECT k.series_id, k.bucket, k.sketch_keys, k.sketch_counts
FROM {{schema}}.rollup_1d_sketch k JOIN {{schema}}.series s ON s.series_id = k.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
