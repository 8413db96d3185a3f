-- What each hour of pushed items holds, so the hour in progress loads only what is new (issue 18).
--
-- `custom_points` / `custom_events` used to replace their hour from every file of the hour at each
-- 30 s run: quadratic in the hour. Now a run that finds the hour already loaded from files F and
-- sees new files or new committed lines G loads only G (lib/custom/load.py). To leave exactly what
-- a full reload of F and G would leave, the loader keeps, per (kind, hour), written in the same
-- transaction as the rows:
-- * `custom_load_hours`: the hour's totals (read = loaded + quarantined, duplicates, rows, tenants,
--   reasons) and the order of the latest write loaded (received_at, file, position): a new item
--   ordered after it wins whatever it repeats; one ordered before it must not repeat a loaded
--   identity (else the run falls back to a full reload);
-- * `custom_load_files`: per file of the hour, the committed prefix read (bytes, and a digest of
--   them: a file rewritten rather than appended to, or gone, means a full reload), its committed
--   items and corrupt lines (positions and counts continue from there), its version when read.
-- `rule` is the version of the loader's rules that wrote a row: another one means a full reload.
-- Rows of hours no item can reach any more (older than the API's back window) are deleted by the
-- loader.

CREATE TABLE {{schema}}.custom_load_hours (
    kind               text NOT NULL,              -- custom_measures | custom_events
    hour               timestamptz NOT NULL,
    rule               integer NOT NULL,
    last_received_at   timestamptz,                -- the latest write loaded: received_at,
    last_key           text,                       -- then file,
    last_position      integer,                    -- then position in the file (NULL: nothing loaded)
    items_read         bigint NOT NULL,
    loaded             bigint NOT NULL,
    duplicates         bigint NOT NULL,
    quarantined        bigint NOT NULL,
    corrupt_lines      bigint NOT NULL,
    refused_files      integer NOT NULL,
    rows               bigint NOT NULL,            -- points (or events) of the hour
    tenants            text[] NOT NULL,
    reasons            jsonb NOT NULL,             -- quarantine reason -> count
    full_at            timestamptz NOT NULL,       -- loader clock of the last full replace
    loaded_at          timestamptz NOT NULL,       -- loader clock of the last load, full or not
    incremental_loads  integer NOT NULL,           -- incremental loads since the last full replace
    CONSTRAINT custom_load_hours_pkey PRIMARY KEY (kind, hour)
);

CREATE TABLE {{schema}}.custom_load_files (
    kind           text NOT NULL,
    hour           timestamptz NOT NULL,
    key            text NOT NULL,
    etag           text NOT NULL,                  -- the version listed when read
    loaded_bytes   bigint NOT NULL,                -- committed prefix read (-1: the zone refused the file)
    digest         text NOT NULL,                  -- sha1 of that prefix
    items          integer NOT NULL,               -- committed items in the prefix (every hour's)
    corrupt_lines  integer NOT NULL,               -- corrupt lines in the prefix
    torn           boolean NOT NULL,               -- bytes after the prefix were left (a batch being written)
    CONSTRAINT custom_load_files_pkey PRIMARY KEY (kind, hour, key)
);

COMMENT ON TABLE {{schema}}.custom_load_hours IS
    'Per kind and hour of pushed items: totals and the latest write loaded (incremental loads).';
COMMENT ON TABLE {{schema}}.custom_load_files IS
    'Per kind, hour and landing file: the committed prefix loaded, its digest and counts (incremental loads).';
