-- Exact extremes for the rollup percentiles (issue 16).
-- A percentile is the representative of a 2 % wide sketch bin, so a p95 of a 0/1 metric read 0.99.
-- Each row now also counts the values equal to its min and its max; when the requested rank falls
-- among them, the percentile is that exact value (still within the 1 % bound: it is the sample).
-- The counts merge like the sketch: a coarser bucket adds the counts of the finer rows whose min
-- (max) equals its own. NULL on rows written before this migration means unknown: such a row's
-- percentiles keep the bin's representative, as before, and a coarser bucket merging it counts only
-- the rows that have a count (a lower bound, still safe to read an exact extreme from).
ALTER TABLE {{schema}}.rollup_5m ADD COLUMN min_count bigint, ADD COLUMN max_count bigint;
ALTER TABLE {{schema}}.rollup_1h ADD COLUMN min_count bigint, ADD COLUMN max_count bigint;
ALTER TABLE {{schema}}.rollup_1d ADD COLUMN min_count bigint, ADD COLUMN max_count bigint;

COMMENT ON COLUMN {{schema}}.rollup_5m.min_count IS 'Values of the bucket equal to min (NULL: unknown, written before migration 0010).';
COMMENT ON COLUMN {{schema}}.rollup_5m.max_count IS 'Values of the bucket equal to max (NULL: unknown, written before migration 0010).';
COMMENT ON COLUMN {{schema}}.rollup_1h.min_count IS 'Values of the bucket equal to min (NULL: unknown, written before migration 0010).';
COMMENT ON COLUMN {{schema}}.rollup_1h.max_count IS 'Values of the bucket equal to max (NULL: unknown, written before migration 0010).';
COMMENT ON COLUMN {{schema}}.rollup_1d.min_count IS 'Values of the bucket equal to min (NULL: unknown, written before migration 0010).';
COMMENT ON COLUMN {{schema}}.rollup_1d.max_count IS 'Values of the bucket equal to max (NULL: unknown, written before migration 0010).';
