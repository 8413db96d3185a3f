"""The FastAPI application: push endpoints, health and readiness (SPEC §10, §12).

Order of refusal (SPEC §12), cheapest first and before the body is read where possible:
1. authentication: `X-PMETRICS-API-KEY: <key>` or `Authorization: Bearer <key>`; missing, unknown or
   revoked key 401, a key without the scope 403; keys not loaded yet 503;
2. the key's request rate: 429 with `Retry-After`;
3. the body's size: 413 from `Content-Length`, or while it streams in, never buffered whole;
4. JSON and validation: 422 listing every invalid item (index, field, reason); a batch over the
   item limit 413; a batch that would take the tenant past its series cap 422; the key's item rate 429;
5. the landing zone: 202 once the batch is durable there; a failing zone 503 with `Retry-After`,
   and nothing of the batch acknowledged.
An `Idempotency-Key` seen in the last 24 h for the tenant is answered as the first time (202,
`Idempotent-Replayed: true`) without storing anything (`api/idempotency.py`).

Keys never reach a log line, a response or an exception message: the access log holds the method,
path and status only, and a refused key is answered without repeating it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from metrics_pipeline.api import idempotency
from metrics_pipeline.api import metrics as prometheus_metrics
from metrics_pipeline.api import query as query_routes
from metrics_pipeline.api.errors import Refusal
from metrics_pipeline.api.ratelimit import TokenBuckets, retry_after
from metrics_pipeline.lib import query
from metrics_pipeline.lib.api_keys import KeyRing, Principal
from metrics_pipeline.lib.custom import reads
from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import LandingUnavailable, PushWriter
from metrics_pipeline.lib.custom.series_cap import SeriesCap
from metrics_pipeline.lib.custom.validate import BatchTooLarge, InvalidBatch, validate_events, validate_measures
from metrics_pipeline.lib.warehouse.db import Warehouse
from metrics_pipeline.lib.warehouse.retention import RetentionConfig
from metrics_pipeline.lib.warehouse.retention import load_config as load_retention

log = logging.getLogger(__name__)

KEY_HEADER = "x-pmetrics-api-key"
IDEMPOTENCY_HEADER = "idempotency-key"
KINDS = {"measure": ("measures", validate_measures), "event": ("events", validate_events)}


def _token(request: Request) -> str | None:
    token = request.headers.get(KEY_HEADER)
    if token:
        return token.strip()
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refusal(413, f"the body is {int(declared):,} bytes; at most {limit:,} are accepted")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refusal(413, f"the body exceeds {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(*, config: ApiConfig, keys: KeyRing, writer: PushWriter, reader: Warehouse | None = None,
               remembered: idempotency.IdempotencyStore | None = None,
               warehouse_check: Callable[[], str | None] | None = None,
               clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
               retention: RetentionConfig | None = None) -> FastAPI:
    """The application.

    Args:
        config: limits and rates (`config/api.yaml`).
        keys: the key ring (started by the caller), which authenticates without a database round trip.
        writer: the durable landing writer the accepted batches go to.
        reader: the warehouse the GET endpoints read, as the key's tenant (None: reads answer 503).
        remembered: where Idempotency-Keys are kept (default: `config.idempotency_dir`).
        warehouse_check: returns None when the warehouse answers, else what is wrong (for /healthz).
        clock: the time of receipt, stamped on items sent without `ts`.
        retention: what each tier keeps, for the query endpoints' choice of tier (default: `config/retention.yaml`).
    """
    app = FastAPI(title="metrics_pipeline API", version="1",
                  description="Push measures and events per tenant (SPEC §10). Keys: `metrics-pipeline keys create`.")
    remembered = remembered or idempotency.IdempotencyStore(config.idempotency_dir, config.idempotency_ttl)
    series = SeriesCap(reader, config.max_series_per_tenant)
    requests_per_key = TokenBuckets(config.rate_limit.requests_per_second, config.rate_limit.burst_seconds)
    items_per_key = TokenBuckets(config.rate_limit.items_per_second, config.rate_limit.burst_seconds)

    @app.exception_handler(Refusal)
    async def _refused(request: Request, exc: Refusal) -> JSONResponse:
        body: dict[str, Any] = {"detail": exc.detail}
        if exc.errors is not None:
            body["errors"] = exc.errors
        return JSONResponse(body, status_code=exc.status, headers=exc.headers)

    def authenticate(request: Request, scope: str) -> Principal:
        if not keys.ready:
            raise Refusal(503, "API keys are not loaded yet: the warehouse has not answered since start-up",
                          {"Retry-After": "5"})
        principal = keys.verify(_token(request))
        if principal is None:
            raise Refusal(401, f"a valid API key is required ({KEY_HEADER} header or Authorization: Bearer)",
                          {"WWW-Authenticate": "Bearer"})
        if scope not in principal.scopes:
            raise Refusal(403, f"this key lacks the {scope!r} scope")
        wait = requests_per_key.take(principal.key_id)
        if wait is not None:
            raise Refusal(429, f"more than {config.rate_limit.requests_per_second:g} requests/s for this key",
                          {"Retry-After": retry_after(wait)})
        return principal

    async def push(request: Request, kind: str) -> JSONResponse:
        principal = authenticate(request, "write")
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is not None and (problem := idempotency.key_problem(key)):
            raise Refusal(400, problem)
        raw = await _body(request, config.max_body_bytes)
        if key is None:
            return await accept(principal, kind, raw)
        digest = hashlib.sha256(f"{kind}\0".encode() + raw).hexdigest()
        seen = await run_in_threadpool(remembered.begin, principal.tenant, key, digest)
        if seen is not None:
            if not seen.same_body:
                raise Refusal(422, "this Idempotency-Key was used for another request body in the last "
                                   f"{config.idempotency_ttl.total_seconds() / 3600:g} h; use a new key for a new request")
            if seen.pending:
                raise Refusal(409, "a request with this Idempotency-Key is in progress", {"Retry-After": "1"})
            return JSONResponse(seen.body, status_code=seen.status, headers={"Idempotent-Replayed": "true"})
        try:
            response = await accept(principal, kind, raw)
        except BaseException:
            remembered.abandon(principal.tenant, key)  # refused or failed: the key stays free for a retry
            raise
        await run_in_threadpool(remembered.complete, principal.tenant, key, digest, response.status_code,
                                json.loads(response.body))
        return response

    async def accept(principal: Principal, kind: str, raw: bytes) -> JSONResponse:
        folder, validate = KINDS[kind]
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refusal(422, "the body is not JSON",
                          errors=[{"index": None, "field": "body", "reason": f"not JSON: {exc}"}]) from None
        try:
            items = validate(body, clock(), config)
        except BatchTooLarge as exc:
            raise Refusal(413, str(exc)) from None
        except InvalidBatch as exc:
            raise Refusal(422, f"{len(exc.errors)} invalid item(s); nothing was stored", errors=exc.errors) from None
        if folder == "measures" and (problem := await run_in_threadpool(series.admit, principal.tenant, items)):
            raise Refusal(422, problem, errors=[{"index": None, "field": "metadata", "reason": problem}])
        wait = items_per_key.take(principal.key_id, len(items))
        if wait is not None:
            raise Refusal(429, f"more than {config.rate_limit.items_per_second:g} items/s for this key",
                          {"Retry-After": retry_after(wait)})
        try:
            await run_in_threadpool(writer.write, principal.tenant, folder, items)
        except LandingUnavailable as exc:
            log.error("landing zone refused a batch of %d %s: %s", len(items), folder, exc)
            raise Refusal(503, "the landing zone cannot store the batch right now; nothing was stored",
                          {"Retry-After": "5"}) from None
        return JSONResponse({"accepted": len(items)}, status_code=202)

    @app.post("/api/v1/measure", status_code=202, summary="Push one measure or a batch")
    async def post_measure(request: Request) -> JSONResponse:
        """`{name, value, ts?, metadata?, unit?}` or a list of them; 202 once durable."""
        return await push(request, "measure")

    @app.post("/api/v1/event", status_code=202, summary="Push one event or a batch")
    async def post_event(request: Request) -> JSONResponse:
        """`{name, ts?, metadata?, text?}` or a list of them; 202 once durable."""
        return await push(request, "event")

    def read(request: Request, fetch, name: str | None, limit: int, cursor: str | None) -> JSONResponse:
        principal = authenticate(request, "read")
        if reader is None:
            raise Refusal(503, "reads are not configured on this server")
        if not 1 <= limit <= reads.MAX_LIMIT:
            raise Refusal(400, f"limit must be between 1 and {reads.MAX_LIMIT:,}")
        params = request.query_params
        try:
            end = reads.parse_time(params["to"], "to") if "to" in params else clock()
            start = reads.parse_time(params["from"], "from") if "from" in params else end - timedelta(hours=1)
            labels = {k.removeprefix("label."): v for k, v in params.items() if k.startswith("label.")}
            page = fetch(reader, principal.tenant, start=start, end=end, name=name, labels=labels,
                         limit=limit, cursor=cursor)
        except (ValueError, reads.BadCursor) as exc:
            raise Refusal(400, str(exc)) from None
        except psycopg.OperationalError:
            raise Refusal(503, "the warehouse does not answer; pushes are still accepted", {"Retry-After": "5"}) from None
        return JSONResponse({"items": page.items, "next_cursor": page.next_cursor})

    @app.get("/api/v1/measure", summary="The key's tenant's pushed measures, oldest first, paged")
    def get_measure(request: Request, name: str | None = None, limit: int = reads.DEFAULT_LIMIT,
                    cursor: str | None = None) -> JSONResponse:
        """Filters: `name`, `label.KEY=VALUE` (repeatable), `from`, `to` (RFC 3339, epoch s or ms;
        default the last hour); `limit` (1-10,000, default 1,000); `cursor`: a page's `next_cursor`.
        Items appear once loaded into the warehouse (within 90 s of their 202)."""
        return read(request, reads.measures, name, limit, cursor)

    @app.get("/api/v1/event", summary="The key's tenant's pushed events, oldest first, paged")
    def get_event(request: Request, name: str | None = None, limit: int = reads.DEFAULT_LIMIT,
                  cursor: str | None = None) -> JSONResponse:
        """The same filters as GET /api/v1/measure (`label.KEY=VALUE` matches the events' metadata)."""
        return read(request, reads.events, name, limit, cursor)

    retention = retention or load_retention()
    query.SKETCHES.budget_bytes = config.sketch_cache_mb << 20
    query_routes.register(app, authenticate=authenticate, reader=reader, clock=clock, retention=lambda: retention)

    health_cache: dict[str, tuple[float, str | None]] = {}

    @app.get("/healthz", summary="Alive; the warehouse's reachability as detail")
    def healthz() -> dict:
        detail = None
        if warehouse_check is not None:
            at, detail = health_cache.get("warehouse", (0.0, None))
            if time.monotonic() - at > 5:
                detail = warehouse_check()
                health_cache["warehouse"] = (time.monotonic(), detail)
        return {"status": "ok", "warehouse": "reachable" if detail is None else f"unreachable: {detail}",
                "keys_loaded": keys.ready}

    @app.get("/readyz", summary="Ready to accept: the landing zone is writable and keys are loaded")
    def readyz() -> JSONResponse:
        problem = None
        try:
            writer.probe()
        except LandingUnavailable as exc:
            problem = str(exc)
        if problem is None and not keys.ready:
            problem = "API keys are not loaded yet"
        if problem is not None:
            return JSONResponse({"status": "not ready", "detail": problem}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    prometheus_metrics.install(app, reader=reader)  # GET /metrics and the request series
    return app
