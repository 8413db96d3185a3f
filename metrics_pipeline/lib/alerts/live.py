"""The live alerting loop for host samples: new lines -> points -> rules -> Alertmanager, in seconds.

Prometheus evaluates its rules every 15-60 s on what it scraped; here the equivalent is one tick,
every 30 s: load the complete lines the agents appended since the last tick (`host.live.load_new`,
work proportional to what is new), evaluate the metric rules of source `host` around what was new
(`engine.evaluate_and_record`, exact whatever the schedule), and deliver what changed at once
(`delivery.deliver`). So an alert is active in Alertmanager about one tick after its `for` elapsed
in the data, and resolved about one tick after the data shows the condition ended.

Open alerts are re-evaluated from where their hold began even when nothing new landed, so a host
that went silent is resolved once its staleness has passed (docs/alerts.md).
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.alerts import delivery, engine
from metrics_pipeline.lib.alerts.rules import AlertsConfig
from metrics_pipeline.lib.host import live
from metrics_pipeline.lib.host.files import SOURCE
from metrics_pipeline.lib.landing import LandingZone
from metrics_pipeline.lib.warehouse.db import Warehouse

#: Evaluated even when nothing new landed: enough to see the newest samples of every series.
MIN_WINDOW = timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class Tick:
    loaded: live.LiveLoad
    evaluated: engine.WindowResult
    delivered: delivery.DeliveryResult | None
    cpu_s: float  # this thread's CPU time for the tick (the database's own work is not in it)

    def summary(self) -> str:
        points = self.loaded.load.points if self.loaded.load else 0
        sent = f", {self.delivered.sent} sent" if self.delivered else ""
        return (f"{points} new samples from {self.loaded.files} file(s); {len(self.evaluated.firing)} firing, "
                f"{len(self.evaluated.pending)} pending; {self.evaluated.written} written, "
                f"{self.evaluated.removed} removed{sent}; {self.cpu_s:.3f} s CPU")


def _open_since(warehouse: Warehouse, source: str) -> datetime | None:
    """When the oldest hold still firing for `source` began (its rows say `pending_since`)."""
    with warehouse.connect() as conn:
        return conn.execute(
            f"""SELECT min((annotations ->> 'pending_since')::timestamptz) FROM {warehouse.schema}.alerts
                WHERE state = 'firing' AND labels ->> 'source' = %s""",
            (source,),
        ).fetchone()[0]


def tick(warehouse: Warehouse, zone: LandingZone, config: AlertsConfig, *, now: datetime | None = None,
         alertmanager_url: str | None = None, webhook_url: str | None = None) -> Tick:
    """One pass of the live loop for host samples."""
    cpu = time.thread_time()
    now = now or datetime.now(timezone.utc)
    loaded = live.load_new(warehouse, zone, now)
    start = min(t for t in (loaded.first_ts, now - MIN_WINDOW, _open_since(warehouse, SOURCE)) if t is not None)
    rules = [r for r in config.effective_rules if r.kind == "metric"]
    result = engine.evaluate_and_record(warehouse, rules, start, now, now=now, source=SOURCE,
                                        data_lag=config.data_lag)
    sent = None
    if alertmanager_url or webhook_url:
        sent = delivery.deliver(warehouse, alertmanager_url=alertmanager_url, webhook_url=webhook_url, now=now)
    return Tick(loaded, result, sent, time.thread_time() - cpu)
