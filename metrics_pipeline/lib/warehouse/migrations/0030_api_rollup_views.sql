-- The rollup rows the HTTP API reads (issue 19), each with its row version. A summary adds up the
-- sketches of every rollup row of its span: a week of 10 series is ~300 sketches and ~20,000 bins,
-- and sending them (`array_send`, ~40 ns a bin) and decoding them was half of the request's cost.
-- The API keeps the decoded sketches of the rows it has read (`lib/query.py`, `SketchCache`) and
-- reads a sketch again only when its row's version differs from the one it was read at.
--
-- The version is the row's xmin: the transaction that wrote it. A tier's rows and their sketches
-- are written together, by one statement (lib/rollups/sql/insert.sql), and nothing else writes the
-- 5-minute, hourly or daily sketches, so a sketch changes only with its row's version. (xmin is 32
-- bits and wraps after 4 billion transactions; the API keeps a sketch a few minutes at most.)
--
-- Like the api_sketch_* views (migration 0017): the tenant filter and barrier of the BI views'
-- restricted branch, for the API's reader role only (lib/warehouse/bi.API_VIEWS).
CREATE VIEW {{schema}}.api_rollup_5m WITH (security_barrier) AS
SELECT r.series_id, r.bucket AS bucket_start, r.count AS samples, r.avg, r.min, r.max, r.sum, r.last,
       r.p50, r.p95, r.p99, r.xmin::text::bigint AS version
FROM {{schema}}.rollup_5m r JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.api_rollup_1h WITH (security_barrier) AS
SELECT r.series_id, r.bucket AS bucket_start, r.count AS samples, r.avg, r.min, r.max, r.sum, r.last,
       r.p50, r.p95, r.p99, r.xmin::text::bigint AS version
FROM {{schema}}.rollup_1h r JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.api_rollup_1d WITH (security_barrier) AS
SELECT r.series_id, r.bucket AS bucket_start, r.count AS samples, r.avg, r.min, r.max, r.sum, r.last,
       r.p50, r.p95, r.p99, r.xmin::text::bigint AS version
FROM {{schema}}.rollup_1d r JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE s.tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);
