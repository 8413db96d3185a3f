-- The Kafka consumer's health (issue 23, SPEC §2.6, §12), and Kafka coordinates on quarantine rows.
--
-- `metrics-pipeline kafka consume` writes, at each offset commit, one row per (group, topic,
-- partition) it committed: the committed offset, the partition's end as last seen, the lag between
-- them, and counters that only grow (every consumer of the group adds what it wrote). `/metrics` and
-- the lag asset check read these rows. `kafka_lag_samples` keeps the lag of each partition at most
-- once a minute for a day, so the check can tell a lag that keeps growing from one that comes and
-- goes. `kafka_consumers` has one row per running (or stopped) consumer process: whether it reaches
-- the brokers, since when it does not, and how many partitions it holds.
--
-- Quarantine rows of Kafka messages are keyed by the message: `source_file` is
-- `kafka:<topic>/<partition>/<offset>` and `position` the element of a batch (-1: the whole
-- message), so the table's unique key is (topic, partition, offset, element) whichever landing file
-- the message was read from. The generated columns below spell those coordinates out, the offset
-- as bigint, for queries.

CREATE TABLE {{schema}}.kafka_partitions (
    group_id          text NOT NULL,
    topic             text NOT NULL,
    "partition"       integer NOT NULL,
    format            text NOT NULL,               -- job_logs, measures, events
    committed_offset  bigint NOT NULL,             -- the next offset the group reads
    high_watermark    bigint,                      -- the partition's end as the consumer last saw it
    lag               bigint NOT NULL,             -- messages not committed yet (>= 0)
    messages          bigint NOT NULL DEFAULT 0,   -- messages written to landing files, ever
    bytes             bigint NOT NULL DEFAULT 0,   -- their values' bytes
    refused           bigint NOT NULL DEFAULT 0,   -- of them null, empty or over the size limit
    files             bigint NOT NULL DEFAULT 0,   -- landing files written
    consumer_id       text NOT NULL,               -- the consumer that committed last
    committed_at      timestamptz NOT NULL,
    CONSTRAINT kafka_partitions_pkey PRIMARY KEY (group_id, topic, "partition")
);

CREATE TABLE {{schema}}.kafka_lag_samples (
    group_id     text NOT NULL,
    topic        text NOT NULL,
    "partition"  integer NOT NULL,
    minute       timestamptz NOT NULL,
    lag          bigint NOT NULL,
    CONSTRAINT kafka_lag_samples_pkey PRIMARY KEY (group_id, topic, "partition", minute)
);
CREATE INDEX kafka_lag_samples_minute_idx ON {{schema}}.kafka_lag_samples (minute);

CREATE TABLE {{schema}}.kafka_consumers (
    group_id           text NOT NULL,
    consumer_id        text NOT NULL,              -- <host>-<pid>-<random>
    started_at         timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL,
    state              text NOT NULL CHECK (state IN ('running', 'stopped')),
    broker_up          boolean NOT NULL,
    broker_down_since  timestamptz,
    assigned           integer NOT NULL,           -- partitions held
    CONSTRAINT kafka_consumers_pkey PRIMARY KEY (group_id, consumer_id)
);

ALTER TABLE {{schema}}.quarantine
    ADD COLUMN kafka_topic text
        GENERATED ALWAYS AS (substring(source_file FROM '^kafka:([^/]+)/\d+/\d+$')) STORED,
    ADD COLUMN kafka_partition integer
        GENERATED ALWAYS AS (substring(source_file FROM '^kafka:[^/]+/(\d+)/\d+$')::integer) STORED,
    ADD COLUMN kafka_offset bigint
        GENERATED ALWAYS AS (substring(source_file FROM '^kafka:[^/]+/\d+/(\d+)$')::bigint) STORED;

COMMENT ON TABLE {{schema}}.kafka_partitions IS
    'Kafka consumer: per group and topic-partition, the committed offset, lag and counters (written at each commit).';
COMMENT ON TABLE {{schema}}.kafka_lag_samples IS 'Kafka consumer lag per partition, at most one sample a minute, for a day.';
COMMENT ON TABLE {{schema}}.kafka_consumers IS 'Kafka consumer processes: broker reachability and partitions held.';
