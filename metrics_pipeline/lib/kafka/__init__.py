"""Kafka topics as a source (SPEC §2.6): a consumer that lands what it reads, loaders that dedupe it.

`metrics-pipeline kafka consume` (`consumer.py`) reads the configured topics (`config.py`,
`config/kafka.yaml`) and writes what it reads to the landing zone, one file per topic-partition and
minute named by its offset range (`files.py`), fsync'd (or spooled, for S3, `writer.py`); it commits
offsets only once the file holding them is durable, and records its lag in the warehouse
(`health.py`). The existing hourly assets load those files: job-log records through
`ingestion_log_records` (`job_logs.py` parses a landing file into records), each message counted
once by its (topic, partition, offset) however often it was delivered.

Only `consumer.py` and `producer.py` import confluent-kafka, and only when they run.
"""
