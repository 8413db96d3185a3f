-- A series' nominal sampling interval, per UTC day (issue 15).
-- Alert rules decide whether two samples are continuous (a hold goes on) or a gap (it breaks, or
-- the series went silent) from this interval: `max_gap` defaults to 2.5 times it. It used to be the
-- median spacing of whatever one evaluation read, so re-running hours in another order gave other
-- gaps and other alerts. Loads record it instead: for each series and day a load touches, the median
-- spacing of (at most the first 64 of) its samples there, combined with `least`, which gives the
-- same value whatever the order of the loads. Per day, because one series can change resolution
-- over its history (CloudWatch keeps 1-minute data 15 days, then 5-minute).
CREATE TABLE {{schema}}.series_intervals (
    series_id   integer NOT NULL REFERENCES {{schema}}.series (series_id) ON DELETE CASCADE,
    day         date NOT NULL,
    interval_s  double precision NOT NULL CHECK (interval_s > 0),
    PRIMARY KEY (series_id, day)
);
COMMENT ON TABLE {{schema}}.series_intervals IS
    'Nominal sampling interval of a series per UTC day (median spacing seen by loads); alert gap tolerance derives from it.';
