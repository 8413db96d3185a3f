-- A year of one series' daily sketches, read by series (issue 19: a summary over a year adds up
-- each series' 365 daily sketches, `lib/query.py`). The side table's key leads with the bucket
-- (migration 0013: the rollup merge probes by exact key and a refresh deletes by bucket window), so
-- "these 10 series, this year" read every series' rows of the year: a sequential scan of 73,000
-- rows of ~1.4 KB for 3,650 of them (40 ms of a 100 ms query on the API benchmark's data). The
-- daily tier is small (a row per series and day), so a second index costs little: ~2 MB a year for
-- 200 series. The hourly and 5-minute tiers are not indexed so: a week of hourly rows is a short
-- range of their key already.
CREATE INDEX rollup_1d_sketch_series_idx ON {{schema}}.rollup_1d_sketch (series_id, bucket);
