-- How much of each landing file the live path has loaded (issue 15).
-- The hour in progress is loaded as it grows: every 30 s, only the complete lines appended to a
-- file since the last load are parsed and written (`lib/host/live.py`). This table remembers, per
-- file, its version (etag) and the byte offset up to which it was loaded, in the same transaction
-- as the points; the closed-hour run still replaces the whole window. Rows of past hours are
-- deleted by the live path itself once their hour has closed.
CREATE TABLE {{schema}}.live_offsets (
    kind          text NOT NULL,
    key           text NOT NULL,
    etag          text NOT NULL,
    loaded_bytes  bigint NOT NULL CHECK (loaded_bytes >= 0),
    hour          timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kind, key)
);
COMMENT ON TABLE {{schema}}.live_offsets IS
    'Byte offset of each landing file of the hour in progress already loaded by the live path.';
