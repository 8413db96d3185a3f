-- Shared tail: percentiles from the merged bins, the insert into {{target}}, and the sketches into
-- {{sketches}} (migration 0013: out of the rows every BI scan reads), in the same statement.
-- replace_window has deleted [start, end) of {{target}}; the window's old sketches are deleted here
-- (`cleared`), and read before any new one goes in, so the delete is complete first (a data-modifying
-- CTE runs when it is read; a new sketch never meets the old one of its key).
-- Percentile q is the sample of 0-based rank r = floor(q * (n - 1)) (numpy's method="lower"):
-- * r < min_count (the values equal to the minimum): that sample is the minimum, returned exactly;
-- * r >= n - max_count (the values equal to the maximum): it is the maximum, returned exactly;
-- * otherwise the sketch value of the bin holding it (kq), clamped to [min, max]: within 1 percent.
-- So a p95 of a 0/1 metric reads 1, not the bin's 0.99, and every answer stays within the bound.
, cleared AS (
    DELETE FROM {{schema}}.{{sketches}} WHERE bucket >= %(start)s AND bucket < %(end)s RETURNING 1
), sketches AS (
    INSERT INTO {{schema}}.{{sketches}} (series_id, bucket, sketch_keys, sketch_counts)
    SELECT b.series_id, b.bucket, b.keys, b.counts
    FROM buckets b
    WHERE (SELECT count(*) FROM cleared) >= 0
)
INSERT INTO {{schema}}.{{target}}
    (series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99, min_count, max_count)
SELECT b.series_id, b.bucket, b.count, b.sum, b.min, b.max, b.sum / b.count, b.last,
       CASE WHEN floor(0.50 * (b.count - 1)) < b.min_count THEN b.min
            WHEN floor(0.50 * (b.count - 1)) >= b.count - b.max_count THEN b.max
            ELSE least(b.max, greatest(b.min, {{schema}}.sketch_value(b.k50))) END,
       CASE WHEN floor(0.95 * (b.count - 1)) < b.min_count THEN b.min
            WHEN floor(0.95 * (b.count - 1)) >= b.count - b.max_count THEN b.max
            ELSE least(b.max, greatest(b.min, {{schema}}.sketch_value(b.k95))) END,
       CASE WHEN floor(0.99 * (b.count - 1)) < b.min_count THEN b.min
            WHEN floor(0.99 * (b.count - 1)) >= b.count - b.max_count THEN b.max
            ELSE least(b.max, greatest(b.min, {{schema}}.sketch_value(b.k99))) END,
       b.min_count, b.max_count
FROM buckets b
