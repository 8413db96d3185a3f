-- A load is about to write into [start, end) for `source` (or only its series `only`): the packed
-- rows of those series in the hours the window touches go back to `points`, in the load's own
-- transaction, so the load's merge sees every stored point of its window in one table. The rows
-- already in `points` win (there are none while every writer unpacks first).
WITH gone AS (
    DELETE FROM {{schema}}.points_packed pk
    USING {{schema}}.series s
    WHERE pk.hour >= %(first_hour)s AND pk.hour < %(end)s
      AND s.series_id = pk.series_id AND s.source = %(source)s
      AND (%(only)s::integer[] IS NULL OR pk.series_id = ANY(%(only)s::integer[]))
    RETURNING pk.series_id, pk.ts, pk.value
)
INSERT INTO {{schema}}.points (series_id, ts, value)
SELECT g.series_id, u.ts, u.value FROM gone g CROSS JOIN LATERAL unnest(g.ts, g.value) AS u(ts, value)
ON CONFLICT (series_id, ts) DO NOTHING
