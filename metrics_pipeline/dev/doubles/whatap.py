"""A local WhaTap Open API for tests and the demo, honest to `shared/reference/whatap-open-api.md`.

Endpoints (as the reference documents them): the account-level project list, the project's own
description (`/open/api/json/project`, APM or server shape), `sm_servers`, `stat/sm_stat` (1-hour
limit; m5/s5/h1), MXQL `flush/mxql/text` (31-day limit; categories server_base, server_disk,
server_network, app_counter) and the APM series `/open/api/json/{metric}/{stime}/{etime}`. Times are
epoch milliseconds UTC; auth is the `x-whatap-token` header (account token, or project token plus
`x-whatap-pcode`).

Where the reference is uncertain the double offers both variants behind a switch:
* `apm_shape`: "objects" (`objects[].series`, with `timeMerge`) or "data" (`data[].data`);
* `auth_status`: 401 or 403 for a bad token (undocumented);
* `string_numbers`: numbers rendered as JSON strings, as the spot endpoints do;
* `row_cap`: the server's own row cap (undocumented; it may be below the client's `limit`). An
  answer is silently cut to its first `row_cap` rows in time order (MXQL: to the smaller of `limit`
  and `row_cap`; sm_stat and APM series: `timeData` rows and points), still HTTP 200, as WhaTap cuts
  at 100,000 rows; `cut_answers` counts them;
* `apm_merge_above_ms`: APM series over a window longer than this come back merged to one point an
  hour (`interval: 3600`), as a series API may answer long ranges (undocumented); None: never.
Over-limit ranges get a clear HTTP 400 (WhaTap's own answer is undocumented). Faults can be queued:
429, 500, a slow response, the HTTP 200 `[{"error": ...}]` body a bad MXQL query really returns, or
HTTP 200 bodies carrying `message` / `msg` instead of data, for the next requests or only for those
to one endpoint (a failure in the middle of a fetch).
Data is deterministic: a function of project, agent, metric and time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
RESOLUTION_MS = {"m5": 300_000, "s5": 5_000, "h1": 3_600_000}
APM_METRICS = ("thread_count", "thread_daemon", "thread_peak_count", "threadpool_active", "threadpool_queue", "apdex")
MXQL_STEP_MS = 5_000
#: HTTP 200 bodies the double can be told to answer instead of data (besides 429, 500 and "slow")
FAULT_BODIES = {
    "error_body": [{"error": "injected failure"}],  # what a bad MXQL query really returns
    "message_body": {"message": "injected message: no data permission"},
    "msg_body": {"msg": "injected msg: request rejected"},
    "msg_row": [{"msg": "injected msg row"}],
}
FAULT_KINDS = {"429", "500", "slow", *FAULT_BODIES}


@dataclasses.dataclass(frozen=True)
class Agent:
    oid: int
    oname: str
    disks: tuple[str, ...] = ("/", "/data")
    nics: tuple[str, ...] = ("eth0",)


@dataclasses.dataclass(frozen=True)
class Project:
    code: int
    name: str
    product_type: str  # SMS (servers) or APM
    platform: str
    token: str
    agents: tuple[Agent, ...]


def demo_projects() -> list[Project]:
    return [
        Project(1201, "web-prod", "APM", "JAVA", "prj-token-1201-a6f3",
                (Agent(904112233, "web-01-8080"), Agent(904112234, "web-02-8080"))),
        Project(1202, "hosts-seoul", "SMS", "INFRA", "prj-token-1202-b71c",
                (Agent(-1830021144, "db-01"), Agent(1830021145, "web-01"), Agent(1830021146, "web-02"))),
        Project(1203, "hosts-frankfurt", "SMS", "INFRA", "prj-token-1203-c09d",
                (Agent(-52001, "batch-01", disks=("/",), nics=("ens5", "ens6")),)),
    ]


def value(pcode: int, oid: int, metric: str, t_ms: int) -> float:
    """Deterministic, realistic-looking series: a daily curve plus hashed noise."""
    seed = int(hashlib.sha256(f"{pcode}:{oid}:{metric}".encode()).hexdigest()[:8], 16)
    noise = (int(hashlib.sha256(f"{seed}:{t_ms // 5000}".encode()).hexdigest()[:6], 16) / 0xFFFFFF) - 0.5
    daily = 0.5 + 0.5 * math.sin((t_ms / HOUR_MS - 9) / 24 * 2 * math.pi + seed % 7)
    if metric in ("cpu", "memory_pused", "usedPercent", "ioPercent", "cpu_usr", "cpu_sys", "memory_swappused"):
        scale = {"cpu": 70, "memory_pused": 40, "usedPercent": 30, "ioPercent": 20, "cpu_usr": 50, "cpu_sys": 15,
                 "memory_swappused": 5}[metric]
        base = {"memory_pused": 45, "usedPercent": 40}.get(metric, 2)
        return round(min(100.0, max(0.0, base + scale * daily + 8 * noise)), 3)
    if metric == "apdex":
        return round(min(1.0, max(0.0, 0.97 - 0.1 * daily + 0.02 * noise)), 4)
    if metric in ("trafficIn", "trafficOut", "in", "out", "readIops", "writeIops", "tps", "tx_count"):
        return round(max(0.0, 1000 + 50_000 * daily + 5_000 * noise), 2)
    if metric == "resp_time":
        return float(round(max(1.0, 120 + 300 * daily + 40 * noise)))
    return float(round(max(0.0, 20 + 60 * daily + 10 * noise)))


class WhatapDouble:
    """The server state: projects, switches and the fault queue. `start()` serves on 127.0.0.1."""

    def __init__(self, projects: list[Project] | None = None, *, account_token: str = "acct-token-7f2e9d",
                 apm_shape: str = "objects", auth_status: int = 401, string_numbers: bool = False,
                 row_cap: int | None = None, apm_merge_above_ms: int | None = None):
        if apm_shape not in ("objects", "data"):
            raise ValueError("apm_shape is 'objects' or 'data'")
        self.projects = {p.code: p for p in (projects or demo_projects())}
        self.account_token = account_token
        self.apm_shape, self.auth_status, self.string_numbers = apm_shape, auth_status, string_numbers
        self.row_cap, self.apm_merge_above_ms = row_cap, apm_merge_above_ms
        self.cut_answers = 0  # answers cut at `row_cap`
        # (kind, seconds, path fragment the fault is for or None); kinds: FAULT_KINDS
        self.faults: deque[tuple[str, float, str | None]] = deque()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._server: ThreadingHTTPServer | None = None

    # -- control -------------------------------------------------------------------------------
    def fail_next(self, kind: str, times: int = 1, seconds: float = 0.0, path: str | None = None) -> None:
        """Answer the next `times` requests with fault `kind` (one of FAULT_KINDS); with `path`, only
        requests whose path contains it (e.g. "sm_stat"), the others being served normally meanwhile."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind is one of {sorted(FAULT_KINDS)}")
        self.faults.extend([(kind, seconds, path)] * times)

    def start(self) -> str:
        double = self

        class Handler(_Handler):
            state = double

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="whatap-double", daemon=True).start()
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- data ----------------------------------------------------------------------------------
    def num(self, v: float):
        return str(v) if self.string_numbers else v

    def cut(self, rows: list, limit: int | None = None) -> list:
        """The first rows up to the smaller of `limit` and the server's `row_cap` (rows are in time order)."""
        caps = [c for c in (limit, self.row_cap) if c is not None]
        if caps and len(rows) > min(caps):
            if self.row_cap is not None and len(rows) > self.row_cap:
                self.cut_answers += 1
            return rows[:min(caps)]
        return rows

    def project_for(self, headers) -> Project | None:
        token, pcode = headers.get("x-whatap-token"), headers.get("x-whatap-pcode")
        try:
            project = self.projects.get(int(pcode)) if pcode else None
        except ValueError:
            return None
        return project if project is not None and project.token == token else None


class _Handler(BaseHTTPRequestHandler):
    state: WhatapDouble
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body, content_type: str = "application/json") -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _fault(self, path: str) -> bool:
        for i, (kind, seconds, where) in enumerate(self.state.faults):
            if where is None or where in path:
                del self.state.faults[i]
                break
        else:
            return False
        if kind == "slow":
            time.sleep(seconds)
            return False
        if kind == "429":
            self._send(429, {"message": "Too Many Requests"})
        elif kind == "500":
            self._send(500, {"message": "Internal Server Error"})
        else:
            self._send(200, FAULT_BODIES[kind])
        return True

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlparse(self.path)
        self.state.requests.append((method, url.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self._fault(url.path):
            return
        if url.path == "/open/api/json/projects" and method == "GET":
            return self._projects()
        project = self.state.project_for(self.headers)
        if project is None:
            return self._send(self.state.auth_status, {"code": self.state.auth_status, "message": "invalid token or pcode"})
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/open/api/json/project" and method == "GET":
            return self._project(project)
        if url.path == "/open/json/sm_servers" and method == "GET":
            return self._send(200, {"pcode": project.code, "pname": project.name, "timezone": 9, "values": [
                {"oid": a.oid, "oname": a.oname, "os.name": "linux", "os.status": "ok", "isActive": True}
                for a in project.agents if project.product_type == "SMS"]})
        if url.path == "/open/json/stat/sm_stat" and method == "GET":
            return self._sm_stat(project, query)
        if url.path == "/open/api/flush/mxql/text" and method == "POST":
            return self._mxql(project, body)
        match = re.fullmatch(r"/open/api/json/([a-z_]+)/(\d+)/(\d+)", url.path)
        if match and method == "GET":
            return self._apm_series(project, match.group(1), int(match.group(2)), int(match.group(3)))
        self._send(404, {"message": f"no such endpoint {method} {url.path}"})

    def _projects(self) -> None:
        if self.headers.get("x-whatap-token") != self.state.account_token:
            return self._send(self.state.auth_status, {"code": self.state.auth_status, "message": "invalid account token"})
        data = [{"groupName": "", "projectCode": p.code, "projectName": p.name, "createTime": "2023-04-02 10:11:12.345",
                 "lastUpdatedTime": "2024-01-01 00:00:00.000", "status": "subscribe", "productType": p.product_type,
                 "platform": p.platform, "gatewayName": "SEOUL", "apiToken": p.token}
                for p in self.state.projects.values()]
        self._send(200, {"data": data, "accountEmail": "ops@example.com", "total": len(data)})

    def _project(self, project: Project) -> None:
        """The two shapes the reference gives: APM `{name, productType, ...}` (used here for every
        product but servers), server `{pname, values}` (no product type)."""
        if project.product_type != "SMS":
            return self._send(200, {"platform": project.platform, "createTime": "Tue Sep 18 10:11:12 GMT 2018",
                                    "gatewayName": "SEOUL", "projectCode": project.code, "status": "subscribe",
                                    "lastUpdatedTime": "2024-01-01 00:00:00.000", "name": project.name,
                                    "productType": project.product_type})
        self._send(200, {"pname": project.name, "timezone": 9, "regionName": "SEOUL", "values": {"servers": [
            {"oid": a.oid, "oname": a.oname} for a in project.agents]}})

    def _range(self, stime, etime, limit_ms: int) -> tuple[int, int] | None:
        try:
            s, e = int(stime), int(etime)
        except (TypeError, ValueError):
            self._send(400, {"message": "stime and etime must be epoch milliseconds"})
            return None
        if e <= s:
            self._send(400, {"message": "etime must be after stime"})
            return None
        if e - s > limit_ms:
            self._send(400, {"message": f"time range exceeds the limit of {limit_ms // 60000} minutes"})
            return None
        # Like the real service, nothing is measured after now: the in-progress hour is partial.
        return s, max(s, min(e, int(time.time() * 1000) + 1))

    def _sm_stat(self, project: Project, query: dict) -> None:
        window = self._range(query.get("stime"), query.get("etime"), HOUR_MS)
        if window is None:
            return
        step = RESOLUTION_MS.get(query.get("filter", "m5"))
        if step is None:
            return self._send(400, {"message": "filter must be m5, s5 or h1"})
        s, e = window
        fields = ("cpu", "memory_pused", "memory_swappused", "usedPercent", "ioPercent", "trafficIn", "trafficOut")
        agents = [a for a in project.agents if not query.get("oid") or str(a.oid) == query["oid"]]
        rows = self.state.cut([(a, t) for t in range((s + step - 1) // step * step, e, step) for a in agents])
        self._send(200, {"servers": [{"oid": agent.oid, "timeData": [
            {"time": t, **{f: self.state.num(value(project.code, agent.oid, f, t)) for f in fields}}
            for a, t in rows if a is agent]} for agent in agents]})

    def _mxql(self, project: Project, body: bytes) -> None:
        try:
            request = json.loads(body)
            mql = request["mql"]
        except (ValueError, KeyError, TypeError):
            return self._send(400, {"message": "body must be JSON with stime, etime, mql, limit, pageKey"})
        window = self._range(request.get("stime"), request.get("etime"), 31 * DAY_MS)
        if window is None:
            return
        category = re.search(r"CATEGORY\s+(\w+)", mql)
        if not category or category.group(1) not in ("server_base", "server_disk", "server_network", "app_counter"):
            return self._send(200, [{"error": f"unknown category in MXQL: {mql[:60]!r}"}])
        select = re.search(r"SELECT\s*\[([^\]]*)\]", mql)
        wanted = [f.strip() for f in select.group(1).split(",")] if select else None
        limit = int(request.get("limit") or 100)
        rows = self._category_rows(project, category.group(1), *window)
        if wanted:
            rows = [{k: v for k, v in row.items() if k in wanted} for row in rows]
        self._send(200, self.state.cut(rows, limit))

    def _category_rows(self, project: Project, category: str, s: int, e: int) -> list[dict]:
        num = self.state.num
        rows = []
        for t in range((s + MXQL_STEP_MS - 1) // MXQL_STEP_MS * MXQL_STEP_MS, e, MXQL_STEP_MS):
            for a in project.agents:
                base = {"time": t, "oid": a.oid, "oname": a.oname}
                v = lambda m: num(value(project.code, a.oid, m, t))  # noqa: E731
                if category == "server_base" and project.product_type == "SMS":
                    rows.append({**base, "cpu": v("cpu"), "cpu_usr": v("cpu_usr"), "cpu_sys": v("cpu_sys"),
                                 "memory_pused": v("memory_pused")})
                elif category == "server_disk" and project.product_type == "SMS":
                    rows += [{**base, "mountPoint": d, "usedPercent": num(value(project.code, a.oid, f"usedPercent{d}", t)),
                              "readIops": v("readIops"), "writeIops": v("writeIops")} for d in a.disks]
                elif category == "server_network" and project.product_type == "SMS":
                    rows += [{**base, "desc": n, "in": num(value(project.code, a.oid, f"in{n}", t)),
                              "out": num(value(project.code, a.oid, f"out{n}", t))} for n in a.nics]
                elif category == "app_counter" and project.product_type == "APM":
                    rows.append({**base, "pcode": project.code, "tps": v("tps"), "resp_time": v("resp_time"),
                                 "tx_count": v("tx_count")})
        return rows

    def _apm_series(self, project: Project, metric: str, s: int, e: int) -> None:
        if metric not in APM_METRICS:
            return self._send(404, {"message": f"unknown APM metric {metric}"})
        if e <= s or e - s > DAY_MS:
            return self._send(400, {"message": "time range must be positive and at most 1 day"})
        merged = self.state.apm_merge_above_ms is not None and e - s > self.state.apm_merge_above_ms
        step = HOUR_MS if merged else 300_000
        agents = project.agents if project.product_type == "APM" else ()
        kept = self.state.cut([(a, t) for t in range((s + step - 1) // step * step, e, step) for a in agents])
        per_agent = [(a, [[t, self.state.num(value(project.code, a.oid, metric, t))] for b, t in kept if b is a])
                     for a in agents]
        head = {"pcode": project.code, "type": metric, "stime": s, "etime": e, "interval": step // 1000}
        if self.state.apm_shape == "objects":
            body = {**head, "timeMerge": "sum", "objects": [{"oid": a.oid, "oname": a.oname, "series": pts} for a, pts in per_agent]}
        else:
            body = {**head, "data": [{"oid": a.oid, "oname": a.oname, "data": pts} for a, pts in per_agent]}
        self._send(200, body)
