-- The landing files still waiting to be committed, found without reading the whole table (issue 19).
--
-- `/metrics` reports, per kind, how many indexed landing files hold records not committed yet and
-- the oldest such hour (lib/warehouse/health.py). `landing_files` keeps every file until retention
-- deletes it (14 days and more), almost all of them committed: answering that from the table itself
-- was a sequential scan of all of them (45 ms for 200,000 files, at every scrape). This partial index
-- holds only the waiting files (0.3 ms for the same table). Empty files (no hour) never get
-- `processed_at` and would stay in it forever; they hold nothing to wait for and are left out.
-- Cost on writes: setting `processed_at` is no longer a HOT update, once per file when it is committed.
CREATE INDEX landing_files_waiting_idx ON {{schema}}.landing_files (kind)
    WHERE processed_at IS NULL AND cardinality(hours) > 0;
