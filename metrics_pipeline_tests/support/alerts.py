"""The hour, partition and data of the alert-check tests (also used by the security tests): a stand-in
for a source asset, CPU samples of one host, and the checks and their results of a run."""

from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pandas as pd

from metrics_pipeline.defs.alerts.checks import point_checks
from metrics_pipeline.defs.partitions import hourly_partitions
from metrics_pipeline.lib.points import points_frame
from metrics_pipeline.lib.warehouse import load as loader
from metrics_pipeline.lib.warehouse.db import Warehouse

H = datetime(2026, 6, 1, 10, tzinfo=timezone.utc)
KEY = "2026-06-01-10:00"


def source_stub(name):
    @dg.asset(name=name, partitions_def=hourly_partitions)
    def stub():
        """Stands for the source asset: the test loads its points beforehand."""

    return stub


def load_cpu(dsn, values, metric="host_cpu_percent", unit="percent"):
    ts = pd.date_range(H, periods=len(values), freq="1s")
    frame = points_frame([{"metric": metric, "resource": "web-1", "labels": {"host": "web-1"}, "unit": unit,
                                  "ts": ts, "value": np.asarray(values, dtype=float)}])
    loader.load_points(Warehouse(dsn), frame, source="host", start=H, end=H + timedelta(hours=1))


def check_results(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def host_checks():
    return [c for c in point_checks if any(k.asset_key == dg.AssetKey("host_points") for k in c.check_keys)]
