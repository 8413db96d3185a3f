"""Asset checks on the partition just materialised (SPEC §6).

Which checks block downstream assets:
* **blocking** (data quality): values out of range and the quarantine ratio. Rollups computed from
  impossible values (a CPU at 250 %, a negative byte count) would spread the error to every tier
  and dashboard; stopping them is cheaper than correcting them later.
* **not blocking** (what the data says about the systems): threshold alerts and completeness. A
  busy host is exactly what the rollups and dashboards must show; blocking them on it would hide
  the incident from the people handling it.
Severities: WARN -> Alertmanager `warning`, ERROR -> `critical`.
"""

from collections.abc import Callable, Iterator
from datetime import datetime, timezone

import dagster as dg

from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown, settings, sources
from metrics_pipeline.lib.alerts import engine, quality, rules

Hour = Callable[[str, datetime, datetime], dg.AssetCheckResult]


def per_partition(context: dg.AssetCheckExecutionContext, hour: Hour) -> Iterator:
    """One check evaluation per hour of the run. A backfill run covers a range of hours (backfill
    policies); a plain `AssetCheckResult` there would be one result for no partition, so each hour
    is evaluated and recorded under its own partition key, then the check's output is emitted."""
    (spec,) = context.check_specs
    for key in context.partition_keys:
        window = hourly_partitions.time_window_for_partition_key(key)
        result = hour(key, window.start, window.end)
        yield dg.AssetCheckEvaluation(
            asset_key=spec.asset_key, check_name=spec.name, passed=result.passed, severity=result.severity,
            metadata=result.metadata, description=result.description, blocking=spec.blocking, partition=key,
        )
    yield dg.Output(None)


def _alert_check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource, asset: str, source: str,
                 kind: str, key: str, start: datetime, end: datetime, extra: dict | None = None) -> dg.AssetCheckResult:
    """Evaluate the `kind` rules over the hour, record the alerts, and report them: the check
    fails while anything fires in the hour, as ERROR when a critical does."""
    config = rules.load_config()
    selected = [r for r in config.effective_rules if r.kind == kind]
    result = engine.evaluate_and_record(
        warehouse.get(), selected, start, end, now=datetime.now(timezone.utc), source=source, data_lag=config.data_lag,
        run_id=context.run.run_id, asset_key=asset, partition_key=key,
        generator_url=f"{settings.dagster_url()}/runs/{context.run.run_id}")
    critical = any(o.rule.severity == "critical" for o in result.firing)
    return dg.AssetCheckResult(
        passed=not result.firing,
        severity=dg.AssetCheckSeverity.ERROR if critical else dg.AssetCheckSeverity.WARN,
        metadata={
            "firing": len(result.firing),
            "pending": len(result.pending),
            "series_evaluated": result.series,
            "samples_evaluated": result.samples,
            **(extra or {}),
            "alerts": dg.MetadataValue.md(quality.occurrence_table(result.firing + result.pending)),
        },
    )


def _threshold_check(asset: str, source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="threshold_alerts", partitions_def=hourly_partitions, blocking=False,
                    description=f"Alert rules (config/alerts.yaml) over the hour's {source} samples at their own "
                                "resolution; firing alerts are recorded in `alerts` for delivery.")
    def threshold_alerts(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
        yield from per_partition(context, lambda key, start, end: _alert_check(
            context, warehouse, asset, source, "metric", key, start, end))

    return threshold_alerts


def _range_check(asset: str, source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="values_in_range", partitions_def=hourly_partitions, blocking=True,
                    description="Percentages within 0-100 and counts, bytes and rates never negative.")
    def values_in_range(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
        def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
            bad = quality.out_of_range(warehouse.get(), source, start, end)
            return dg.AssetCheckResult(
                passed=not bad,
                metadata={"bad_series": len(bad), "bad_samples": sum(b["samples"] for b in bad),
                          "offenders": dg.MetadataValue.md(markdown.records_table(bad))},
            )

        yield from per_partition(context, hour)

    return values_in_range


def _duplicates_check(asset: str, source: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="duplicate_points", partitions_def=hourly_partitions, blocking=False,
                    description="Samples the source sent twice for the same series and timestamp in this load "
                                "(the last one is kept; `points` cannot hold duplicates) and non-finite values dropped.")
    def duplicate_points(context: dg.AssetCheckExecutionContext) -> Iterator:
        def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
            records = context.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=1
            ).records
            metadata = records[0].asset_materialization.metadata if records else {}
            counts = {name: int(metadata[name].value) if name in metadata else 0
                      for name in ("duplicate_points", "non_finite_values")}
            return dg.AssetCheckResult(passed=not any(counts.values()), severity=dg.AssetCheckSeverity.WARN,
                                       metadata={**counts, "materialized": bool(records)})

        yield from per_partition(context, hour)

    return duplicate_points


point_checks = [
    factory(source.asset, source.name) for source in sources.POINT_SOURCES
    for factory in (_threshold_check, _range_check, _duplicates_check)
]


@dg.asset_check(asset="ingestion_log_records", name="quarantine_ratio", partitions_def=hourly_partitions, blocking=True,
                description="Share of the hour's records refused by validation: WARN above 1 %, ERROR above 5 %.")
def quarantine_ratio(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
    def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
        ratio = quality.quarantine_ratio(warehouse.get(), start, end)
        return dg.AssetCheckResult(
            passed=ratio.share <= quality.QUARANTINE_WARN,
            severity=dg.AssetCheckSeverity.ERROR if ratio.share > quality.QUARANTINE_ERROR else dg.AssetCheckSeverity.WARN,
            metadata={"loaded": ratio.loaded, "quarantined": ratio.quarantined, "share": round(ratio.share, 4),
                      "reasons": dg.MetadataValue.md(markdown.records_table(ratio.reasons))},
        )

    yield from per_partition(context, hour)


@dg.asset_check(asset="series_health_hourly", name="completeness", partitions_def=hourly_partitions, blocking=False,
                description="Series silent for the hour (no data) or below 90 % of their expected samples.")
def completeness(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
    def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
        gaps = quality.incomplete_series(warehouse.get(), start, end)
        return dg.AssetCheckResult(
            passed=not gaps,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"incomplete_series": len(gaps), "silent_series": sum(1 for g in gaps if g["no_data"]),
                      "series": dg.MetadataValue.md(markdown.records_table(gaps))},
        )

    yield from per_partition(context, hour)


@dg.asset_check(asset="sla_hourly", name="sla_alerts", partitions_def=hourly_partitions, blocking=False,
                description="kind: sla alert rules (ingestion failure rate, duration breaches, ...) over the hour's "
                            "SLA rows; firing alerts are recorded in `alerts` for delivery.")
def sla_alerts(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
    def hour(key: str, start: datetime, end: datetime) -> dg.AssetCheckResult:
        missed = quality.sla_rows_missing(warehouse.get(), start, end)
        return _alert_check(context, warehouse, "sla_hourly", engine.SLA_SOURCE, "sla", key, start, end,
                            extra={"rows_missing_sla": missed})

    yield from per_partition(context, hour)
