"""Hostile text in metric names, labels, log fields and configuration never changes SQL.

Values travel as parameters (or COPY data) and come back byte for byte, through the loader and the
BI views; what PostgreSQL cannot store (NUL, unpaired surrogates, names too long for their index)
is refused with an error naming the column, before anything is written. Identifiers taken from
configuration (the schema, rule names, label names, SLA keys) are validated with errors naming the
setting or key.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import psycopg
import pytest
from psycopg.types.json import Jsonb

from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import rollups, settings, sla
from metrics_pipeline.lib.alerts import delivery, engine, rules
from metrics_pipeline.lib.cloudwatch.config import parse_config as parse_cloudwatch
from metrics_pipeline.lib.ingestion_logs import load as ingestion_load
from metrics_pipeline.lib.ingestion_logs.parse import ParseOptions
from metrics_pipeline.lib.landing import LocalLanding
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.sla.config import SlaConfig
from metrics_pipeline.lib.sla.config import parse_config as parse_sla
from metrics_pipeline.lib.warehouse import bi, migrate, retention
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.yaml_config import ConfigError
from metrics_pipeline_tests.support.ingestion_logs import at
from metrics_pipeline_tests.support.security import base_tables

T0 = datetime(2026, 5, 4, 10, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
DROP = "x'); DROP TABLE metrics.points; --"
HOSTILE = {
    "sql": DROP,
    "quotes": "\"double\" 'single' `back` $$dollar$$ $1 E'\\''",
    "backslashes": "C:\\new\\table \\x00 \\' \\\\ \\",
    "placeholders": "%s %(x)s %% %b {0} {x} {labels.__class__} ?",
    "unicode": "ملف 📈 שלום \u202egnp.exe\u200f 🏳️\u200d🌈 e\u0301 \U0001f600",
    "controls": "line\nbreak\ttab\rcr \x1b[31m \x7f",
}
# ~10k characters that do not compress (random code points): what an index entry would really hold.
LONG = "".join(chr(random.Random(9).randint(0x21, 0x2FFF)) for _ in range(10_000))


def _frame(series: list[tuple[str, str, dict, str]]) -> pd.DataFrame:
    ts = pd.date_range(T0, periods=3, freq="1min")
    return points_frame([{"metric": m, "resource": r, "labels": lab, "unit": u, "ts": ts, "value": np.arange(3.0)}
                                for m, r, lab, u in series])


def _tables(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return set(base_tables(conn, "metrics"))


def test_hostile_names_labels_and_units_round_trip_byte_for_byte_through_the_loader_and_every_series_view(
        warehouse_dsn, db, bi_login):
    tables = _tables(warehouse_dsn)
    series = [(f"sec_{name}_{text}", text, {text: text, "tenant": text, "k": name}, text)
              for name, text in HOSTILE.items()]
    series.append(("sec_long", LONG, {LONG: LONG, "tenant": "long", "k": "long"}, LONG))
    loaded = loader.load_points(Warehouse(warehouse_dsn), _frame(series), source="test", start=T0, end=T0 + HOUR)
    assert (loaded.series, loaded.points) == (len(series), 3 * len(series))
    rollups.refresh(Warehouse(warehouse_dsn, "metrics"), ["rollup_5m"], T0, T0 + HOUR)
    assert tables <= _tables(warehouse_dsn)  # every table still there (the load added day partitions)
    assert db.execute("SELECT count(*) FROM metrics.points").fetchone() == (3 * len(series),)

    with bi_login() as conn:
        for metric, resource, labels, unit in series:
            for view in ("v_series", "v_points", "v_latest", "v_rollup_5m"):
                rows = conn.execute(
                    f"SELECT DISTINCT metric, resource, labels, unit, tenant FROM metrics.{view} WHERE metric = %s",
                    (metric,)).fetchall()
                assert rows == [(metric, resource, labels, unit, labels["tenant"])], (view, labels["k"])
            # Looked up by a label value too: the hostile text is data in a JSON parameter.
            found = conn.execute("SELECT count(*) FROM metrics.v_points WHERE labels @> %s", (Jsonb(labels),)).fetchone()
            assert found == (3,), labels["k"]


def test_a_tenant_with_metacharacters_restricts_a_bi_role_to_exactly_that_tenant(warehouse_dsn, bi_login):
    series = [(f"sec_{name}", "r", {"tenant": text}, "count") for name, text in HOSTILE.items()]
    loader.load_points(Warehouse(warehouse_dsn), _frame(series), source="test", start=T0, end=T0 + HOUR)
    with bi_login(tenants=[DROP]) as conn:
        assert conn.execute("SELECT DISTINCT tenant FROM metrics.v_points").fetchall() == [(DROP,)]


@pytest.mark.parametrize(("series", "message"), [
    (("host_load1\x00", "r", {}, "count"), "column 'metric' must not contain NUL characters"),
    (("host_load1", "web\x00-1", {}, "count"), "column 'resource' must not contain NUL characters"),
    (("host_load1", "r", {}, "co\x00unt"), "column 'unit' must not contain NUL characters"),
    (("host_load1", "r", {"mo\x00unt": "/"}, "count"), "label 'mo\\\\x00unt' must not contain NUL characters"),
    (("host_load1", "r", {"mount": "/\x00"}, "count"), "label 'mount' must not contain NUL characters"),
    (("host_\ud800", "r", {}, "count"), "column 'metric' must not contain unpaired UTF-16 surrogates"),
    (("host_load1", "r", {"mount": "\udfff"}, "count"), "label 'mount' must not contain unpaired UTF-16 surrogates"),
    (("sec_" + LONG, "r", {}, "count"), "column 'metric' must be at most 1000 bytes of UTF-8"),
    (("host_load1", "r", {"tenant": LONG}, "count"), "label 'tenant' must be at most 1000 bytes of UTF-8"),
])
def test_text_postgres_cannot_store_is_refused_naming_the_column_before_anything_is_written(warehouse_dsn, db,
                                                                                           series, message):
    good = ("host_load1", "ok", {}, "count")
    with pytest.raises(ValueError, match=message) as refused:
        loader.load_points(Warehouse(warehouse_dsn), _frame([good, series]), source="test", start=T0, end=T0 + HOUR)
    assert len(str(refused.value)) < 2000  # an example row is shown, clipped, not the 10k characters
    assert db.execute("SELECT (SELECT count(*) FROM metrics.series), (SELECT count(*) FROM metrics.points)"
                      ).fetchone() == (0, 0)


@pytest.mark.parametrize("source", ["te\x00st", "s" * 1001, ""])
def test_a_source_postgres_cannot_store_is_refused_clearly(warehouse_dsn, source):
    with pytest.raises(ValueError, match="source must be a non-empty string without NUL"):
        loader.load_points(Warehouse(warehouse_dsn), _frame([("m", "r", {}, "count")]), source=source, start=T0, end=T0 + HOUR)


def test_hostile_ingestion_log_fields_are_stored_verbatim_and_sla_targets_match_them(warehouse_dsn, tmp_path, db):
    start = datetime(2026, 1, 5, 13, tzinfo=timezone.utc)
    zone = LocalLanding(tmp_path)
    records = [at(start, i, Entreprise=text, Objet=text, Description=text, Objet_Id=name)
               for i, (name, text) in enumerate(HOSTILE.items()) if text == text.strip()]
    records.append(at(start, 30, Entreprise="plain"))
    zone.write("ingestion_logs/" + HOSTILE["sql"].replace("/", "_").replace(" ", "_") + ".json",
               json.dumps(records).encode())
    options = ParseOptions(now=start + timedelta(days=1))
    result = ingestion_load.load_window(Warehouse(warehouse_dsn, "metrics"), zone, start, start + HOUR, options)
    assert (result.loaded, result.quarantined) == (len(records), 0)
    stored = db.execute("SELECT company, object, description, object_id FROM metrics.v_ingestion_runs "
                        "WHERE company <> 'plain' ORDER BY object_id").fetchall()
    assert stored == sorted([(r["Entreprise"], r["Objet"], r["Description"], r["Objet_Id"]) for r in records[:-1]],
                            key=lambda row: row[3])
    # An SLA target keyed on the hostile company applies to it, and only to it (60 s runs, 30 s target).
    config = parse_sla({"targets": [{"company": DROP, "max_duration_s": 30}]})
    sla.refresh(Warehouse(warehouse_dsn, "metrics"), "hour", start, start + HOUR, config, now=start + timedelta(days=1))
    breaches = dict(db.execute("SELECT company, sum(sla_breaches) FROM metrics.v_sla_hourly GROUP BY 1").fetchall())
    assert breaches[DROP] == 1 and breaches["plain"] == 0
    assert {"points", "series", "ingestion_runs", "sla_hourly", "quarantine"} <= _tables(warehouse_dsn)


def test_alert_labels_and_series_labels_with_metacharacters_are_recorded_verbatim_and_never_templated(warehouse_dsn, db):
    resource = "{labels.__class__} " + DROP
    ts = pd.date_range(T0, periods=600, freq="1s")
    frame = points_frame([{"metric": "host_cpu_percent", "resource": resource, "unit": "percent",
                                  "labels": {"host": resource, "tenant": HOSTILE["quotes"]}, "ts": ts,
                                  "value": np.full(len(ts), 97.0)}])
    loader.load_points(Warehouse(warehouse_dsn), frame, source="host", start=T0, end=T0 + HOUR)
    config = rules.parse_config({"rules": [{
        "name": "CpuHigh", "metrics": ["host_cpu_percent"], "match": {"host": ".*DROP TABLE.*"}, "threshold": 90,
        "severity": "critical", "labels": {"team": HOSTILE["placeholders"]},
        "annotations": {"summary": "CPU on {resource} ({labels[tenant]})"}}]})
    result = engine.evaluate_and_record(Warehouse(warehouse_dsn, "metrics"), config.rules, T0, T0 + HOUR, now=T0 + HOUR, source="host")
    assert len(result.firing) == 1
    row = db.execute("SELECT labels, summary, tenant FROM metrics.v_alerts").fetchone()
    assert row[0]["team"] == HOSTILE["placeholders"] and row[0]["resource"] == resource
    assert row[1] == f"CPU on {resource} ({HOSTILE['quotes']})" and row[2] == HOSTILE["quotes"]
    assert db.execute("SELECT count(*) FROM metrics.points").fetchone() == (600,)


BAD_SCHEMA = "metrics; DROP TABLE metrics.points; --"


def test_the_schema_setting_with_metacharacters_is_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv(settings.SCHEMA_ENV, BAD_SCHEMA)
    with pytest.raises(ValueError, match="METRICS_PIPELINE_SCHEMA must be a lower-case SQL identifier"):
        settings.schema_name()
    with pytest.raises(ValueError, match="schema_name must be a lower-case SQL identifier"):
        WarehouseResource(dsn="host=unused", schema_name=BAD_SCHEMA).get()
    monkeypatch.setenv(settings.SCHEMA_ENV, 'Metrics"')
    with pytest.raises(ValueError, match="METRICS_PIPELINE_SCHEMA"):
        settings.schema_name()


@pytest.mark.parametrize("call", [
    lambda dsn: migrate.migrate(Warehouse(dsn, BAD_SCHEMA)),
    lambda dsn: loader.load_points(Warehouse(dsn, BAD_SCHEMA), _frame([("m", "r", {}, "count")]), source="t", start=T0, end=T0 + HOUR),
    lambda dsn: rollups.refresh(Warehouse(dsn, BAD_SCHEMA), ["rollup_5m"], T0, T0 + HOUR),
    lambda dsn: rollups.refresh_health(Warehouse(dsn, BAD_SCHEMA), T0, T0 + HOUR),
    lambda dsn: sla.refresh(Warehouse(dsn, BAD_SCHEMA), "hour", T0, T0 + HOUR, SlaConfig()),
    lambda dsn: engine.evaluate_and_record(Warehouse(dsn, BAD_SCHEMA), list(rules.DEFAULT_RULES), T0, T0 + HOUR),
    lambda dsn: delivery.deliver(Warehouse(dsn, BAD_SCHEMA), webhook_url="http://127.0.0.1:9/hook"),
    lambda dsn: retention.apply(Warehouse(dsn, BAD_SCHEMA)),
    lambda dsn: ingestion_load.load_window(Warehouse(dsn, BAD_SCHEMA), LocalLanding("/nonexistent"), T0, T0 + HOUR, ParseOptions()),
    lambda dsn: bi.ensure_role(Warehouse(dsn, BAD_SCHEMA), "sec_reader", password="pw"),
], ids=["migrate", "load_points", "rollups", "health", "sla", "alerts", "delivery", "retention", "ingestion", "bi_role"])
def test_every_entry_point_refuses_a_schema_that_is_not_an_identifier_before_any_sql(warehouse_dsn, db, call):
    tables = base_tables(db, "metrics")
    with pytest.raises(ValueError, match="schema must be a lower-case SQL identifier"):
        call(warehouse_dsn)
    assert base_tables(db, "metrics") == tables
    assert db.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'metrics%'").fetchone() == (1,)


@pytest.mark.parametrize(("parse", "raw", "message"), [
    (rules.parse_config, {"rules": [{"name": "Cpu'; DROP TABLE metrics.alerts; --", "metrics": ["m"], "threshold": 1,
                                     "severity": "warning"}]}, r"rules\[0\] \(Cpu'; DROP TABLE metrics.alerts; --\)\.name"),
    (rules.parse_config, {"rules": [{"name": "Cpu", "metrics": ["m"], "threshold": 1, "severity": "warning",
                                     "labels": {"team'; --": "x"}}]}, r"rules\[0\] \(Cpu\)\.labels\.team'; --\.\[key\]"),
    (rules.parse_config, {"rules": [{"name": "Cpu", "kind": "sla", "column": "failure_rate; DROP TABLE x",
                                     "threshold": 1, "severity": "warning"}]}, r"rules\[0\] \(Cpu\)\.column"),
    (rules.parse_config, {"rules": [{"name": "Cpu", "metrics": ["m"], "threshold": 1, "severity": "warning",
                                     "match": {"host": "(unclosed"}}]}, r"rules\[0\] \(Cpu\)\.match"),
    (parse_sla, {"targets": [{"company'; --": "x", "max_duration_s": 1}]}, r"targets\[0\]\.company'; --: unknown key"),
    (parse_sla, {"metrics": {"thresholds": [{"metrics": ["cpu'; DROP"], "warning": 1, "critical": 2}]}},
     r"metrics\.thresholds\[0\]\.metrics\[0\]"),
    (parse_cloudwatch, {"accounts": [{"name": "prod'; --", "regions": ["eu-west-1"],
                                      "metrics": [{"namespace": "AWS/EC2"}]}]}, r"accounts\[0\]\.name"),
], ids=["rule-name", "label-name", "sla-column", "match-regex", "sla-key", "threshold-metric", "cloudwatch-account"])
def test_configuration_identifiers_with_metacharacters_are_refused_naming_the_key(parse, raw, message):
    with pytest.raises(ConfigError, match=message):
        parse(raw)
