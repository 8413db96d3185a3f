"""WhaTap Open API client (`requests`), per `shared/reference/whatap-open-api.md`.

* Auth is a header, never a URL part: `x-whatap-token` (account token for the project list, project
  token plus `x-whatap-pcode` for data). Tokens never appear in messages, logs or metadata: errors
  name the project code and endpoint only.
* 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, a
  bounded number of times; 401/403 are configuration errors and never retried.
* An HTTP 200 is data only in the shape the endpoint documents: `[{"error": ...}]` (a bad MXQL
  query), `{"message": ...}`, `{"msg": ...}` and other shapes are errors, never empty data
  (`responses.py` says why).
* Times are epoch milliseconds UTC. Every windowed request asks for at most one hour and is split
  further whenever its answer may have been cut (a row cap, merged points): `split.py`. A project
  token alone tells a project's type and name (`/open/api/json/project`).
  Both documented APM series shapes (`objects[].series`, `data[].data`) are parsed.
* Numbers may arrive as strings; they are parsed, and values that do not parse are counted and
  skipped with their reason (`ClientStats.skipped`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter

import requests

from metrics_pipeline.lib.whatap import responses
from metrics_pipeline.lib.whatap.errors import (
    WhatapAuthError,
    WhatapError,
    WhatapRowsCut,
)
from metrics_pipeline.lib.whatap.split import HOUR_MS, Page, Splitter, see_cap

__all__ = ["ClientStats", "Project", "WhatapAuthError", "WhatapClient", "WhatapError", "WhatapRowsCut", "number"]

MXQL_LIMIT = 100_000  # the most rows one MXQL answer holds (WhaTap's cap, and our default `limit`)
MXQL_STEP_MS = 5_000  # MXQL server and APM counters: one row per agent (disk, NIC) every 5 s
APM_STEP_MS = 300_000  # APM series: one point per agent every 5 minutes
RESOLUTION_MS = {"m5": 300_000, "s5": 5_000, "h1": HOUR_MS}


@dataclasses.dataclass(frozen=True)
class Project:
    code: int
    name: str
    product_type: str
    platform: str
    token: str = dataclasses.field(repr=False)  # never printed


@dataclasses.dataclass
class ClientStats:
    calls: Counter = dataclasses.field(default_factory=Counter)  # endpoint -> requests sent
    errors: Counter = dataclasses.field(default_factory=Counter)  # endpoint -> failed attempts
    skipped: Counter = dataclasses.field(default_factory=Counter)  # reason -> values skipped
    splits: Counter = dataclasses.field(default_factory=Counter)  # endpoint -> requests split (answer cut)
    caps: dict = dataclasses.field(default_factory=dict)  # endpoint -> smallest row cap seen


def number(raw, stats: ClientStats, where: str) -> float | None:
    """A finite float from a number or numeric string; None (counted) otherwise."""
    if isinstance(raw, bool) or raw is None:
        stats.skipped[f"{where}: missing or boolean value"] += 1
        return None
    try:
        v = float(raw.strip()) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError, OverflowError):
        stats.skipped[f"{where}: not a number"] += 1
        return None
    if not math.isfinite(v):
        stats.skipped[f"{where}: not finite"] += 1
        return None
    return v


class WhatapClient:
    def __init__(self, base_url: str = "https://api.whatap.io", *, timeout: float = 30.0, max_attempts: int = 5,
                 backoff_s: float = 0.5, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout, self.max_attempts, self.backoff_s = timeout, max_attempts, backoff_s
        self.session = session or requests.Session()
        self.stats = ClientStats()
        self.splitter = Splitter(self.stats.caps, self.stats.splits)

    # -- transport -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, endpoint: str, *, token: str, pcode: int | None = None,
                 params: dict | None = None, body: dict | None = None, expect: tuple[str, ...] | type = ()):
        headers = {"x-whatap-token": token, "Accept": "application/json"}
        if pcode is not None:
            headers["x-whatap-pcode"] = str(pcode)
        who = f"project {pcode}" if pcode is not None else "the account"
        last = "no attempt"
        for attempt in range(1, self.max_attempts + 1):
            self.stats.calls[endpoint] += 1
            try:
                response = self.session.request(method, self.base_url + path, headers=headers, params=params,
                                                json=body, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError) as exc:
                last = type(exc).__name__
            else:
                if response.status_code in (401, 403):
                    self.stats.errors[endpoint] += 1
                    raise WhatapAuthError(
                        f"WhaTap refused the token for {who} on {endpoint} (HTTP {response.status_code}): "
                        "check the token and project code in the WhaTap configuration"
                    )
                if response.status_code == 429 or response.status_code >= 500:
                    last = f"HTTP {response.status_code}"
                elif response.status_code >= 400:
                    self.stats.errors[endpoint] += 1
                    raise WhatapError(f"WhaTap {endpoint} for {who} answered HTTP {response.status_code}: "
                                      f"{_message(response, token)}")
                else:
                    payload = _json(response, endpoint, who)
                    problem = responses.problem(payload, expect) if expect else None
                    if problem is not None:  # not retried: the same request gets the same answer
                        self.stats.errors[endpoint] += 1
                        raise WhatapError(f"WhaTap {endpoint} for {who} {_redact(problem, token)[:240]}")
                    return payload
            self.stats.errors[endpoint] += 1
            if attempt < self.max_attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise WhatapError(f"WhaTap {endpoint} for {who} failed after {self.max_attempts} attempts ({last})")

    # -- endpoints -----------------------------------------------------------------------------
    def projects(self, account_token: str) -> list[Project]:
        """Every project of the account, with its token (`/open/api/json/projects`)."""
        payload = self._request("GET", "/open/api/json/projects", "projects", token=account_token, expect=("data",))
        return [
            Project(int(p["projectCode"]), str(p.get("projectName", "")), str(p.get("productType", "")),
                    str(p.get("platform", "")), str(p["apiToken"]))
            for p in payload["data"] or [] if isinstance(p, dict) and p.get("apiToken")
        ]

    def project(self, code: int, token: str) -> Project:
        """A project's type and name from its own token (`/open/api/json/project`), so a project
        configured by token yields the same series as when the account token discovers it.

        The reference documents two shapes: APM `{name, productType, platform, ...}` and server
        `{pname, timezone, regionName, values: {servers}}` (no type: a server project)."""
        payload = self._request("GET", "/open/api/json/project", "project", token=token, pcode=code,
                                expect=("productType", "pname"))
        if payload.get("productType"):
            return Project(code, str(payload.get("name") or payload.get("projectName") or payload.get("pname") or ""),
                           str(payload["productType"]), str(payload.get("platform", "")), token)
        return Project(code, str(payload["pname"]), "SMS", str(payload.get("platform", "")), token)

    def servers(self, project: Project) -> list[dict]:
        payload = self._request("GET", "/open/json/sm_servers", "sm_servers", token=project.token, pcode=project.code,
                                expect=("values",))
        return [s for s in payload["values"] or [] if isinstance(s, dict)]

    def sm_stat(self, project: Project, start_ms: int, end_ms: int, resolution: str = "m5") -> list[dict]:
        """Rows {oid, time, cpu, ...} over [start, end): one request per hour at most (the endpoint's
        limit), split further if an answer may have been cut."""
        def fetch(s: int, e: int) -> Page:
            payload = self._request("GET", "/open/json/stat/sm_stat", "sm_stat", token=project.token,
                                    pcode=project.code, params={"stime": s, "etime": e, "filter": resolution},
                                    expect=("servers",))
            rows = [{"oid": server.get("oid"), **row} for server in payload["servers"] or [] if isinstance(server, dict)
                    for row in server.get("timeData") or [] if isinstance(row, dict)]
            return self._page(rows, s, e, lambda r: r.get("time"), lambda r: r["oid"], "sm_stat")

        return self.splitter.collect("sm_stat", f"sm_stat for project {project.code}", start_ms, end_ms,
                                     span=HOUR_MS, step=RESOLUTION_MS[resolution], fetch=fetch)

    def mxql(self, project: Project, start_ms: int, end_ms: int, mql: str, limit: int = MXQL_LIMIT) -> list[dict]:
        """The rows of an MXQL query over [start, end). MXQL has no paging, only `limit`: an answer
        whose row count reaches the smallest cap seen (this `limit`, or a smaller one the server
        revealed) is split in two, down to one 5-second step (then the run fails)."""
        category = mql.split("\n", 1)[0].removeprefix("CATEGORY").strip() or "?"
        see_cap(self.stats.caps, "mxql", limit)

        def fetch(s: int, e: int) -> Page:
            payload = self._request("POST", "/open/api/flush/mxql/text", "mxql", token=project.token, pcode=project.code,
                                    body={"stime": s, "etime": e, "mql": mql, "limit": limit, "pageKey": "mxql"},
                                    expect=list)
            rows = [r for r in payload if isinstance(r, dict) and "_head_" not in r]
            page = self._page(rows, s, e, lambda r: r.get("time"),
                              lambda r: (r.get("oid"), r.get("mountPoint"), r.get("desc")), f"mxql {category}")
            page.rows = len(payload)  # metadata rows count too, in case the server's cap counts them
            return page

        return self.splitter.collect("mxql", f"mxql {category} for project {project.code}", start_ms, end_ms,
                                     span=HOUR_MS, step=MXQL_STEP_MS, fetch=fetch)

    def apm_series(self, project: Project, metric: str, start_ms: int, end_ms: int) -> list[tuple[int, str, int, object]]:
        """(oid, oname, time_ms, raw value) of an APM series; both documented response shapes. An
        answer whose `interval` is coarser than 5 minutes had its points merged: it is split."""
        def fetch(s: int, e: int) -> Page:
            payload = self._request("GET", f"/open/api/json/{metric}/{s}/{e}", f"apm:{metric}", token=project.token,
                                    pcode=project.code, expect=("objects", "data"))
            points = []
            for obj in payload.get("objects") or payload.get("data") or []:
                if not isinstance(obj, dict):
                    continue
                for point in (obj.get("series") if "series" in obj else obj.get("data")) or []:
                    if isinstance(point, (list, tuple)) and len(point) == 2:
                        points.append((obj.get("oid"), str(obj.get("oname", "")), point[0], point[1]))
                    else:
                        self.stats.skipped[f"apm:{metric}: malformed point"] += 1
            page = self._page(points, s, e, lambda p: p[2], lambda p: p[0], f"apm:{metric}")
            interval = payload.get("interval")
            if isinstance(interval, (int, float)) and not isinstance(interval, bool) and interval * 1000 > APM_STEP_MS:
                page.merged = f"points merged to a {interval:g}-second interval instead of {APM_STEP_MS // 1000}"
            return page

        return self.splitter.collect("apm_series", f"apm:{metric} for project {project.code}", start_ms, end_ms,
                                     span=HOUR_MS, step=APM_STEP_MS, fetch=fetch)

    def _page(self, items: list, s: int, e: int, time_of, series_of, where: str) -> Page:
        """The items of [s, e) (an inclusive `etime` must not count a boundary row twice), with their
        times made integers, and when each series was last seen; items without a usable time are
        counted in `skipped`."""
        kept, latest = [], {}
        for item in items:
            try:
                t = int(time_of(item))
            except (TypeError, ValueError, OverflowError):
                self.stats.skipped[f"{where}: row without a valid time"] += 1
                continue
            if s <= t < e:
                kept.append({**item, "time": t} if isinstance(item, dict) else (*item[:2], t, *item[3:]))
                key = str(series_of(item))
                latest[key] = max(t, latest.get(key, t))
        return Page(kept, len(items), min(latest.values(), default=None))


def _json(response: requests.Response, endpoint: str, who: str):
    try:
        return response.json()
    except ValueError:
        text = response.text.strip()
        try:
            return float(text)  # the single-value spot endpoints answer a bare number
        except ValueError:
            raise WhatapError(f"WhaTap {endpoint} for {who} answered non-JSON content "
                              f"({response.headers.get('Content-Type', '?')})") from None


def _redact(text: str, token: str) -> str:
    """Server text we repeat in errors, without the token (a proxy or error page may echo headers)."""
    return text.replace(token, "[token]") if token else text


def _message(response: requests.Response, token: str) -> str:
    try:
        payload = response.json()
        text = str(payload.get("message") or payload) if isinstance(payload, dict) else str(payload)
    except ValueError:
        text = response.text
    return _redact(text, token)[:200]
