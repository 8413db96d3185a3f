#!/bin/sh
# First start of the postgres container (docker-entrypoint-initdb.d): two databases with their own
# owners. `metrics` holds the warehouse; its owner may create the read-only BI role (CREATEROLE),
# which `metrics-pipeline bi-role` does in the migrate service. `dagster` holds Dagster's runs,
# event log and schedules. Passwords come from .env through the container's environment.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
     -v metrics_password="$METRICS_DB_PASSWORD" -v dagster_password="$DAGSTER_DB_PASSWORD" <<'SQL'
CREATE ROLE metrics LOGIN CREATEROLE PASSWORD :'metrics_password';
CREATE ROLE dagster LOGIN PASSWORD :'dagster_password';
CREATE DATABASE metrics OWNER metrics;
CREATE DATABASE dagster OWNER dagster;
SQL
