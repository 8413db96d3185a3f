"""Read endpoints over every source (issue 19): series, latest, query (history), summary, alerts.

Each needs a key with the `read` scope and answers for the key's tenant only, through the BI views'
row filtering (`lib/query.py`). JSON by default, CSV with `Accept: text/csv`; times as RFC 3339 or
epoch seconds (or milliseconds); filters `source`, `metric`, `resource` (repeatable: any of them)
and `label.KEY=VALUE` (repeatable: all of them).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import orjson
import psycopg
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api.errors import Refusal
from metrics_pipeline.lib import query
from metrics_pipeline.lib.api_keys import Principal
from metrics_pipeline.lib.custom.reads import parse_time
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.retention import RetentionConfig


def _filters(request: Request) -> query.Filters:
    params = request.query_params
    return query.Filters(source=params.getlist("source"), metric=params.getlist("metric"),
                         resource=params.getlist("resource"),
                         labels={k.removeprefix("label."): v for k, v in params.items() if k.startswith("label.")})


def _time(request: Request, name: str, default: datetime) -> datetime:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return parse_time(text, name)
    except ValueError as exc:
        raise query.BadQuery(str(exc)) from None


def _int(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise query.BadQuery(f"{name}: {text[:20]!r} is not a whole number") from None


def _json_default(value):
    if isinstance(value, query.Points):  # the server's JSON text, spliced in as it is
        return orjson.Fragment(value.text)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _json(content: dict) -> Response:
    """orjson: 5-10x faster than the standard library on point lists, and a non-finite value is null
    (valid JSON) where json.dumps writes NaN or refuses."""
    return Response(orjson.dumps(content, default=_json_default, option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


def _wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


def _csv(header: list[str], rows: list[list]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([json.dumps(v, sort_keys=True) if isinstance(v, dict) else ("" if v is None else v)
                         for v in row])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")


def _items_csv(items: list[dict], next_cursor: str | None) -> Response:
    header = list(items[0]) if items else ["series_id"]
    response = _csv(header, [[item.get(k) for k in header] for item in items])
    if next_cursor:
        response.headers["X-Next-Cursor"] = next_cursor
    return response


def register(app: FastAPI, *, authenticate: Callable[[Request, str], Principal], reader: Warehouse | None,
             clock: Callable[[], datetime], retention: Callable[[], RetentionConfig]) -> None:
    """Add the read endpoints to `app`, authenticating with the app's own `authenticate`."""

    async def answer(request: Request, work: Callable[[str], dict | query.Page], to_csv: Callable) -> Response:
        principal = authenticate(request, "read")
        if reader is None:
            raise Refusal(503, "reads are not configured on this server")
        try:
            result = await run_in_threadpool(work, principal.tenant)
        except query.BadQuery as exc:
            raise Refusal(400, str(exc)) from None
        except psycopg.OperationalError:
            raise Refusal(503, "the warehouse does not answer; pushes are still accepted", {"Retry-After": "5"}) from None
        if _wants_csv(request):
            return to_csv(result)
        if isinstance(result, query.Page):
            return _json({"items": result.items, "next_cursor": result.next_cursor})
        return _json(result)

    def page_csv(page: query.Page) -> Response:
        return _items_csv(page.items, page.next_cursor)

    @app.get("/api/v1/series", summary="The key's tenant's series matching the filters")
    async def get_series(request: Request, limit: int = query.DEFAULT_LIMIT, cursor: str | None = None) -> Response:
        """Filters: `source`, `metric`, `resource` (repeat one for any of several values), `label.KEY=VALUE`
        (repeatable, all must match). Paged by series_id: `limit` (1-10,000), `cursor` (a page's `next_cursor`)."""
        return await answer(request, lambda tenant: query.series(
            reader, tenant, _filters(request), limit=limit, cursor=cursor), page_csv)

    @app.get("/api/v1/latest", summary="The latest value of each matching series and its age")
    async def get_latest(request: Request, limit: int = query.DEFAULT_LIMIT, cursor: str | None = None) -> Response:
        """The newest raw sample of each matching series (kept 7 days), `age_s` its age in seconds.
        Same filters and paging as /api/v1/series."""
        return await answer(request, lambda tenant: query.latest(
            reader, tenant, _filters(request), limit=limit, cursor=cursor), page_csv)

    def history_csv(result: dict) -> Response:
        return _csv(["series_id", "source", "metric", "resource", "unit", "labels", "ts", "time", result["statistic"]],
                    [[s["series_id"], s["source"], s["metric"], s["resource"], s["unit"], s["labels"], ts,
                      datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z"), value]
                     for s in result["series"] for ts, value in s["points"]])

    @app.get("/api/v1/query", summary="History: the matching series' values per step between from and to")
    async def get_query(request: Request, step: str | None = None, stat: str = "avg") -> Response:
        """`from`, `to` (default: the last hour), `step` (60, 5m, 1h, 1d; default: about 300 points),
        `stat`: avg, min, max, sum, count, last, p50, p95 or p99 of the samples in each step.
        Steps start at floor(t / step) * step in UTC; `points` are [epoch seconds, value], null for
        a step without samples. The answer's `tier` says which data served it (raw, 5m, 1h, 1d: the
        coarsest whose buckets make up whole steps and that retention still holds), `from`/`to`
        (epoch seconds) the span widened to whole steps. At most 11,000 steps a series and 110,000
        points in all: a 400 says which step would fit."""
        def work(tenant: str) -> dict:
            now = clock()
            end = _time(request, "to", now)
            start = _time(request, "from", end - timedelta(hours=1))
            width = query.parse_step(step) if step is not None else query.default_step(start, end, now, retention())
            return query.history(reader, tenant, _filters(request), start=start, end=end, step=width, statistic=stat,
                                 now=now, retention=retention())

        return await answer(request, work, history_csv)

    def summary_csv(result: dict) -> Response:
        header = [k for k in (result["series"][0] if result["series"] else {"series_id": 0})]
        return _csv(header, [[s.get(k) for k in header] for s in result["series"]])

    @app.get("/api/v1/summary", summary="Per matching series over a range: min, avg, max, p95, count, completeness")
    async def get_summary(request: Request) -> Response:
        """`from`, `to` (default: the last 24 hours). Per series: count, min, avg, max, p95, last of the
        samples in the span; `completeness` (received / expected samples) and seconds above the
        warning and critical thresholds from the hourly series health of the hours overlapping it.
        Bounds on whole hours or days read the rollups and are fastest; other bounds within the raw
        retention are exact on raw points."""
        def work(tenant: str) -> dict:
            now = clock()
            end = _time(request, "to", now)
            start = _time(request, "from", end - timedelta(days=1))
            return query.summary(reader, tenant, _filters(request), start=start, end=end, now=now,
                                 retention=retention())

        return await answer(request, work, summary_csv)

    @app.get("/api/v1/alerts", summary="Firing (or recent) alerts of the key's tenant, newest first")
    async def get_alerts(request: Request, state: str = "firing", limit: int = query.DEFAULT_LIMIT,
                         cursor: str | None = None) -> Response:
        """`state`: firing (default), resolved or any; `severity`, `source`, `resource` (repeatable);
        `since`: only episodes still firing or ended since then. Paged by alert_id, newest first."""
        params = request.query_params

        def work(tenant: str) -> query.Page:
            since = _time(request, "since", None) if "since" in params else None
            return query.alerts(reader, tenant, state=state, severity=params.getlist("severity"),
                                source=params.getlist("source"), resource=params.getlist("resource"), since=since,
                                limit=limit, cursor=cursor)

        return await answer(request, work, page_csv)
