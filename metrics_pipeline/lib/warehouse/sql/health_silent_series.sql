-- Per point source, the series with no sample ("no data") and those reporting, in the newest complete
-- hour series_health_hourly holds (bucket + 1 h <= %(now)s). One probe of its bucket index for the
-- hour, then that hour's rows (one per series that reported within the previous day).
WITH hour AS (
    SELECT max(bucket) AS bucket FROM {{schema}}.series_health_hourly WHERE bucket <= %(now)s - interval '1 hour'
)
SELECT s.source, hour.bucket,
       count(*) FILTER (WHERE h.no_data) AS silent,
       count(*) FILTER (WHERE NOT h.no_data) AS reporting
FROM hour
JOIN {{schema}}.series_health_hourly h ON h.bucket = hour.bucket
JOIN {{schema}}.series s ON s.series_id = h.series_id
GROUP BY s.source, hour.bucket
ORDER BY s.source
