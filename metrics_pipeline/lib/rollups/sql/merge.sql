-- Bins and statistics of each {{width}} bucket, merged from the finer tier {{source}}:
-- counts, sums, minima and maxima add up; sketches add bin by bin; `last` is the latest bucket's.
WITH binned AS (
    SELECT r.series_id,
           date_bin(interval '{{width}}', r.bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           u.k, sum(u.n)::bigint AS n
    FROM {{schema}}.{{source}} r
    CROSS JOIN LATERAL unnest(r.sketch_keys, r.sketch_counts) AS u(k, n)
    WHERE r.bucket >= %(start)s AND r.bucket < %(end)s
    GROUP BY 1, 2, 3
), stats AS (
    SELECT r.series_id,
           date_bin(interval '{{width}}', r.bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           sum(r.count)::bigint AS count, sum(r.sum) AS sum, min(r.min) AS min, max(r.max) AS max,
           (array_agg(r.last ORDER BY r.bucket DESC))[1] AS last
    FROM {{schema}}.{{source}} r
    WHERE r.bucket >= %(start)s AND r.bucket < %(end)s
    GROUP BY 1, 2
)
