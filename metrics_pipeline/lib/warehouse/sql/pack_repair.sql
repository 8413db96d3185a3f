-- Before packing (series, hour)s: a packed row whose series also has rows of the hour in `points`
-- (written by a writer that did not unpack first) goes back to `points` first, the rows already
-- there winning; the pack that follows then holds both. Normally finds nothing: one probe of the
-- primary key of `points` per packed row of the hour.
WITH gone AS (
    DELETE FROM {{schema}}.points_packed pk
    WHERE pk.hour = %(hour)s
      AND EXISTS (SELECT 1 FROM {{schema}}.points p
                  WHERE p.series_id = pk.series_id AND p.ts >= %(hour)s AND p.ts < %(end)s)
    RETURNING pk.series_id, pk.ts, pk.value
)
INSERT INTO {{schema}}.points (series_id, ts, value)
SELECT g.series_id, u.ts, u.value FROM gone g CROSS JOIN LATERAL unnest(g.ts, g.value) AS u(ts, value)
ON CONFLICT (series_id, ts) DO NOTHING
