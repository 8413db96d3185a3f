-- Pushed events (issue 18, SPEC §2.5, §12): `events`, partitioned by month of `ts`, and `v_events`.
--
-- An event's identity is (tenant, name, ts, metadata, text) (SPEC §12): the same identity twice (a
-- client retry, a redelivery) leaves one row, the later write's. Text may be 64 KB and metadata 32
-- values of 1 KB, too large for a btree entry, so the loader (lib/custom/load.py `event_key`)
-- stores the md5 of the canonical identity as `event_key`; the primary key is (event_key, ts), as
-- every unique key of a partitioned table must hold the partition column.
-- `source_file` is the landing file the row was last loaded from: a re-run replaces the rows of the
-- files still in the landing zone and keeps those of files that retention deleted since.

CREATE TABLE {{schema}}.events (
    tenant       text NOT NULL,
    name         text NOT NULL,
    ts           timestamptz NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    text         text,
    received_at  timestamptz NOT NULL,
    event_key    uuid NOT NULL,               -- md5 of (tenant, name, ts, metadata, text)
    source_file  text NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (event_key, ts)
) PARTITION BY RANGE (ts);

CREATE INDEX events_ts_idx ON {{schema}}.events (ts);
CREATE INDEX events_tenant_name_ts_idx ON {{schema}}.events (tenant, name, ts);

COMMENT ON TABLE {{schema}}.events IS
    'Events pushed through the API (deploys, config changes, notes); one row per identity, partitioned by month of ts.';

-- BI: built exactly like the views of 0012 (a plain branch, a barrier branch, a gate).
CREATE VIEW {{schema}}.bi_all_events AS
SELECT e.ts, e.tenant, e.name, e.text, e.metadata, e.received_at, e.event_key AS event_id
FROM {{schema}}.events e;

CREATE VIEW {{schema}}.bi_tenant_events WITH (security_barrier) AS
SELECT * FROM {{schema}}.bi_all_events WHERE tenant IN (SELECT t FROM unnest({{schema}}.visible_tenants(current_user::text)) t);

CREATE VIEW {{schema}}.v_events AS
SELECT * FROM {{schema}}.bi_all_events WHERE {{schema}}.visible_tenants(current_user::text) IS NULL
UNION ALL
SELECT * FROM {{schema}}.bi_tenant_events WHERE {{schema}}.visible_tenants(current_user::text) IS NOT NULL;
