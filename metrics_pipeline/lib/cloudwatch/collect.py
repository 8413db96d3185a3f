"""Fetch a window of CloudWatch metrics: discovery, tag filters, GetMetricData, normalised points.

Flow for one window: resolve the selectors of every account/region into queries (ListMetrics
discovery, cached; Resource Groups Tagging API filters), plan the calls (`plan.py`), refuse the run
if the estimate exceeds the budget, call GetMetricData (`ScanBy=TimestampAscending`, following
`NextToken`), and turn the results into a points frame for the loader.

Retries are botocore's "standard" mode: throttling (`Throttling`, `ThrottlingException`, 429),
5xx and connection/read timeouts are retried with exponential backoff and jitter, up to
`max_attempts`. Credential problems fail at once with a message naming what is missing; AWS's own
error text is not repeated (it can quote request details), and nothing secret is ever formatted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from metrics_pipeline.lib import settings
from metrics_pipeline.lib.cloudwatch.config import Account, CloudWatchConfig, MetricSelector
from metrics_pipeline.lib.cloudwatch.plan import Call, Query, estimate, period_for, plan_calls, unit_for
from metrics_pipeline.lib.points import points_frame

log = logging.getLogger(__name__)

_AUTH_CODES = {
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "AccessDenied", "AccessDeniedException", "AuthFailure", "InvalidAccessKeyId",
}


class CloudWatchError(RuntimeError):
    """A CloudWatch run cannot proceed (credentials, budget, API error after retries)."""


class BudgetExceeded(CloudWatchError):
    pass


@dataclasses.dataclass
class FetchStats:
    api_calls: Counter = dataclasses.field(default_factory=Counter)  # operation -> HTTP requests sent
    operations: Counter = dataclasses.field(default_factory=Counter)  # operation -> logical calls
    metrics_requested: int = 0
    estimated_usd: float = 0.0
    datapoints: int = 0
    series: int = 0
    empty_series: int = 0
    periods: set = dataclasses.field(default_factory=set)
    discovery_pages: int = 0
    partial_results: int = 0
    coarsened: bool = False  # CloudWatch no longer holds this window at the configured period

    @property
    def total_calls(self) -> int:
        return sum(self.api_calls.values())

    @property
    def retries(self) -> int:
        """Requests that were repeats of a throttled, failed or timed-out attempt."""
        return self.total_calls - sum(self.operations.values())


class Clients:
    """boto3 clients per (account, region) with request counting hooked into botocore's events."""

    def __init__(self, config: CloudWatchConfig, stats: FetchStats, endpoint_override: str | None = None):
        self.config, self.stats, self.endpoint_override = config, stats, endpoint_override
        self._cache: dict[tuple, object] = {}

    def _session(self, account: Account):
        import boto3

        session = boto3.Session(profile_name=account.profile) if account.profile else boto3.Session()
        if account.role_arn:
            sts = session.client("sts", endpoint_url=self._endpoint(account))
            creds = sts.assume_role(RoleArn=account.role_arn, RoleSessionName="metrics-pipeline")["Credentials"]
            session = boto3.Session(
                aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"],
            )
        return session

    def _endpoint(self, account: Account) -> str | None:
        return account.endpoint_url or self.endpoint_override

    def get(self, account: Account, region: str, service: str):
        key = (account.name, region, service)
        if key not in self._cache:
            from botocore.config import Config

            client = self._session(account).client(
                service,
                region_name=region,
                endpoint_url=self._endpoint(account),
                config=Config(
                    retries={"mode": "standard", "max_attempts": self.config.max_attempts},
                    connect_timeout=10,
                    read_timeout=60,
                    user_agent_extra="metrics-pipeline",
                ),
            )
            client.meta.events.register("before-send", self._count_request)
            client.meta.events.register("before-call", self._count_operation)
            self._cache[key] = client
        return self._cache[key]

    def _count_request(self, **kwargs) -> None:
        self.stats.api_calls[kwargs.get("event_name", "").split(".")[-1] or "unknown"] += 1

    def _count_operation(self, **kwargs) -> None:
        self.stats.operations[kwargs.get("event_name", "").split(".")[-1] or "unknown"] += 1


def _auth_error(exc: Exception, account: Account, region: str) -> CloudWatchError | None:
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError, ProfileNotFound

    where = f"account {account.name!r} in {region}"
    if isinstance(exc, NoCredentialsError):
        return CloudWatchError(
            f"no AWS credentials found for {where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "an AWS_PROFILE, or run with an instance/task role"
        )
    if isinstance(exc, PartialCredentialsError):
        return CloudWatchError(f"incomplete AWS credentials for {where}: {exc.kwargs.get('cred_var', 'a value')} is missing")
    if isinstance(exc, ProfileNotFound):
        return CloudWatchError(f"AWS profile {account.profile!r} for {where} does not exist in the AWS config files")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _AUTH_CODES:
            return CloudWatchError(
                f"AWS refused the credentials for {where} ({code}): check the access key, its expiry and "
                "that the identity may call cloudwatch:GetMetricData and cloudwatch:ListMetrics"
            )
    return None


def _api_error(exc: Exception, account: Account, region: str, attempts: int, operation: str) -> Exception:
    """A clear error for a call that failed after botocore's retries: the code or exception type
    only, never AWS's message text (it can quote request details)."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"account {account.name!r} in {region}"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "unknown")
        return CloudWatchError(f"{operation} failed for {where}: {code} (gave up after {attempts} attempts with backoff)")
    if isinstance(exc, BotoCoreError):
        return CloudWatchError(f"{operation} for {where} failed: {type(exc).__name__} (after up to {attempts} attempts)")
    return exc


def _explicit(dimensions: dict[str, str | list[str]]) -> bool:
    return all("*" not in (v if isinstance(v, list) else [v]) for v in dimensions.values())


def _combinations(dimensions: dict[str, str | list[str]]) -> list[tuple[tuple[str, str], ...]]:
    import itertools

    names = sorted(dimensions)
    choices = [dimensions[n] if isinstance(dimensions[n], list) else [dimensions[n]] for n in names]
    return [tuple(zip(names, values)) for values in itertools.product(*choices)]


def _dimension_match(wanted: dict[str, str | list[str]], dimensions: list[dict]) -> bool:
    have = {d["Name"]: d["Value"] for d in dimensions}
    if set(have) != set(wanted) and wanted:
        return False
    for name, accepted in wanted.items():
        value = have.get(name)
        if value is None:
            return False
        if accepted == "*":
            continue
        if value not in (accepted if isinstance(accepted, list) else [accepted]):
            return False
    return True


class Discovery:
    """ListMetrics, all pages, cached on disk for `discovery_cache_seconds`."""

    def __init__(self, clients: Clients, cache_dir: Path, ttl: int):
        self.clients, self.cache_dir, self.ttl = clients, cache_dir, ttl

    def metrics(self, account: Account, region: str, namespace: str) -> list[dict]:
        safe = "".join(c if c.isalnum() else "_" for c in f"{account.name}-{region}-{namespace}")
        path = self.cache_dir / f"{safe}.json"
        if self.ttl and path.exists() and time.time() - path.stat().st_mtime < self.ttl:
            return json.loads(path.read_text())
        client = self.clients.get(account, region, "cloudwatch")
        found = []
        kwargs = {"Namespace": namespace}
        while True:
            page = client.list_metrics(**kwargs)
            self.clients.stats.discovery_pages += 1
            found.extend(
                {"MetricName": m["MetricName"], "Dimensions": m.get("Dimensions", [])} for m in page.get("Metrics", [])
            )
            token = page.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        if self.ttl:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(found))
            tmp.replace(path)
        return found


def _tagged_ids(clients: Clients, account: Account, region: str, selector: MetricSelector) -> set[str]:
    """Resource ids (the last part of each ARN) carrying the selector's tags."""
    client = clients.get(account, region, "resourcegroupstaggingapi")
    kwargs = {"TagFilters": [{"Key": k, "Values": v} for k, v in selector.tag_filters.items()]}
    if selector.resource_type:
        kwargs["ResourceTypeFilters"] = [selector.resource_type]
    ids = set()
    while True:
        page = client.get_resources(**kwargs)
        for item in page.get("ResourceTagMappingList", []):
            arn = item["ResourceARN"]
            ids.add(arn.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
        token = page.get("PaginationToken")
        if not token:
            return ids
        kwargs["PaginationToken"] = token


def build_queries(
    config: CloudWatchConfig, clients: Clients, start: datetime, now: datetime, cache_dir: Path
) -> list[Query]:
    """Every (metric, dimensions, statistic) the configuration asks for in this window."""
    discovery = Discovery(clients, cache_dir, config.discovery_cache_seconds)
    queries: list[Query] = []
    for account in config.accounts:
        for region in account.regions:
            for selector in account.metrics:
                configured = selector.period_seconds or config.period_seconds
                period = period_for(start, now, configured)
                clients.stats.coarsened |= period > configured
                stats = (selector.statistics or config.statistics) + selector.extended_statistics
                try:
                    if selector.metric_names and _explicit(selector.dimensions):
                        # Every series is named: no discovery call needed.
                        metrics = [
                            {"MetricName": name, "Dimensions": [{"Name": k, "Value": v} for k, v in combo]}
                            for name in selector.metric_names
                            for combo in _combinations(selector.dimensions)
                        ]
                    else:
                        metrics = discovery.metrics(account, region, selector.namespace)
                    tagged = _tagged_ids(clients, account, region, selector) if selector.tag_filters else None
                except Exception as exc:
                    raise (_auth_error(exc, account, region) or _api_error(
                        exc, account, region, config.max_attempts, "ListMetrics/GetResources")) from None
                for metric in metrics:
                    if selector.metric_names and metric["MetricName"] not in selector.metric_names:
                        continue
                    if not _dimension_match(selector.dimensions, metric["Dimensions"]):
                        continue
                    if tagged is not None and not any(d["Value"] in tagged for d in metric["Dimensions"]):
                        continue
                    dims = tuple(sorted((d["Name"], d["Value"]) for d in metric["Dimensions"]))
                    for stat in stats:
                        queries.append(Query(
                            account.name, account.account_id, region, selector.namespace, metric["MetricName"], dims,
                            stat, period, unit_for(selector.namespace, metric["MetricName"], stat, selector.units),
                            account.tenant,
                        ))
    return list(dict.fromkeys(queries))  # one query per series even if two selectors overlap


def fetch(
    config: CloudWatchConfig,
    start: datetime,
    end: datetime,
    *,
    now: datetime | None = None,
    endpoint_url: str | None = None,
    cache_dir: Path | None = None,
) -> tuple[pd.DataFrame, FetchStats, list[Call]]:
    """All configured series for [start, end) as a points frame, with what it cost."""
    now = now or datetime.now(timezone.utc)
    stats = FetchStats()
    clients = Clients(config, stats, endpoint_url)
    queries = build_queries(config, clients, start, now, cache_dir or settings.state_dir() / "cache" / "cloudwatch")
    calls = plan_calls(queries, start, end)
    stats.metrics_requested, stats.estimated_usd = estimate(calls)
    if config.budget_usd_per_run is not None and stats.estimated_usd > config.budget_usd_per_run:
        raise BudgetExceeded(
            f"this run would request {stats.metrics_requested:,} metrics, an estimated ${stats.estimated_usd:.4f}, "
            f"over the budget of ${config.budget_usd_per_run:.4f} per run (budget_usd_per_run); narrow the "
            "selectors, lengthen the period or raise the budget"
        )
    accounts = {a.name: a for a in config.accounts}
    series = []
    for call in calls:
        account = accounts[call.region_key[0]]
        by_id = {f"q{i}": q for i, q in enumerate(call.queries)}
        collected: dict[str, tuple[list, list]] = {qid: ([], []) for qid in by_id}
        cut: list = []
        kwargs = {
            "MetricDataQueries": [q.request(qid) for qid, q in by_id.items()],
            "StartTime": call.start,
            "EndTime": call.end,
            # Ascending: pages arrive in time order, so a series split across NextToken pages stays sorted.
            "ScanBy": "TimestampAscending",
        }
        while True:
            try:
                response = clients.get(account, call.region_key[1], "cloudwatch").get_metric_data(**kwargs)
            except Exception as exc:
                raise (_auth_error(exc, account, call.region_key[1]) or _api_error(
                    exc, account, call.region_key[1], config.max_attempts, "GetMetricData")) from None
            for result in response.get("MetricDataResults", []):
                ts, values = collected[result["Id"]]
                ts.extend(result.get("Timestamps", []))
                values.extend(result.get("Values", []))
                if result.get("StatusCode") == "PartialData" and not response.get("NextToken"):
                    stats.partial_results += 1
                    cut.append(by_id[result["Id"]])
            token = response.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        if cut:
            # PartialData with nothing to follow: CloudWatch cut the results. Loading them would store a
            # window with points missing in a green run; fail naming what was cut instead.
            messages = "; ".join(f"{m.get('Code')}: {m.get('Value')}" for m in response.get("Messages", [])) or "none"
            raise CloudWatchError(
                f"GetMetricData for account {account.name!r} in {call.region_key[1]} returned incomplete results "
                f"(PartialData, no NextToken) for {len(cut)} of {len(by_id)} queries over "
                f"{call.start.isoformat()} .. {call.end.isoformat()}, e.g. {cut[0].series_metric} of {cut[0].resource}; "
                f"CloudWatch messages: {messages}. Nothing was loaded: re-run, or shorten the run window"
            )
        for qid, query in by_id.items():
            ts, values = collected[qid]
            stats.periods.add(query.period)
            if not values:
                stats.empty_series += 1
                continue
            stats.datapoints += len(values)
            series.append({
                "metric": query.series_metric, "resource": query.resource, "labels": query.labels, "unit": query.unit,
                "ts": pd.to_datetime(ts, utc=True),
                "value": np.asarray(values, dtype="float64"),
            })
    stats.series = len({(q.series_metric, q.resource, json.dumps(q.labels, sort_keys=True)) for q in queries})
    return points_frame(series), stats, calls
