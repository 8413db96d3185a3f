-- The Kafka consumer's record per (group, topic, partition), written at each commit (migration 0022):
-- a handful of rows, one per partition of the configured topics.
SELECT group_id, topic, "partition", lag, committed_offset, high_watermark, messages, bytes, refused, files,
       committed_at
FROM {{schema}}.kafka_partitions
ORDER BY group_id, topic, "partition"
