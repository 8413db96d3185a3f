-- Kafka topics of measures and events (issue 23, SPEC §2.6, §12), loaded by `custom_points` /
-- `custom_events` from the consumer's landing files next to the push API's.
--
-- Each hour's record (`custom_load_hours`, migration 0018) also counts what a Kafka message can be
-- without being an item: an empty JSON array (`empty_batches`: counted and skipped, SPEC §12), and
-- items read again from a second file because a consumer died between writing a file and committing
-- its offsets (`redelivered`: each (topic, partition, offset) is counted and loaded once). Both are
-- kept so that an incremental load reports what a full reload of the hour would.

ALTER TABLE {{schema}}.custom_load_hours
    ADD COLUMN empty_batches bigint NOT NULL DEFAULT 0,
    ADD COLUMN redelivered   bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN {{schema}}.custom_load_hours.empty_batches IS
    'Kafka messages of the hour holding an empty JSON array (counted, nothing loaded).';
COMMENT ON COLUMN {{schema}}.custom_load_hours.redelivered IS
    'Kafka items of the hour read again from a second landing file (loaded once).';
