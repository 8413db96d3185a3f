-- Points per source whose timestamps fall in the last hour, as rollup_5m counts them: the raw
-- `points` has no ts index (counting them would read every point of the hour), rollup_5m has one
-- on bucket and a row per series and 5 minutes. As current as the rollups of the hour in progress.
SELECT s.source, sum(r.count)::bigint AS points
FROM {{schema}}.rollup_5m r
JOIN {{schema}}.series s ON s.series_id = r.series_id
WHERE r.bucket >= %(since)s
GROUP BY s.source
