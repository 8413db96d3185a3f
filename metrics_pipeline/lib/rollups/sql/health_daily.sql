-- A day's series health from its hourly rows (migration 0027), per series: every column adds up, so
-- a summary reading this row answers what the day's 24 hourly rows would. replace_window has
-- deleted [start, end) of series_health_daily. Days are UTC (date_bin from midnight).
INSERT INTO {{schema}}.series_health_daily (series_id, bucket, hours, expected, received_expected, received,
                                            warning_threshold, critical_threshold, above_warning_s, above_critical_s)
SELECT series_id, date_bin(interval '1 day', bucket, TIMESTAMPTZ '2000-01-01 00:00:00+00'), count(*)::integer,
       sum(expected), sum(received) FILTER (WHERE expected IS NOT NULL), sum(received),
       max(warning_threshold), max(critical_threshold), sum(above_warning_s), sum(above_critical_s)
FROM {{schema}}.series_health_hourly
WHERE bucket >= %(start)s AND bucket < %(end)s
GROUP BY 1, 2
