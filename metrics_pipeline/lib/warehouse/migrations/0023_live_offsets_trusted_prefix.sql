-- What the closed-hour run of host files needs to trust the live path's loads (issue 21).
-- The live path loads the hour in progress as it grows (`lib/host/live.py`); at the end of the hour
-- the closed-hour run (`lib/host/files.py`) loads only what the live path has not, instead of
-- re-reading and merging the whole hour into the window, when each file's loaded prefix is provably
-- unchanged:
--   prefix_crc     CRC-32 of the file's first loaded_bytes bytes (NULL: not trusted, e.g. the file
--                  was rewritten after a live load);
--   config_tenant  the tenant the host configuration gave the file's directory ('' for none): a
--                  changed rule changes series identity. NULL: not to be trusted by a closed-hour run
--                  (rows from before this migration, and rows a closed-hour run has already used:
--                  any later run of that hour replaces the window).
ALTER TABLE {{schema}}.live_offsets
    ADD COLUMN prefix_crc bigint,
    ADD COLUMN config_tenant text;
