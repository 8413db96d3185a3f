-- Move every point of [hour, end) from `points` into one `points_packed` row per series: one
-- statement, so each (series, hour) is in exactly one of the two tables at any commit.
-- All aggregates share one ORDER BY: PostgreSQL 16 sorts the input once, by (series_id, ts).
WITH moved AS (
    DELETE FROM {{schema}}.points p
    WHERE p.ts >= %(hour)s AND p.ts < %(end)s
    RETURNING p.series_id, p.ts, p.value
), packed AS (
    SELECT m.series_id, array_agg(m.ts ORDER BY m.ts) AS ts, array_agg(m.value ORDER BY m.ts) AS value
    FROM moved m
    GROUP BY m.series_id
)
INSERT INTO {{schema}}.points_packed (series_id, hour, n, last_ts, last_value, ts, value)
SELECT k.series_id, %(hour)s, cardinality(k.ts), k.ts[cardinality(k.ts)], k.value[cardinality(k.value)], k.ts, k.value
FROM packed k
