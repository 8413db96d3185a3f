"""`metrics-pipeline simulate-logs`: realistic data-ingestion job logs for demos, tests and benchmarks.

Companies run pipelines per zone (1-Raw, 2-Standardized, 3-Application) for objects of five source
systems on a schedule. Durations are log-normal around a per-source median; failures follow a base
rate plus occasional outages of one source system (an API down for an hour fails most of its jobs),
with the error messages such jobs really print. A small share of records is deliberately broken
(missing field, unknown status, inconsistent duration, end before start, a torn JSON line) so that
quarantine has something to show. Files are written per company, zone and hour, alternating JSON
arrays (some with a UTF-8 BOM) and JSON Lines, through the landing zone's atomic write.
Same seed, same files.
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.landing import LandingZone

COMPANIES = ("akonovia", "boreal-logistique", "cedrus-sante", "delta-energies")
ZONES = ("1-Raw", "2-Standardized", "3-Application")
SOURCES = {
    # source: (median seconds, objects, transformations, typical errors)
    "PowerBI": (95, ("Dataset", "Report", "Dashboard"), ("REST API", "XMLA endpoint"), (
        "Timeout after 600 s waiting for dataset refresh to complete",
        "HTTP 429 Too Many Requests: Power BI API rate limit reached, retry after 60 s",
        "The dataset refresh failed: data source credentials are missing or invalid",
    )),
    "Zoho": (40, ("Contacts", "Deals", "Invoices", "Accounts"), ("REST API v2", "Bulk Read API"), (
        "HTTP 401 Unauthorized: INVALID_OAUTHTOKEN (token expired)",
        "HTTP 429 Too Many Requests from Zoho CRM API",
        "Bulk read job 5531000001 stayed IN PROGRESS for more than 900 s",
    )),
    "Efficy": (55, ("Companies", "Opportunities", "Contacts"), ("SOAP API", "JSON RPC"), (
        "ConnectionResetError: [Errno 104] Connection reset by peer",
        "Efficy session expired during pagination (page 37 of 52)",
    )),
    "SharePoint": (30, ("Lists", "Documents", "Sites"), ("Graph API", "REST API"), (
        "The file is locked for exclusive use by another user",
        "Microsoft Graph returned 503 Service Unavailable",
        "Item count exceeds the list view threshold (5000)",
    )),
    "EasyProjects": (25, ("Projects", "Tasks", "Timesheets"), ("REST API", "Incremental export"), (
        "KeyError: 'ActualHours' in standardisation mapping",
        "requests.exceptions.ReadTimeout: read timeout=120",
    )),
}
ZONE_FACTOR = {"1-Raw": 1.0, "2-Standardized": 0.6, "3-Application": 0.4}
ZONE_ERRORS = {
    "2-Standardized": ("psycopg2.errors.UniqueViolation: duplicate key value violates unique constraint",
                       "ValueError: could not convert string to float: 'N/A'"),
    "3-Application": ("Upstream table stg.{object} is empty: refusing to publish an empty table",),
}
SUCCESS_TEXT = "Tout roule, pas de stress!"


@dataclasses.dataclass
class SimulationStats:
    files: int = 0
    records: int = 0
    failures: int = 0
    bad_records: int = 0


def _job_catalogue(rng: random.Random, jobs_per_hour: int) -> list[dict]:
    """Scheduled jobs: enough (company, zone, source, object) pipelines to reach the hourly volume."""
    jobs = []
    object_id = 1000
    while len(jobs) < max(1, jobs_per_hour):
        for company in COMPANIES:
            for source, (median, objects, transformations, _) in SOURCES.items():
                for obj in objects:
                    for zone in ZONES:
                        object_id += 1
                        jobs.append({
                            "company": company, "zone": zone, "source": source, "object": obj,
                            "object_id": object_id, "transformation": rng.choice(transformations),
                            "median": median * ZONE_FACTOR[zone] * rng.uniform(0.6, 1.6),
                        })
    rng.shuffle(jobs)
    return jobs[:jobs_per_hour]


def _record(rng, job, start: datetime, failed: bool, naive_times: bool) -> dict:
    duration = max(0.5, rng.lognormvariate(0, 0.45) * job["median"])
    if failed and rng.random() < 0.4:
        duration *= rng.uniform(2, 6)  # timeouts run long
    if failed:
        choices = SOURCES[job["source"]][3] + ZONE_ERRORS.get(job["zone"], ())
        description = rng.choice(choices).format(object=job["object"].lower())
    else:
        description = SUCCESS_TEXT

    def fmt(ts: datetime) -> str:
        return ts.strftime("%Y-%m-%d %H:%M:%S") if naive_times else ts.isoformat(timespec="seconds").replace("+00:00", "Z")

    seq = start.replace(second=0, microsecond=0)
    return {
        "No_Sequence": seq.strftime("%Y-%m-%d-%H-%M"),
        "Date_Sequence": seq.strftime("%Y-%m-%d"),
        "Heure_Sequence": seq.strftime("%H"),
        "Minute_Sequence": seq.strftime("%M"),
        "Entreprise": job["company"],
        "Zone": job["zone"],
        "Source": job["source"],
        "Objet_Id": job["object_id"],
        "Objet": job["object"],
        "Transformation": job["transformation"],
        "Etat": "FAILED" if failed else "SUCCESS",
        "Debut": fmt(start),
        "Fin": fmt(start.replace(microsecond=0) + timedelta(seconds=round(duration))),
        "Duree secondes": round(round(duration), 0),
        "Description": description,
        "cpu_time (sec)": round(duration * rng.uniform(0.05, 0.7), 3),
        "memory_used (bytes)": int(rng.lognormvariate(18.5, 0.8)),
    }


def _break(rng: random.Random, record: dict) -> dict | str:
    """One of the ways real producers get records wrong."""
    kind = rng.randrange(6)
    broken = dict(record)
    if kind == 0:
        del broken["Fin"]
    elif kind == 1:
        broken["Etat"] = rng.choice(["UNKNOWN", "RUNNING", ""])
    elif kind == 2:
        broken["Duree secondes"] = record["Duree secondes"] + 3600
    elif kind == 3:
        broken["Fin"], broken["Debut"] = record["Debut"], record["Fin"]
        if broken["Fin"] == broken["Debut"]:
            broken["Duree secondes"] = -5
    elif kind == 4:
        broken["Duree secondes"] = -abs(record["Duree secondes"]) - 1
    else:
        return json.dumps(record, ensure_ascii=False)[: rng.randrange(10, 60)]  # torn line
    return broken


def simulate(
    zone: LandingZone,
    start: datetime,
    end: datetime,
    *,
    jobs_per_hour: int = 120,
    seed: int = 7,
    bad_rate: float = 0.005,
    failure_rate: float = 0.03,
    outage_rate: float = 0.04,
    tag: str = "",
) -> SimulationStats:
    """Write simulated job logs for [start, end) into `zone` under `ingestion_logs/`.

    `tag` is added to file names, so successive calls within one hour (the demo's follow mode)
    write new files instead of replacing earlier ones.
    """
    if start.tzinfo is None or end.tzinfo is None or end <= start:
        raise ValueError("simulate-logs needs a timezone-aware start before end")
    rng = random.Random(seed)
    jobs = _job_catalogue(rng, jobs_per_hour)
    stats = SimulationStats()
    hour = start.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)
    file_number = 0
    while hour < end:
        down = {s for s in SOURCES if rng.random() < outage_rate}  # this hour's outages
        per_file: dict[tuple[str, str], list] = {}
        for job in jobs:
            started = hour + timedelta(seconds=rng.uniform(0, 3600))
            if not start <= started < end:
                continue
            failed = rng.random() < (0.7 if job["source"] in down else failure_rate)
            record = _record(rng, job, started, failed, naive_times=rng.random() < 0.5)
            stats.records += 1
            stats.failures += failed
            if rng.random() < bad_rate:
                record = _break(rng, record)
                stats.bad_records += 1
            per_file.setdefault((job["company"], job["zone"]), []).append(record)
        for (company, zone_name), records in sorted(per_file.items()):
            file_number += 1
            as_lines = file_number % 2 == 0 or any(isinstance(r, str) for r in records)
            stem = f"ingestion_logs/{hour:%Y-%m-%d}/{company}-{zone_name}-{hour:%Y%m%dT%H}{'-' + tag if tag else ''}"
            if as_lines:
                body = "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records) + "\n"
                zone.write(f"{stem}.jsonl", body.encode())
            else:
                body = json.dumps(records, ensure_ascii=False, indent=1).encode()
                zone.write(f"{stem}.json", (b"\xef\xbb\xbf" if file_number % 3 == 0 else b"") + body)
            stats.files += 1
        hour += timedelta(hours=1)
    return stats
