-- Each series' sketch of a UTC month (migration 0028): the bins of the month's daily sketches added up.
-- The caller has deleted [start, end) of rollup_1mo_sketch; start and end are month starts.
WITH days AS (
    SELECT series_id, date_trunc('month', bucket AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month,
           sketch_keys, sketch_counts
    FROM {{schema}}.rollup_1d_sketch
    WHERE bucket >= %(start)s AND bucket < %(end)s
), counted AS (
    SELECT series_id, month, count(*)::integer AS days FROM days GROUP BY 1, 2
), bins AS (
    SELECT d.series_id, d.month, u.k, sum(u.n)::bigint AS n
    FROM days d CROSS JOIN LATERAL unnest(d.sketch_keys, d.sketch_counts) AS u(k, n)
    GROUP BY 1, 2, 3
)
INSERT INTO {{schema}}.rollup_1mo_sketch (series_id, bucket, days, sketch_keys, sketch_counts)
SELECT b.series_id, b.month, c.days, array_agg(b.k ORDER BY b.k), array_agg(b.n ORDER BY b.k)
FROM bins b JOIN counted c USING (series_id, month)
GROUP BY b.series_id, b.month, c.days
