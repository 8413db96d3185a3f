-- Per kind of indexed landing file (ingestion_logs, custom_measures, ...): how many files hold records
-- not committed yet, and the oldest such hour. The kinds: a loose scan of the primary key (kind, key);
-- the waiting files: the partial index of migration 0019, which holds only them.
WITH RECURSIVE kinds AS (
    SELECT min(kind) AS kind FROM {{schema}}.landing_files
    UNION ALL
    SELECT (SELECT min(f.kind) FROM {{schema}}.landing_files f WHERE f.kind > kinds.kind)
    FROM kinds WHERE kinds.kind IS NOT NULL
)
SELECT k.kind, w.files, w.oldest_hour
FROM kinds k
CROSS JOIN LATERAL (
    SELECT count(*) AS files,
           min((SELECT min(h) FROM unnest(f.hours) h WHERE h <> ALL (f.processed_hours))) AS oldest_hour
    FROM {{schema}}.landing_files f
    WHERE f.kind = k.kind AND f.processed_at IS NULL AND cardinality(f.hours) > 0
) w
WHERE k.kind IS NOT NULL
ORDER BY k.kind
