-- A compact raw tier (issue 21, goal 3): closed hours packed, one row per series and hour.
--
-- `points` keeps one row per point (~85 bytes with its primary key): right for the hour in
-- progress, which is appended to every few seconds and read by alerts. Once an hour has closed,
-- `lib/warehouse/pack.py` moves each series' points of that hour into one row of `points_packed`:
-- its timestamps and values as two arrays in time order. PostgreSQL compresses them (pglz, TOAST)
-- and the per-row overhead is paid once per 3,600 points: a few bytes a point instead of 85.
--
-- The one rule every writer and reader relies on: a (series, hour) is held either by `points` or
-- by one `points_packed` row, never both. Packing moves a whole (series, hour) in one statement;
-- a load that writes into a packed hour first moves the rows of its source's series back into
-- `points` in its own transaction (`load.py`), so a crash anywhere leaves one state or the other.
--
-- Readers never read one table alone: `points_in(start, end)` (internal consumers: rollups,
-- health, alerts, quality, the custom loader) and `bi_all_points` (BI, `v_points`, the API) are
-- both tables as one relation. `points_in` is an inlinable SQL function: a caller's conditions on
-- series_id reach both arms, and its bounds reach the packed arm as a range of `hour` (its index
-- and its day partitions), so an hour of rollups unpacks that hour's rows only.

CREATE TABLE {{schema}}.points_packed (
    series_id  integer NOT NULL,
    hour       timestamptz NOT NULL,  -- UTC hour the points belong to: ts in [hour, hour + 1 h)
    n          integer NOT NULL,      -- points in the row (cardinality of both arrays)
    last_ts    timestamptz NOT NULL,  -- the latest point, readable without decompressing the arrays
    last_value double precision NOT NULL,
    ts         timestamptz[] NOT NULL,       -- ascending, to the microsecond
    value      double precision[] NOT NULL,  -- value[i] was sampled at ts[i]
    CONSTRAINT points_packed_pkey PRIMARY KEY (series_id, hour),
    CONSTRAINT points_packed_shape CHECK (n > 0 AND cardinality(ts) = n AND cardinality(value) = n)
) PARTITION BY RANGE (hour);
-- Loads look up the packed rows of their window's hours (all series of the hour, then their source).
CREATE INDEX points_packed_hour_idx ON {{schema}}.points_packed (hour);

COMMENT ON TABLE {{schema}}.points_packed IS
    'Closed hours of raw points, one row per series and hour (arrays); partitioned by UTC day.';

-- Hours `points` may hold rows of that are closed and not packed yet: every load appends a mark per
-- hour it wrote (an insert, never an update, so concurrent loads do not wait for each other); the
-- pack deletes the marks it has seen once the hour is packed. A mark written while a pack ran
-- survives it, so late data is packed by the next pass.
CREATE TABLE {{schema}}.points_unpacked_hours (
    hour timestamptz NOT NULL,
    mark bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY
);
CREATE INDEX points_unpacked_hours_hour_idx ON {{schema}}.points_unpacked_hours (hour, mark);

-- The raw points of [p_start, p_end), both tiers as one relation. Not STRICT, not SECURITY DEFINER,
-- no SET: PostgreSQL inlines it into the calling query (EXPLAIN shows the two tables, not a
-- function scan), so the caller's conditions on series_id and ts reach both arms.
CREATE FUNCTION {{schema}}.points_in(p_start timestamptz, p_end timestamptz)
RETURNS TABLE (series_id integer, ts timestamptz, value double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT p.series_id, p.ts, p.value
    FROM {{schema}}.points p
    WHERE p.ts >= p_start AND p.ts < p_end
    UNION ALL
    SELECT pk.series_id, u.ts, u.value
    FROM {{schema}}.points_packed pk
    CROSS JOIN LATERAL unnest(pk.ts, pk.value) AS u(ts, value)
    WHERE pk.hour > p_start - interval '1 hour' AND pk.hour < p_end AND pk.last_ts >= p_start
      AND u.ts >= p_start AND u.ts < p_end
$$;

-- The latest point of one series at or after p_since: one backward probe of each tier's key; a
-- packed hour's latest point is a column of its row (no decompression).
CREATE FUNCTION {{schema}}.latest_point(p_series integer, p_since timestamptz DEFAULT '-infinity')
RETURNS TABLE (ts timestamptz, value double precision)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT x.ts, x.value FROM (
        (SELECT p.ts, p.value FROM {{schema}}.points p
         WHERE p.series_id = p_series AND p.ts >= p_since ORDER BY p.ts DESC LIMIT 1)
        UNION ALL
        (SELECT pk.last_ts, pk.last_value FROM {{schema}}.points_packed pk
         WHERE pk.series_id = p_series AND pk.hour > p_since - interval '1 hour' AND pk.last_ts >= p_since
         ORDER BY pk.hour DESC LIMIT 1)
    ) x
    ORDER BY x.ts DESC LIMIT 1
$$;

-- BI: the same columns as before (v_points, its tenant barrier and the API read through them).
-- `lib/warehouse/packed_view.py` rebuilds this view with an arm per packed day as days are packed
-- (this is its form with no packed day yet), so that a condition on ts selects the days' rows.
CREATE OR REPLACE VIEW {{schema}}.bi_all_points AS
SELECT h.ts, h.value, h.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic
FROM {{schema}}.points h LEFT JOIN {{schema}}.series s ON s.series_id = h.series_id
UNION ALL
-- Each arm joins series itself: a reader's conditions on series columns find the series first, and
-- its packed rows by key (PostgreSQL passes join keys into plain tables only, not into an arm that
-- is itself a join, so with the join above the UNION ALL every packed row would be unnested).
SELECT u.ts, u.value, pk.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic
FROM {{schema}}.points_packed pk
CROSS JOIN LATERAL unnest(pk.ts, pk.value) AS u(ts, value)
LEFT JOIN {{schema}}.series s ON s.series_id = pk.series_id;

CREATE OR REPLACE VIEW {{schema}}.bi_all_latest AS
SELECT s.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       l.ts, l.value, extract(epoch FROM now() - l.ts)::double precision AS age_s
FROM {{schema}}.series s
CROSS JOIN LATERAL (
    -- latest_point's body, written out: a function's tables are read with the caller's rights,
    -- and BI roles may read the views only (they run with the owner's).
    SELECT x.ts, x.value FROM (
        (SELECT p.ts, p.value FROM {{schema}}.points p
         WHERE p.series_id = s.series_id ORDER BY p.ts DESC LIMIT 1)
        UNION ALL
        (SELECT pk.last_ts, pk.last_value FROM {{schema}}.points_packed pk
         WHERE pk.series_id = s.series_id ORDER BY pk.hour DESC LIMIT 1)
    ) x
    ORDER BY x.ts DESC LIMIT 1
) l;

-- The per-day arms of bi_all_points are dropped by the planner only with constraint_exclusion = on
-- (the default, `partition`, proves nothing about a function scan's rows). For every session of this
-- database when the migrating role owns it (or is a superuser); BI logins get it from
-- `bi.ensure_role` in any case. Elsewhere v_points returns the same rows, reading every packed day.
DO $$
BEGIN
    EXECUTE format('ALTER DATABASE %I SET constraint_exclusion = on', current_database());
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'constraint_exclusion not set for database %: not its owner (BI logins set it themselves)',
        current_database();
END $$;
