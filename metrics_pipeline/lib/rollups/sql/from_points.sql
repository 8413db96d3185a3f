-- Bins and statistics of each 5-minute bucket, from the raw points of [start, end).
-- One pass groups the points by (series, bucket, sketch bin); the bucket statistics are the sums
-- of the bins' statistics; `last` is one primary-key probe per bucket at its latest timestamp.
WITH binned AS (
    -- Sorted input makes this a streaming group aggregate: a hash aggregate over ~1 M bins per
    -- day spilled to disk and was the slowest step (benchmarks/rollups.py).
    SELECT series_id, bucket, k, count(*) AS n, sum(value) AS s, min(value) AS lo, max(value) AS hi,
           max(ts) AS last_ts
    FROM (
        SELECT p.series_id, date_bin(interval '5 minutes', p.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               {{schema}}.sketch_key(p.value) AS k, p.ts, p.value
        FROM {{schema}}.points p
        WHERE p.ts >= %(start)s AND p.ts < %(end)s
        ORDER BY 1, 2, 3
    ) p
    GROUP BY series_id, bucket, k
), stats AS (
    SELECT b.series_id, b.bucket, b.count, b.sum, b.min, b.max, p.value AS last
    FROM (
        SELECT series_id, bucket, sum(n)::bigint AS count, sum(s) AS sum, min(lo) AS min, max(hi) AS max,
               max(last_ts) AS last_ts
        FROM binned GROUP BY series_id, bucket
    ) b
    JOIN {{schema}}.points p ON p.series_id = b.series_id AND p.ts = b.last_ts
    WHERE p.ts >= %(start)s AND p.ts < %(end)s
)
