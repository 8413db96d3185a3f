-- Shared tail: percentiles from the merged bins, and the insert into {{target}}.
-- Percentile q is the sketch value of the bin holding the sample of 0-based rank floor(q * (n - 1))
-- (numpy's method="lower"), clamped to the bucket's exact [min, max]: within 1 percent of that sample.
, ranked AS (
    SELECT series_id, bucket, k, n,
           sum(n) OVER (PARTITION BY series_id, bucket ORDER BY k ROWS UNBOUNDED PRECEDING) AS cum,
           sum(n) OVER (PARTITION BY series_id, bucket) AS total
    FROM binned
), sketch AS (
    SELECT series_id, bucket,
           min(k) FILTER (WHERE cum > 0.50 * (total - 1)) AS k50,
           min(k) FILTER (WHERE cum > 0.95 * (total - 1)) AS k95,
           min(k) FILTER (WHERE cum > 0.99 * (total - 1)) AS k99,
           array_agg(k ORDER BY k) AS keys, array_agg(n ORDER BY k) AS counts
    FROM ranked
    GROUP BY series_id, bucket
)
INSERT INTO {{schema}}.{{target}}
    (series_id, bucket, count, sum, min, max, avg, last, p50, p95, p99, sketch_keys, sketch_counts)
SELECT st.series_id, st.bucket, st.count, st.sum, st.min, st.max, st.sum / st.count, st.last,
       least(st.max, greatest(st.min, {{schema}}.sketch_value(sk.k50))),
       least(st.max, greatest(st.min, {{schema}}.sketch_value(sk.k95))),
       least(st.max, greatest(st.min, {{schema}}.sketch_value(sk.k99))),
       sk.keys, sk.counts
FROM stats st
JOIN sketch sk ON sk.series_id = st.series_id AND sk.bucket = st.bucket
