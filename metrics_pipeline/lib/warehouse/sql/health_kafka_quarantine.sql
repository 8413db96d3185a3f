-- Kafka messages (and batch elements) quarantined by the loads, per topic, whose record hour is at or
-- after %(since)s: the quarantine's (source, record_hour) index, for the sources Kafka topics feed.
SELECT q.kafka_topic, count(*)
FROM {{schema}}.quarantine q
WHERE q.source = ANY(%(sources)s) AND q.record_hour >= %(since)s AND q.kafka_topic IS NOT NULL
GROUP BY q.kafka_topic
ORDER BY q.kafka_topic
