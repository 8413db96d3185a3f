-- Anomaly scores per series and 5-minute bucket, the detector's state before each hour, and
-- `v_anomalies` (issue 20, SPEC §11, §12). Written by the asset `anomaly_scores`
-- (lib/anomalies/scores.py) from `rollup_5m`'s `avg`.
--
-- anomaly_scores   one row per series and 5-minute bucket scored: the value scored, the detector's
--                  expected value and band, its score and surprise, and whether the bucket is
--                  flagged. Partitioned by UTC day like rollup_5m and expired with it (retention
--                  follows rollup_5m: the scores describe those buckets).
-- anomaly_state    the detector's state of a series *before* an hour (after every bucket before it):
--                  re-scoring hour H starts from the state stored at H, so a re-run gives the same
--                  rows bit for bit and costs work proportional to the hour. About 25 KB a series
--                  (zlib-compressed, so stored EXTERNAL: PostgreSQL does not try to compress it
--                  again). Partitioned by day; retention keeps a few days (config/retention.yaml
--                  `anomaly_state`, default 3 days): enough for re-runs of recent hours.
-- anomaly_hours    one row per hour scored: what it holds, and `stale_since`, set when the state at
--                  its start changed after it was scored (an earlier hour re-scored with late data).
--                  The `anomaly_rescore_sensor` re-scores stale hours in order.

CREATE TABLE {{schema}}.anomaly_scores (
    series_id    integer NOT NULL,
    bucket       timestamptz NOT NULL,
    value        double precision NOT NULL,   -- the bucket's avg (rollup_5m), the value scored
    expected     double precision,            -- NULL while the detector warms up
    lower        double precision,
    upper        double precision,
    score        double precision NOT NULL,   -- in [0, 1]: high at the start of an event, once
    surprise     double precision NOT NULL,   -- in [0, 1]: high at every bucket of an event
    flagged      boolean NOT NULL,            -- score >= the configured threshold, past warm-up
    description  text,                        -- flagged buckets: "expected 20–35 %, saw 92 %"
    CONSTRAINT anomaly_scores_pkey PRIMARY KEY (series_id, bucket)
) PARTITION BY RANGE (bucket);

-- Window replaces and dashboards read "this bucket range, all series"; "the anomalies of the last
-- day" reads the flagged rows only.
CREATE INDEX anomaly_scores_bucket_idx ON {{schema}}.anomaly_scores (bucket);
CREATE INDEX anomaly_scores_flagged_idx ON {{schema}}.anomaly_scores (bucket) WHERE flagged;

CREATE TABLE {{schema}}.anomaly_state (
    series_id       integer NOT NULL,
    hour            timestamptz NOT NULL,     -- the state before this hour
    state           bytea NOT NULL,           -- lib.anomalies.state_to_bytes
    digest          bytea NOT NULL,           -- sha256 of state: a changed state is seen without reading it
    samples         bigint NOT NULL,          -- buckets the detector has learnt from
    learning_since  timestamptz,              -- its first bucket (warm-up is counted from it)
    written_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT anomaly_state_pkey PRIMARY KEY (series_id, hour)
) PARTITION BY RANGE (hour);
ALTER TABLE {{schema}}.anomaly_state ALTER COLUMN state SET STORAGE EXTERNAL;

CREATE TABLE {{schema}}.anomaly_hours (
    hour         timestamptz PRIMARY KEY,
    scored_at    timestamptz NOT NULL,
    series       integer NOT NULL,            -- series with buckets in the hour
    rows         integer NOT NULL,
    flagged      integer NOT NULL,
    kept         integer NOT NULL DEFAULT 0,  -- series whose rows were kept (their state was expired)
    stale_since  timestamptz                  -- the state at its start changed after it was scored
);
CREATE INDEX anomaly_hours_stale_idx ON {{schema}}.anomaly_hours (hour) WHERE stale_since IS NOT NULL;

COMMENT ON TABLE {{schema}}.anomaly_scores IS 'Anomaly score, expected value and band per series and 5-minute bucket; partitioned by UTC day like rollup_5m.';
COMMENT ON TABLE {{schema}}.anomaly_state IS 'Anomaly detector state of each series before each hour (recent days only).';
COMMENT ON TABLE {{schema}}.anomaly_hours IS 'Hours scored by anomaly_scores, and those to score again (stale).';

-- BI: built exactly like the views of 0012 (a plain branch, a barrier branch, a gate).
CREATE VIEW {{schema}}.bi_all_anomalies AS
SELECT a.bucket AS bucket_start, a.bucket + interval '5 minutes' AS bucket_end,
       a.series_id, s.source, s.metric, s.resource, s.unit, s.tenant, s.labels,
       s.labels ->> 'host' AS host, s.labels ->> 'statistic' AS statistic,
       a.value, a.expected, a.lower, a.upper, a.score, a.surprise, a.flagged, a.description
FROM {{schema}}.anomaly_scores a
LEFT JOIN {{schema}}.series s ON s.series_id = a.series_id;

CREATE VIEW {{schema}}.bi_tenant_anomalies WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_anomalies WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.v_anomalies AS
SELECT * FROM {{schema}}.bi_all_anomalies WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_anomalies WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;
