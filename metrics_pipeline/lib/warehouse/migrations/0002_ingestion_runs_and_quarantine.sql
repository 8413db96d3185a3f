-- Normalised ingestion-job records (SPEC §2.4) and the quarantine for records that failed validation.

CREATE TABLE {{schema}}.ingestion_runs (
    sequence_no        text NOT NULL,
    company            text NOT NULL,
    zone               text NOT NULL,
    source_system      text NOT NULL,
    object_id          text NOT NULL,
    object             text NOT NULL,
    transformation     text NOT NULL,
    status             text NOT NULL CHECK (status IN ('SUCCESS', 'FAILED')),
    started_at         timestamptz NOT NULL,
    ended_at           timestamptz NOT NULL,
    duration_s         double precision NOT NULL CHECK (duration_s >= 0),
    description        text,
    cpu_time_s         double precision,
    memory_used_bytes  bigint,
    source_file        text NOT NULL,
    source_position    integer NOT NULL,
    loaded_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (ended_at >= started_at),
    -- The natural key of one job run: re-processing a file replaces rows instead of duplicating them.
    CONSTRAINT ingestion_runs_pkey PRIMARY KEY
        (company, zone, source_system, object_id, transformation, sequence_no, started_at)
) PARTITION BY RANGE (started_at);

CREATE INDEX ingestion_runs_started_idx ON {{schema}}.ingestion_runs (started_at);

CREATE TABLE {{schema}}.quarantine (
    quarantine_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source          text NOT NULL,          -- which loader refused it: ingestion_logs, host, ...
    source_file     text NOT NULL,
    position        integer NOT NULL,       -- 1-based line (JSON Lines) or 0-based index (JSON array); -1 = whole file
    raw             text,
    reason          text NOT NULL,
    -- The hour the record is attributed to: its own start hour when that parses, else the file's
    -- first good hour (or arrival hour). The run loading that hour owns the quarantine row.
    record_hour     timestamptz NOT NULL,
    quarantined_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT quarantine_record_key UNIQUE (source, source_file, position)
);
CREATE INDEX quarantine_hour_idx ON {{schema}}.quarantine (source, record_hour);

COMMENT ON TABLE {{schema}}.ingestion_runs IS 'One row per data-ingestion job run; partitioned by month of started_at.';
COMMENT ON TABLE {{schema}}.quarantine IS 'Input records refused by validation, with file, position, raw text and reason.';
