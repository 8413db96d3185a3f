-- The newest sample of each point source (`/metrics`, lib/warehouse/health.py).
-- `points` has no index on ts alone, only its primary key (series_id, ts): per series, one backward
-- probe of that key (`latest_point`: and one of `points_packed`'s, whose rows carry their latest point). Bounded by %(since)s first, so only the newest day's partitions are opened (about
-- 5 us a series, 2 ms for 500); a source with nothing since then (stale, or every series silent) is
-- looked up again without the bound, its series only, walking the partitions newest first until
-- one holds a point (the COALESCE evaluates that sub-select for such sources alone).
-- The sources themselves: a loose scan of series_source_metric_idx, one descent per distinct source.
WITH RECURSIVE sources AS (
    SELECT min(source) AS source FROM {{schema}}.series
    UNION ALL
    SELECT (SELECT min(s.source) FROM {{schema}}.series s WHERE s.source > sources.source)
    FROM sources WHERE sources.source IS NOT NULL
), recent AS (
    SELECT s.source, max(l.ts) AS newest
    FROM {{schema}}.series s
    CROSS JOIN LATERAL {{schema}}.latest_point(s.series_id, %(since)s) l
    GROUP BY s.source
)
SELECT src.source,
       coalesce(r.newest, (
           SELECT max(l.ts)
           FROM {{schema}}.series s
           CROSS JOIN LATERAL {{schema}}.latest_point(s.series_id) l
           WHERE s.source = src.source
       )) AS newest
FROM sources src
LEFT JOIN recent r ON r.source = src.source
WHERE src.source IS NOT NULL
ORDER BY src.source
