"""Realistic days of EC2 and RDS metrics for the demo's local CloudWatch (`make dev`).

Six EC2 instances with a daily load curve and noise (one of them, `i-0busy...`, runs hot in the
afternoon, so threshold rules have something to find), two RDS instances, at one datapoint a
minute; `feed()` keeps publishing the current minute while the demo runs. The account belongs to
the demo tenant (`demo_host.DEMO_TENANT`), like the demo hosts.

Now and then something unusual happens, for the anomaly detector (`anomaly_scores`) to flag
(`anomaly_plan`: a function of the date, so seeded history and live minutes agree):
* once a day, at a time that changes every day, one of the five quiet instances misbehaves for an
  hour or so: its CPU jumps by 35 points, or drops to a tenth (a process died), or its network
  traffic collapses (requests stop coming) - a level shift;
* once a week, one of the databases does not get its afternoon peak (a missing daily peak).
The busy instance's afternoon, by contrast, happens every day: a threshold rule fires on it, the
detector learns it as normal. The detector also learns what recurs (its histograms fade over four
weeks), so each instance gets each kind of event only every 15 days, each database every 14.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
from datetime import date, datetime, timedelta, timezone

from metrics_pipeline.dev.demo_host import DEMO_TENANT

#: How much history `make dev` seeds the local CloudWatch with, and its catch-up loads: at least 3
#: days of 5-minute buckets, so the anomaly detector knows the daily patterns (SPEC §12).
HISTORY = timedelta(days=3)
INSTANCES = ("i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002", "i-0a1b2c3d4e5f60003",
             "i-0a1b2c3d4e5f60004", "i-0a1b2c3d4e5f60005", "i-0busy0000000000006")
DATABASES = ("orders-db", "analytics-db")


#: what may happen to an instance for a while: (kind, minutes)
EVENTS = (("cpu_shift", 75), ("cpu_drop", 60), ("traffic_collapse", 60))
SHIFT_POINTS = 35.0
#: a database's missing peak: its load stays at the night level over these UTC hours
PEAK_HOURS = (11, 19)


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str
    instance: str
    start: datetime
    end: datetime


@dataclasses.dataclass(frozen=True)
class AnomalyPlan:
    """What is unusual on one UTC day of the demo."""

    events: tuple[Event, ...]
    missing_peak: str | None  # the database whose peak does not come

    def event(self, instance: str, ts: datetime) -> str | None:
        """The kind of event `instance` is going through at `ts`, if any."""
        return next((e.kind for e in self.events if e.instance == instance and e.start <= ts < e.end), None)

    def peak_missing(self, database: str, ts: datetime) -> bool:
        return database == self.missing_peak and PEAK_HOURS[0] <= ts.hour < PEAK_HOURS[1]


def anomaly_plan(day: date) -> AnomalyPlan:
    """The day's anomalies: one event (instance and kind in turn, the time from a hash of the date),
    and on one day of each week a database's missing peak (the two databases in turn)."""
    n = day.toordinal()
    quiet = [i for i in INSTANCES if not i.startswith("i-0busy")]
    kind, minutes = EVENTS[(n // len(quiet)) % len(EVENTS)]
    digest = hashlib.sha256(f"metrics_pipeline.demo:{day.isoformat()}".encode()).digest()
    start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(
        minutes=int.from_bytes(digest[:4], "big") % (24 * 60 - minutes))
    event = Event(kind, quiet[n % len(quiet)], start, start + timedelta(minutes=minutes))
    return AnomalyPlan((event,), DATABASES[(n // 7) % len(DATABASES)] if n % 7 == 3 else None)


def _datums(ts: datetime, rng: random.Random) -> dict[str, list[dict]]:
    hour = ts.hour + ts.minute / 60
    daily = 0.5 + 0.5 * math.sin((hour - 9) / 24 * 2 * math.pi)  # peak mid-afternoon UTC
    plan = anomaly_plan(ts.date())
    ec2, rds = [], []
    for i, instance in enumerate(INSTANCES):
        busy = instance.startswith("i-0busy") and 13 <= ts.hour < 16
        cpu = 97 - rng.random() * 4 if busy else max(0.5, min(99.0, 15 + 45 * daily + rng.gauss(0, 6) + i * 3))
        event = plan.event(instance, ts)
        if event == "cpu_shift":
            cpu = min(99.0, cpu + SHIFT_POINTS)
        elif event == "cpu_drop":
            cpu = max(0.5, cpu / 10)
        net = max(0.0, 2e7 * daily * (1 + i / 3) + rng.gauss(0, 2e6))
        if event == "traffic_collapse":
            net *= 0.05
        dims = [{"Name": "InstanceId", "Value": instance}]
        ec2 += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": ts, "Value": round(cpu, 2), "Unit": "Percent"},
            {"MetricName": "NetworkIn", "Dimensions": dims, "Timestamp": ts, "Value": round(net), "Unit": "Bytes"},
            {"MetricName": "NetworkOut", "Dimensions": dims, "Timestamp": ts, "Value": round(net * 0.6), "Unit": "Bytes"},
        ]
    for j, db in enumerate(DATABASES):
        dims = [{"Name": "DBInstanceIdentifier", "Value": db}]
        load = 0.05 if plan.peak_missing(db, ts) else daily
        rds += [
            {"MetricName": "CPUUtilization", "Dimensions": dims, "Timestamp": ts,
             "Value": round(max(1.0, 10 + 50 * load + rng.gauss(0, 5)), 2), "Unit": "Percent"},
            {"MetricName": "FreeableMemory", "Dimensions": dims, "Timestamp": ts,
             "Value": round(4e9 - 2.5e9 * load + rng.gauss(0, 1e8) - j * 1e9), "Unit": "Bytes"},
            {"MetricName": "DatabaseConnections", "Dimensions": dims, "Timestamp": ts,
             "Value": float(max(0, round(20 + 80 * load + rng.gauss(0, 5)))), "Unit": "Count"},
        ]
    return {"AWS/EC2": ec2, "AWS/RDS": rds}


def publish(client, start: datetime, end: datetime, seed: int = 5) -> int:
    """PutMetricData for every minute in [start, end); returns datapoints written."""
    rng = random.Random(seed)
    batches: dict[str, list[dict]] = {"AWS/EC2": [], "AWS/RDS": []}
    written = 0
    ts = start.astimezone(timezone.utc).replace(second=0, microsecond=0)
    while ts < end:
        for namespace, datums in _datums(ts, rng).items():
            batches[namespace].extend(datums)
        ts += timedelta(minutes=1)
    for namespace, datums in batches.items():
        for lo in range(0, len(datums), 1000):
            client.put_metric_data(Namespace=namespace, MetricData=datums[lo:lo + 1000])
        written += len(datums)
    return written


def demo_config(endpoint_url: str) -> dict:
    """The demo's CloudWatch configuration: the sample's EC2 and RDS selectors on the local endpoint."""
    return {
        "discovery_cache_seconds": 300,
        # the catch-up sensor loads every seeded hour (one range run), not only the last 6
        "catchup_hours": int(HISTORY.total_seconds() // 3600),
        "statistics": ["Average", "Minimum", "Maximum", "SampleCount"],
        "accounts": [{
            "name": "demo", "account_id": "000000000000", "tenant": DEMO_TENANT, "regions": ["eu-west-1"],
            "endpoint_url": endpoint_url,
            "metrics": [
                {"namespace": "AWS/EC2", "metric_names": ["CPUUtilization", "NetworkIn", "NetworkOut"],
                 "dimensions": {"InstanceId": "*"}},
                {"namespace": "AWS/RDS", "metric_names": ["CPUUtilization", "FreeableMemory", "DatabaseConnections"],
                 "dimensions": {"DBInstanceIdentifier": "*"}, "statistics": ["Average", "Maximum"]},
            ],
        }],
    }


def now() -> datetime:
    return datetime.now(timezone.utc)
