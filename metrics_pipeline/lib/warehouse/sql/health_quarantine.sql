-- Quarantined records per quarantine source whose record hour is at or after %(since)s. The table is
-- never expired, so counting all of it grows without bound (120 ms for a million rows); its index
-- (source, record_hour) answers a recent window per source in proportion to that window's rows.
-- The sources: a loose scan of the same index, one descent each.
WITH RECURSIVE sources AS (
    SELECT min(source) AS source FROM {{schema}}.quarantine
    UNION ALL
    SELECT (SELECT min(q.source) FROM {{schema}}.quarantine q WHERE q.source > sources.source)
    FROM sources WHERE sources.source IS NOT NULL
)
SELECT src.source,
       (SELECT count(*) FROM {{schema}}.quarantine q WHERE q.source = src.source AND q.record_hour >= %(since)s) AS records
FROM sources src
WHERE src.source IS NOT NULL
ORDER BY src.source
