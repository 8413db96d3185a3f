"""`kafka_consumer_lag`: warns when the Kafka consumer falls behind (issue 23, SPEC §2.6).

The consumer writes its lag per partition at each commit (`lib/kafka/health.py`); this check reads
that record for the topics feeding the asset (job-log topics for `ingestion_log_records`) and
warns when a partition's lag keeps growing over the last 15 minutes, or when a partition with
messages waiting has not been committed for `STALE` (its consumer stopped, or cannot reach the
brokers). Not blocking: a consumer behind is a reason to look, not a reason to hold back the
rollups of what did arrive. Without Kafka (no consumer ever committed) it passes, saying so.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dagster as dg

from metrics_pipeline.defs.alerts.checks import per_partition
from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.defs.resources import WarehouseResource
from metrics_pipeline.lib import markdown
from metrics_pipeline.lib.kafka import health

STALE = timedelta(minutes=10)
#: the asset each topic format is loaded by
LOADS = {"job_logs": "ingestion_log_records"}


def evaluate(state: health.KafkaHealth, fmt: str, now: datetime) -> dg.AssetCheckResult:
    partitions = state.of_format(fmt)
    if not partitions:
        return dg.AssetCheckResult(passed=True, metadata={"kafka_partitions": 0,
                                                          "note": f"no Kafka consumer of {fmt} topics has committed"})
    growing = [p for p in partitions if p.growing]
    stale = [p for p in partitions if p.lag > 0 and now - p.committed_at > STALE]
    rows = [{"topic": p.topic, "partition": p.partition, "lag": p.lag,
             "committed": p.committed_at.isoformat(timespec="seconds"),
             "state": "growing" if p in growing else ("not committed for a while" if p in stale else "ok")}
            for p in partitions if p in growing or p in stale or p.lag > 0]
    problems = len(growing) + len([p for p in stale if p not in growing])
    return dg.AssetCheckResult(
        passed=not problems, severity=dg.AssetCheckSeverity.WARN,
        description=(f"{len(growing)} partition(s) with a lag that keeps growing, {len(stale)} with messages "
                     f"waiting and no commit for {int(STALE.total_seconds() // 60)} min") if problems else None,
        metadata={"kafka_partitions": len(partitions), "kafka_lag_messages": sum(p.lag for p in partitions),
                  "growing_partitions": len(growing), "stale_partitions": len(stale),
                  "partitions": dg.MetadataValue.md(markdown.records_table(rows[:20]))},
    )


def _build(asset: str, fmt: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(asset=asset, name="kafka_consumer_lag", partitions_def=hourly_partitions, blocking=False,
                    description=f"The Kafka consumer of the {fmt} topics: WARN when a partition's lag keeps growing "
                                "over 15 minutes, or messages wait with no commit for 10 minutes.")
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> Iterator:
        state = health.read(warehouse.get(), formats=(fmt,))
        now = datetime.now(timezone.utc)
        yield from per_partition(context, lambda key, start, end: evaluate(state, fmt, now))

    return _check


kafka_lag_checks = [_build(asset, fmt) for fmt, asset in LOADS.items()]
