-- Narrow rollup rows (issue 17, item 3): the percentile sketches move to a table of their own per tier.
--
-- Every rollup row carried its sketch (`sketch_keys`, `sketch_counts`, 30-120 bins: ~0.9 KB of a
-- ~1.1 KB row), so every BI scan of a tier read four to eight times the pages its columns need.
-- Two ways were measured on PostgreSQL 15 (a month of rollup_1h, 200 series x 720 hours, 30-120 bins):
-- * TOAST (`toast_tuple_target = 128`, with or without `SET STORAGE EXTERNAL`): no effect at all
--   (heap 160.8 MB before and after). The toaster only runs for a row longer than
--   TOAST_TUPLE_THRESHOLD, ~2 KB, fixed at compile time; toast_tuple_target is only how far it
--   shrinks such a row. A ~1.1 KB row is never toasted, whatever the table says. (lz4 would not
--   have helped either: the embedded server is built without it.)
-- * A side table per tier, `rollup_5m_sketch`, `rollup_1h_sketch`, `rollup_1d_sketch`
--   (series_id, bucket, sketch_keys, sketch_counts), partitioned exactly like its tier. Chosen:
--   the month's heap 160.8 -> 20.0 MB, a sequential scan 20,585 -> 2,566 pages (cold, first run
--   after a restart: avg(avg) 95 -> 59 ms, count(*) 121 -> 52 ms), everything together 189.7 ->
--   188.9 MB; rollup refresh time unchanged within noise (benchmarks/rollups.py; per tier
--   5 m 4.68 -> 4.67 s, 1 h 0.93 -> 0.92 s, 1 d 0.12 -> 0.12 s for 50 series x 1 day at 1 s).
--
-- How the side tables are kept in step with the tiers:
-- * written by the same INSERT statement as the tier's rows (lib/rollups/sql/insert.sql), so in
--   the same transaction; the window's old sketches are deleted by that statement too;
-- * read by the coarser tier's merge with a primary-key probe per finer row (lib/rollups/sql/merge.sql);
-- * partitions created with the tier's (partitioning.ensure_partitions) and dropped by the tier's
--   retention (retention.expired_partitions): expiry stays a DROP TABLE per partition.
--
-- Existing warehouses: each existing tier partition gets its sketch partition (same bounds), the
-- sketches are copied there, the columns dropped, and every tier partition is rewritten (CLUSTER on
-- its bucket index, the order rows were written in): DROP COLUMN alone only hides a column, the
-- bytes would stay in every existing row until it is rewritten, and months that are never re-run
-- would never shrink. The rewrite holds each partition's exclusive lock until the migration commits
-- (the whole migration took 1.8 s for that month of rollup_1h: copy, drop and rewrite).
-- VACUUM FULL would do the same but cannot run inside a migration's transaction.

-- The key leads with the bucket: the side tables are read by exact key (the merge's probes) and
-- deleted by bucket window (a refresh), and one index serves both.
CREATE TABLE {{schema}}.rollup_5m_sketch (
    series_id      integer NOT NULL,
    bucket         timestamptz NOT NULL,
    sketch_keys    integer[] NOT NULL,
    sketch_counts  bigint[] NOT NULL,
    CONSTRAINT rollup_5m_sketch_pkey PRIMARY KEY (bucket, series_id)
) PARTITION BY RANGE (bucket);

CREATE TABLE {{schema}}.rollup_1h_sketch (LIKE {{schema}}.rollup_5m_sketch INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    CONSTRAINT rollup_1h_sketch_pkey PRIMARY KEY (bucket, series_id)) PARTITION BY RANGE (bucket);

CREATE TABLE {{schema}}.rollup_1d_sketch (LIKE {{schema}}.rollup_5m_sketch INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    CONSTRAINT rollup_1d_sketch_pkey PRIMARY KEY (bucket, series_id)) PARTITION BY RANGE (bucket);

DO $$
DECLARE
    tier text;
    part record;
BEGIN
    FOREACH tier IN ARRAY ARRAY['rollup_5m', 'rollup_1h', 'rollup_1d'] LOOP
        -- A sketch partition for every tier partition, same bounds: rollup_1h_p202601 -> rollup_1h_sketch_p202601.
        FOR part IN
            SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('%I.%I', '{{schema}}', tier)::regclass
        LOOP
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %I.%I %s', '{{schema}}',
                           regexp_replace(part.relname, '^' || tier || '_', tier || '_sketch_'),
                           '{{schema}}', tier || '_sketch', part.bound);
        END LOOP;
        -- Rows written before migration 0005 have no sketch: they get no sketch row (a coarser
        -- tier merging them reads no bins from them, as before).
        EXECUTE format('INSERT INTO %I.%I (series_id, bucket, sketch_keys, sketch_counts)
                        SELECT series_id, bucket, sketch_keys, sketch_counts FROM %I.%I
                        WHERE sketch_keys IS NOT NULL AND sketch_counts IS NOT NULL',
                       '{{schema}}', tier || '_sketch', '{{schema}}', tier);
        EXECUTE format('ALTER TABLE %I.%I DROP COLUMN sketch_keys, DROP COLUMN sketch_counts', '{{schema}}', tier);
        -- Rewrite each partition so that the dropped columns' bytes go (a rewrite writes them as NULL).
        FOR part IN
            SELECT c.oid::regclass AS partition, ci.relname AS bucket_index
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_index ix ON ix.indrelid = c.oid
            JOIN pg_class ci ON ci.oid = ix.indexrelid
            JOIN pg_inherits ii ON ii.inhrelid = ix.indexrelid
            WHERE i.inhparent = format('%I.%I', '{{schema}}', tier)::regclass
              AND ii.inhparent = format('%I.%I', '{{schema}}', tier || '_bucket_idx')::regclass
              AND c.relkind = 'r'
        LOOP
            EXECUTE format('CLUSTER %s USING %I', part.partition, part.bucket_index);
            EXECUTE format('ALTER TABLE %s SET WITHOUT CLUSTER', part.partition);
        END LOOP;
    END LOOP;
END
$$;

COMMENT ON TABLE {{schema}}.rollup_5m_sketch IS 'Percentile sketch of each rollup_5m row (sparse log-scale histogram, see migration 0005); partitioned like rollup_5m.';
COMMENT ON TABLE {{schema}}.rollup_1h_sketch IS 'Percentile sketch of each rollup_1h row; partitioned like rollup_1h.';
COMMENT ON TABLE {{schema}}.rollup_1d_sketch IS 'Percentile sketch of each rollup_1d row; partitioned like rollup_1d.';
