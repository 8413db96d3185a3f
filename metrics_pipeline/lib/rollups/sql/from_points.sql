-- Statistics and sketch of each 5-minute bucket, from the raw points of [start, end).
-- One pipeline of sorts and aggregates, no join (see the package docstring: a join of two aggregates
-- turned into a nested loop re-aggregating per bucket whenever statistics were stale):
-- points sorted by (series, bucket, sketch bin, value) -> one row per bin -> one row per bucket.
-- {{points}} is `points` itself, or, when some hour of the window is packed (migration 0026), a
-- temporary copy of the window's points with the same primary key (`lib/rollups`: the probes below
-- stay index probes instead of unpacking an hour's arrays for each bucket).
WITH binned AS (
    -- Sums are added in value order, then bin by bin (below): the same points give the same bits,
    -- whatever the window of the run or the physical order of the rows.
    SELECT series_id, bucket, k, count(*) AS n, sum(value ORDER BY value) AS s, min(value) AS lo, max(value) AS hi,
           max(ts) AS last_ts
    FROM (
        SELECT p.series_id, date_bin(interval '5 minutes', p.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
               {{schema}}.sketch_key(p.value) AS k, p.ts, p.value
        FROM {{points}} p
        WHERE p.ts >= %(start)s AND p.ts < %(end)s
    ) p
    GROUP BY series_id, bucket, k
), ranked AS (
    SELECT b.*,
           sum(n) OVER (PARTITION BY series_id, bucket ORDER BY k ROWS UNBOUNDED PRECEDING) AS cum,
           sum(n) OVER (PARTITION BY series_id, bucket) AS total
    FROM binned b
), merged AS (
    SELECT series_id, bucket, sum(n)::bigint AS count, sum(s ORDER BY k) AS sum, min(lo) AS min, max(hi) AS max,
           max(last_ts) AS last_ts,
           -- the lowest bin (its cum is its own n) and the highest (its cum is the total)
           max(n) FILTER (WHERE cum = n) AS n_first, max(hi) FILTER (WHERE cum = n) AS hi_first,
           max(n) FILTER (WHERE cum = total) AS n_last, min(lo) FILTER (WHERE cum = total) AS lo_last,
           min(k) FILTER (WHERE cum > 0.50 * (total - 1)) AS k50,
           min(k) FILTER (WHERE cum > 0.95 * (total - 1)) AS k95,
           min(k) FILTER (WHERE cum > 0.99 * (total - 1)) AS k99,
           array_agg(k ORDER BY k) AS keys, array_agg(n ORDER BY k) AS counts
    FROM ranked
    GROUP BY series_id, bucket
), buckets AS MATERIALIZED (
    -- MATERIALIZED: the insert reads min_count and max_count several times; inlined, each read
    -- would run its subquery again.
    -- Scalar subqueries, so that each stays a primary-key probe whatever the statistics say:
    -- `last`, the value at the bucket's latest timestamp; and how many values equal the minimum
    -- (maximum), which is the whole lowest (highest) bin when that bin holds nothing else, and
    -- otherwise counted among the bucket's points.
    SELECT m.series_id, m.bucket, m.count, m.sum, m.min, m.max, m.k50, m.k95, m.k99, m.keys, m.counts,
           (SELECT p.value FROM {{points}} p
            WHERE p.series_id = m.series_id AND p.ts = m.last_ts AND p.ts >= %(start)s AND p.ts < %(end)s) AS last,
           CASE WHEN m.hi_first = m.min THEN m.n_first
                ELSE (SELECT count(*) FROM {{points}} p
                      WHERE p.series_id = m.series_id AND p.ts >= m.bucket AND p.ts < m.bucket + interval '5 minutes'
                        AND p.ts >= %(start)s AND p.ts < %(end)s AND p.value = m.min) END AS min_count,
           CASE WHEN m.lo_last = m.max THEN m.n_last
                ELSE (SELECT count(*) FROM {{points}} p
                      WHERE p.series_id = m.series_id AND p.ts >= m.bucket AND p.ts < m.bucket + interval '5 minutes'
                        AND p.ts >= %(start)s AND p.ts < %(end)s AND p.value = m.max) END AS max_count
    FROM merged m
)
