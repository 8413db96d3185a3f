"""WhaTap Open API client (`requests`), per `shared/reference/whatap-open-api.md`.

* Auth is a header, never a URL part: `x-whatap-token` (account token for the project list, project
  token plus `x-whatap-pcode` for data). Tokens never appear in messages, logs or metadata: errors
  name the project code and endpoint only.
* 429, 5xx, timeouts and connection errors are retried with exponential backoff and jitter, a
  bounded number of times; 401/403 are configuration errors and never retried.
* An HTTP 200 whose body is `[{"error": ...}]` (what a bad MXQL query returns) is an error, not empty
  data; so is a JSON object carrying `error`.
* Times are epoch milliseconds UTC. `sm_stat` windows are split into <= 1 hour requests; MXQL windows
  into <= 31 days. Both documented APM series shapes (`objects[].series`, `data[].data`) are parsed.
* Numbers may arrive as strings; they are parsed, and values that do not parse are counted and
  skipped with their reason (`ClientStats.skipped`).
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Iterator

import requests

HOUR_MS = 3_600_000
MXQL_MAX_MS = 31 * 24 * HOUR_MS


class WhatapError(RuntimeError):
    """A WhaTap call failed after retries, or answered with an error body."""


class WhatapAuthError(WhatapError):
    """401/403: a token or project code is wrong. Never retried."""


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

    # -- transport -----------------------------------------------------------------------------
    def _request(self, method: str, path: str, endpoint: str, *, token: str, pcode: int | None = None,
                 params: dict | None = None, body: dict | None = None):
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
                    payload = _json(response)
                    error = _error_in(payload)
                    if error is not None:
                        self.stats.errors[endpoint] += 1
                        raise WhatapError(f"WhaTap {endpoint} for {who} returned an error: {_redact(error, token)[:200]}")
                    return payload
            self.stats.errors[endpoint] += 1
            if attempt < self.max_attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.0))
        raise WhatapError(f"WhaTap {endpoint} for {who} failed after {self.max_attempts} attempts ({last})")

    # -- endpoints -----------------------------------------------------------------------------
    def projects(self, account_token: str) -> list[Project]:
        payload = self._request("GET", "/open/api/json/projects", "projects", token=account_token)
        return [
            Project(int(p["projectCode"]), str(p.get("projectName", "")), str(p.get("productType", "")),
                    str(p.get("platform", "")), str(p["apiToken"]))
            for p in (payload or {}).get("data", []) if p.get("apiToken")
        ]

    def servers(self, project: Project) -> list[dict]:
        payload = self._request("GET", "/open/json/sm_servers", "sm_servers", token=project.token, pcode=project.code)
        return list((payload or {}).get("values", []))

    def sm_stat(self, project: Project, start_ms: int, end_ms: int, resolution: str = "m5") -> Iterator[dict]:
        """Rows {oid, time, cpu, ...} over [start, end), one request per hour at most."""
        for s, e in _windows(start_ms, end_ms, HOUR_MS):
            payload = self._request("GET", "/open/json/stat/sm_stat", "sm_stat", token=project.token, pcode=project.code,
                                    params={"stime": s, "etime": e, "filter": resolution})
            for server in (payload or {}).get("servers", []):
                for row in server.get("timeData", []):
                    yield {"oid": server.get("oid"), **row}

    def mxql(self, project: Project, start_ms: int, end_ms: int, mql: str, limit: int = 100_000) -> list[dict]:
        rows: list[dict] = []
        for s, e in _windows(start_ms, end_ms, MXQL_MAX_MS):
            payload = self._request("POST", "/open/api/flush/mxql/text", "mxql", token=project.token, pcode=project.code,
                                    body={"stime": s, "etime": e, "mql": mql, "limit": limit, "pageKey": "mxql"})
            if not isinstance(payload, list):
                raise WhatapError(f"WhaTap mxql for project {project.code} returned {type(payload).__name__}, not a list")
            if len(payload) >= limit:  # MXQL has no paging: a full page may have lost rows
                self.stats.skipped[f"mxql: {limit}-row limit reached, later rows not returned"] += 1
            rows += [r for r in payload if isinstance(r, dict) and "_head_" not in r]
        return rows

    def apm_series(self, project: Project, metric: str, start_ms: int, end_ms: int) -> Iterator[tuple[int, str, int, object]]:
        """(oid, oname, time_ms, raw value) of an APM series; both documented response shapes."""
        payload = self._request("GET", f"/open/api/json/{metric}/{start_ms}/{end_ms}", f"apm:{metric}",
                                token=project.token, pcode=project.code) or {}
        for obj in payload.get("objects") or payload.get("data") or []:
            points = obj.get("series") if "series" in obj else obj.get("data", [])
            for point in points or []:
                if isinstance(point, (list, tuple)) and len(point) == 2:
                    yield obj.get("oid"), str(obj.get("oname", "")), int(point[0]), point[1]
                else:
                    self.stats.skipped[f"apm:{metric}: malformed point"] += 1


def _windows(start_ms: int, end_ms: int, step: int) -> list[tuple[int, int]]:
    return [(s, min(end_ms, s + step)) for s in range(start_ms, end_ms, step)]


def _json(response: requests.Response):
    try:
        return response.json()
    except ValueError:
        text = response.text.strip()
        try:
            return float(text)  # the single-value spot endpoints answer a bare number
        except ValueError:
            raise WhatapError(f"WhaTap answered non-JSON content ({response.headers.get('Content-Type', '?')})") from None


def _error_in(payload) -> str | None:
    if isinstance(payload, list) and payload and isinstance(payload[0], dict) and "error" in payload[0]:
        return str(payload[0]["error"])
    if isinstance(payload, dict) and "error" in payload and not any(k in payload for k in ("data", "servers", "values")):
        return str(payload["error"])
    return None


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
