-- What the pipeline knows about each landing-zone file: which hours it holds records for (so an
-- hourly partition finds its files without reading the whole zone) and whether its data is
-- committed. processed_hours/processed_at are written in the same transaction as the data, so a
-- file is "processed" exactly when the rows of all its hours are in the warehouse; retention
-- deletes only such files.

CREATE TABLE {{schema}}.landing_files (
    kind            text NOT NULL,              -- host, ingestion_logs
    key             text NOT NULL,              -- path inside the landing zone
    etag            text NOT NULL,              -- size/mtime (local) or S3 ETag when indexed
    size            bigint NOT NULL,
    hours           timestamptz[] NOT NULL DEFAULT '{}',
    records         integer,                    -- records (lines, array items) read when indexed
    indexed_at      timestamptz NOT NULL DEFAULT now(),
    processed_hours timestamptz[] NOT NULL DEFAULT '{}',  -- hours of this version committed so far
    processed_at    timestamptz,                           -- set once every hour of the file is committed
    processed_etag  text,
    CONSTRAINT landing_files_pkey PRIMARY KEY (kind, key)
);
CREATE INDEX landing_files_hours_idx ON {{schema}}.landing_files USING gin (hours);

COMMENT ON TABLE {{schema}}.landing_files IS 'Landing-zone files seen by the pipeline: hours covered and commit status.';
