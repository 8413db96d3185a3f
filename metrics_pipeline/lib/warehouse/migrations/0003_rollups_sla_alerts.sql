-- Rollup tiers, SLA tables and the alert log (SPEC §3, §5, §6).

CREATE TABLE {{schema}}.rollup_5m (
    series_id  integer NOT NULL,
    bucket     timestamptz NOT NULL,
    count      bigint NOT NULL CHECK (count > 0),
    sum        double precision NOT NULL,
    min        double precision NOT NULL,
    max        double precision NOT NULL,
    avg        double precision NOT NULL,
    last       double precision NOT NULL,
    p50        double precision,
    p95        double precision,
    p99        double precision,
    CONSTRAINT rollup_5m_pkey PRIMARY KEY (series_id, bucket)
) PARTITION BY RANGE (bucket);

CREATE TABLE {{schema}}.rollup_1h (LIKE {{schema}}.rollup_5m INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    CONSTRAINT rollup_1h_pkey PRIMARY KEY (series_id, bucket)) PARTITION BY RANGE (bucket);

CREATE TABLE {{schema}}.rollup_1d (LIKE {{schema}}.rollup_5m INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    CONSTRAINT rollup_1d_pkey PRIMARY KEY (series_id, bucket)) PARTITION BY RANGE (bucket);

CREATE TABLE {{schema}}.sla_hourly (
    bucket                     timestamptz NOT NULL,
    company                    text NOT NULL,
    zone                       text NOT NULL,
    source_system              text NOT NULL,
    object                     text NOT NULL,
    runs                       integer NOT NULL,
    successes                  integer NOT NULL,
    failures                   integer NOT NULL,
    failure_rate               double precision,      -- NULL when there were no runs
    duration_p50_s             double precision,
    duration_p95_s             double precision,
    duration_max_s             double precision,
    sla_breaches               integer NOT NULL,
    last_success_at            timestamptz,
    time_since_last_success_s  double precision,
    cpu_time_s                 double precision,
    peak_memory_bytes          bigint,
    sla_met                    boolean NOT NULL,
    computed_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sla_hourly_pkey PRIMARY KEY (bucket, company, zone, source_system, object)
);

CREATE TABLE {{schema}}.sla_daily (LIKE {{schema}}.sla_hourly INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    CONSTRAINT sla_daily_pkey PRIMARY KEY (bucket, company, zone, source_system, object));

CREATE TABLE {{schema}}.alerts (
    alert_id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fingerprint     text NOT NULL,
    alertname       text NOT NULL,
    state           text NOT NULL CHECK (state IN ('firing', 'resolved')),
    severity        text NOT NULL CHECK (severity IN ('warning', 'critical')),
    labels          jsonb NOT NULL,
    annotations     jsonb NOT NULL DEFAULT '{}'::jsonb,
    starts_at       timestamptz NOT NULL,
    ends_at         timestamptz,
    generator_url   text,
    run_id          text,
    asset_key       text,
    partition_key   text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_sent_at    timestamptz,
    send_attempts   integer NOT NULL DEFAULT 0,
    last_error      text,
    CONSTRAINT alerts_fingerprint_starts_key UNIQUE (fingerprint, starts_at)
);
CREATE INDEX alerts_active_idx ON {{schema}}.alerts (state, starts_at);

COMMENT ON TABLE {{schema}}.rollup_5m IS 'Per series and 5-minute bucket aggregates; partitioned by UTC day.';
COMMENT ON TABLE {{schema}}.rollup_1h IS 'Per series and hour aggregates; partitioned by month.';
COMMENT ON TABLE {{schema}}.rollup_1d IS 'Per series and UTC day aggregates; partitioned by year.';
COMMENT ON TABLE {{schema}}.alerts IS 'Every firing or resolved alert raised by the asset checks.';
