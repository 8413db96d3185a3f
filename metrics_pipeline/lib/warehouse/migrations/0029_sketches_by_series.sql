-- Hourly, 5-minute and monthly sketches, read by series (issue 19). Migration 0024 indexed only the
-- daily side table by (series_id, bucket), reasoning that a week of hourly rows "is a short range of
-- their key already". It is short in buckets, not in rows: the side tables' keys lead with the
-- bucket (migration 0013: the merge probes by exact key, a refresh deletes by bucket window), so
-- one series' week at 6 h p95 reads every series' 168 hourly rows to keep its own. On the API
-- benchmark's 200 series that is 33,600 index entries for 168 rows (2.5 ms of a 7 ms request); a
-- fleet of 1,000 hosts has ~40,000 series, 6.7 M entries, and a day at 30-minute p95 over 5-minute
-- sketches 11.5 M. With these indexes the same reads probe each series' own range.
--
-- Cost: about 30 bytes a sketch row (a sketch row is ~400 bytes: +7 %) and one more index insert
-- per row a rollup refresh writes. On an existing large warehouse the build holds writes to the
-- side tables until it finishes (minutes for a year of hourly sketches of thousands of series):
-- run the migration between rollup runs.
CREATE INDEX rollup_1h_sketch_series_idx ON {{schema}}.rollup_1h_sketch (series_id, bucket);
CREATE INDEX rollup_5m_sketch_series_idx ON {{schema}}.rollup_5m_sketch (series_id, bucket);
CREATE INDEX rollup_1mo_sketch_series_idx ON {{schema}}.rollup_1mo_sketch (series_id, bucket);
