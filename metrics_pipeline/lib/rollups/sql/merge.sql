-- Statistics and sketch of each {{width}} bucket, merged from the finer tier {{source}}.
-- One pipeline, no join of two aggregates (see the package docstring):
-- fine rows sorted by (series, bucket, fine bucket) -> the bucket's statistics by window functions,
-- carried on every fine row -> the fine rows' bins -> one row per bin -> one row per bucket.
WITH fine AS (
    -- The fine row's sketch lives in {{source_sketches}} (migration 0013): one primary-key probe per
    -- fine row, a scalar subquery so that it stays a probe whatever the statistics say.
    SELECT r.series_id, date_bin(interval '{{width}}', r.bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           r.bucket AS fine_bucket, r.count, r.sum, r.min, r.max, r.last, r.min_count, r.max_count,
           (SELECT k FROM {{schema}}.{{source_sketches}} k
            WHERE k.series_id = r.series_id AND k.bucket = r.bucket
              AND k.bucket >= %(start)s AND k.bucket < %(end)s) AS sketch
    FROM {{schema}}.{{source}} r
    WHERE r.bucket >= %(start)s AND r.bucket < %(end)s
), bucket_extremes AS (
    SELECT f.*, min(f.min) OVER w AS bucket_min, max(f.max) OVER w AS bucket_max
    FROM fine f
    WINDOW w AS (PARTITION BY f.series_id, f.bucket)
), bucket_stats AS (
    -- Sums are added in time order (the fine buckets' order), so re-running gives the same bits.
    -- min_count / max_count: values equal to the bucket's extremes, from the fine rows that hold
    -- them. Rows written before migration 0010 have NULL (unknown): sum() leaves them out, so the
    -- count stays a lower bound (still safe to read an exact extreme from), or NULL if all are.
    SELECT e.series_id, e.bucket, (e.sketch).sketch_keys, (e.sketch).sketch_counts,
           (sum(e.count) OVER w)::bigint AS count, sum(e.sum) OVER w AS sum, e.bucket_min AS min, e.bucket_max AS max,
           last_value(e.last) OVER w AS last,
           (sum(e.min_count) FILTER (WHERE e.min = e.bucket_min) OVER w)::bigint AS min_count,
           (sum(e.max_count) FILTER (WHERE e.max = e.bucket_max) OVER w)::bigint AS max_count
    FROM bucket_extremes e
    WINDOW w AS (PARTITION BY e.series_id, e.bucket ORDER BY e.fine_bucket
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
), binned AS (
    -- Bins add up across the fine rows; the bucket's statistics are the same on every row (min()).
    SELECT s.series_id, s.bucket, u.k, sum(u.n)::bigint AS n,
           min(s.count) AS b_count, min(s.sum) AS b_sum, min(s.min) AS b_min, min(s.max) AS b_max,
           min(s.last) AS b_last, min(s.min_count) AS b_min_count, min(s.max_count) AS b_max_count
    FROM bucket_stats s
    CROSS JOIN LATERAL unnest(s.sketch_keys, s.sketch_counts) AS u(k, n)
    GROUP BY s.series_id, s.bucket, u.k
), ranked AS (
    SELECT b.*,
           sum(n) OVER (PARTITION BY series_id, bucket ORDER BY k ROWS UNBOUNDED PRECEDING) AS cum,
           sum(n) OVER (PARTITION BY series_id, bucket) AS total
    FROM binned b
), buckets AS (
    SELECT series_id, bucket, min(b_count) AS count, min(b_sum) AS sum, min(b_min) AS min, min(b_max) AS max,
           min(b_last) AS last, min(b_min_count) AS min_count, min(b_max_count) AS max_count,
           min(k) FILTER (WHERE cum > 0.50 * (total - 1)) AS k50,
           min(k) FILTER (WHERE cum > 0.95 * (total - 1)) AS k95,
           min(k) FILTER (WHERE cum > 0.99 * (total - 1)) AS k99,
           array_agg(k ORDER BY k) AS keys, array_agg(n ORDER BY k) AS counts
    FROM ranked
    GROUP BY series_id, bucket
)
