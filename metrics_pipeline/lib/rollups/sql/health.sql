-- Completeness, gaps and time above thresholds per series and hour of [start, end) (SPEC §5).
-- Parameters: start, end, now (coverage stops there for the in-progress hour), lookback (series
-- seen within it before `start` and silent now get "no data" rows), thresholds (jsonb array of
-- {"metric", "warning", "critical"}).
-- The sampling interval of a series is the median spacing of its samples in the hour (robust to
-- gaps, unlike the mean); an hour with fewer than two samples reuses the series' latest known one.
WITH pts AS MATERIALIZED (
    SELECT p.series_id, p.ts, p.value,
           date_bin(interval '1 hour', p.ts, TIMESTAMPTZ '2000-01-01 00:00:00+00') AS bucket,
           extract(epoch FROM lead(p.ts) OVER (PARTITION BY p.series_id ORDER BY p.ts) - p.ts) AS spacing_s
    FROM {{schema}}.points_in(%(start)s, %(end)s) p  -- both tiers, packed hours too (migration 0026)
), observed AS (
    SELECT series_id, bucket, count(*)::integer AS received, min(ts) AS first_ts, max(ts) AS last_ts,
           percentile_disc(0.5) WITHIN GROUP (ORDER BY spacing_s) AS spacing_s,
           max(spacing_s) FILTER (WHERE ts + make_interval(secs => spacing_s) <= bucket + interval '1 hour')
               AS max_spacing_s
    FROM pts
    GROUP BY series_id, bucket
), history AS (
    -- Series seen before this window, with their latest known interval.
    SELECT DISTINCT ON (h.series_id) h.series_id, h.interval_s
    FROM {{schema}}.series_health_hourly h
    WHERE h.bucket >= %(start)s - %(lookback)s::interval AND h.bucket < %(start)s AND h.received > 0
    ORDER BY h.series_id, h.bucket DESC
), hours AS (
    SELECT g AS bucket FROM generate_series(%(start)s::timestamptz, %(end)s::timestamptz - interval '1 hour',
                                            interval '1 hour') g
    WHERE g < %(now)s
), grid AS (
    -- Every (series, hour) to report: hours with samples, and silent hours of series already known.
    SELECT o.series_id, o.bucket FROM observed o
    UNION
    SELECT k.series_id, hr.bucket
    FROM (SELECT series_id FROM history UNION SELECT series_id FROM observed) k
    CROSS JOIN hours hr
    WHERE EXISTS (SELECT 1 FROM history h WHERE h.series_id = k.series_id)
       OR hr.bucket > (SELECT min(o.bucket) FROM observed o WHERE o.series_id = k.series_id)
), shaped AS (
    SELECT g.series_id, g.bucket, o.received, o.first_ts, o.last_ts, o.max_spacing_s,
           -- the hour's own median spacing, else the nearest earlier hour's, else history's
           coalesce(o.spacing_s,
                    (SELECT o2.spacing_s FROM observed o2 WHERE o2.series_id = g.series_id AND o2.bucket < g.bucket
                       AND o2.spacing_s IS NOT NULL ORDER BY o2.bucket DESC LIMIT 1),
                    (SELECT h.interval_s FROM history h WHERE h.series_id = g.series_id)) AS interval_s,
           -- coverage starts at the hour, or at the first sample ever seen if the series is new
           CASE WHEN EXISTS (SELECT 1 FROM history h WHERE h.series_id = g.series_id)
                  OR EXISTS (SELECT 1 FROM observed o3 WHERE o3.series_id = g.series_id AND o3.bucket < g.bucket)
                THEN g.bucket ELSE coalesce(o.first_ts, g.bucket) END AS cover_start,
           least(g.bucket + interval '1 hour', %(now)s::timestamptz) AS cover_end
    FROM grid g
    LEFT JOIN observed o ON o.series_id = g.series_id AND o.bucket = g.bucket
), thresholds AS (
    SELECT t.metric, t.warning, t.critical
    FROM jsonb_to_recordset(%(thresholds)s::jsonb) AS t(metric text, warning double precision, critical double precision)
), above AS (
    -- Each sample holds until the next one, at most 1.5 sampling intervals, never past the hour.
    -- Added in time order: the same points give the same bits whatever order the rows are read in
    -- (rows of `points`, or an hour unpacked from `points_packed`).
    SELECT p.series_id, p.bucket,
           sum(least(coalesce(p.spacing_s, 1.5 * sh.interval_s), 1.5 * sh.interval_s,
                     extract(epoch FROM sh.cover_end - p.ts)) ORDER BY p.ts) FILTER (WHERE p.value > t.warning) AS warning_s,
           sum(least(coalesce(p.spacing_s, 1.5 * sh.interval_s), 1.5 * sh.interval_s,
                     extract(epoch FROM sh.cover_end - p.ts)) ORDER BY p.ts) FILTER (WHERE p.value > t.critical) AS critical_s
    FROM pts p
    JOIN {{schema}}.series s ON s.series_id = p.series_id
    JOIN thresholds t ON t.metric = s.metric
    JOIN shaped sh ON sh.series_id = p.series_id AND sh.bucket = p.bucket
    GROUP BY p.series_id, p.bucket
)
INSERT INTO {{schema}}.series_health_hourly
    (series_id, bucket, interval_s, expected, received, completeness, no_data, max_gap_s,
     warning_threshold, critical_threshold, above_warning_s, above_critical_s)
SELECT sh.series_id, sh.bucket, sh.interval_s, e.expected, coalesce(sh.received, 0),
       CASE WHEN e.expected > 0 THEN least(1.0, coalesce(sh.received, 0)::double precision / e.expected) END,
       sh.received IS NULL,
       CASE WHEN sh.received IS NULL THEN extract(epoch FROM sh.cover_end - sh.cover_start)
            ELSE greatest(extract(epoch FROM sh.first_ts - sh.cover_start),
                          coalesce(sh.max_spacing_s, 0),
                          extract(epoch FROM sh.cover_end - sh.last_ts)) END,
       t.warning, t.critical,
       CASE WHEN t.warning IS NOT NULL THEN coalesce(a.warning_s, 0) END,
       CASE WHEN t.critical IS NOT NULL THEN coalesce(a.critical_s, 0) END
FROM shaped sh
JOIN {{schema}}.series s ON s.series_id = sh.series_id
LEFT JOIN thresholds t ON t.metric = s.metric
LEFT JOIN above a ON a.series_id = sh.series_id AND a.bucket = sh.bucket
CROSS JOIN LATERAL (
    SELECT CASE WHEN sh.interval_s > 0
                THEN greatest(1, floor(extract(epoch FROM sh.cover_end - sh.cover_start) / sh.interval_s)::integer
                                 + CASE WHEN sh.cover_start > sh.bucket THEN 1 ELSE 0 END)
           END AS expected
) e
WHERE sh.cover_end > sh.cover_start OR sh.received IS NOT NULL
