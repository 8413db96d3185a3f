-- Running Kafka consumers per group: how many, how many cannot reach their brokers, their newest report.
-- A consumer killed without a clean stop stays 'running' here: its newest report then falls behind.
SELECT group_id, count(*), count(*) FILTER (WHERE NOT broker_up), max(updated_at)
FROM {{schema}}.kafka_consumers
WHERE state = 'running'
GROUP BY group_id
ORDER BY group_id
