"""A Python client for the push API: batches in the background, retries what is worth retrying.

    from metrics_pipeline.client import Client

    with Client("http://127.0.0.1:8000", api_key) as client:
        client.measure("orders_processed", 42, shop="eu")
        client.event("deploy", text="v1.2.3", service="orders")

Design (SPEC §10, §12, issue 18):
* `.measure()` / `.event()` validate what is cheap to know here (name type, a finite value, string
  metadata), stamp `ts` at the call when none is given and queue the item; they never do I/O. Stamps
  are strictly increasing within a client, so two calls never share an identity, and a retried batch
  carries the identities it had at its first attempt (the server replaces, never duplicates).
* One background thread sends batches in call order: a kind's batch leaves when `batch_size` of
  its items are queued or its oldest item has waited `flush_interval` seconds, or when `flush()` /
  `close()` asks. Measures go to `POST /api/v1/measure`, events to `POST /api/v1/event`.
* Retried, with exponential backoff and full jitter (`uniform(0, min(backoff_max, backoff_base *
  2**attempt))`), at most `max_retries` times: 429 and every 5xx, waiting at least their
  `Retry-After` (seconds or an HTTP date, capped at 5 minutes), and connection errors and timeouts.
  Each batch carries an `Idempotency-Key` of its own, the same on every retry, so a batch whose 202
  was lost on the way is not stored twice (409, the same batch still in progress, is retried too).
  A 413 splits the batch in two and sends each half. Other refusals (401, 403, 422, a lone item's 413,
  ...) are never retried: the batch is dropped and reported, as is a batch whose retries ran out.
* Reported means: a `DeliveryError` appended to `errors` (the last 100), passed to `on_error` when
  one is given, and logged (logger `metrics_pipeline.client`). The API key is in none of them, nor in
  `repr(client)`: it lives in the HTTP session's headers only.
* The queue is bounded (`max_queue` items not yet taken by the sender): when it is full, `.measure()`
  and `.event()` raise `QueueFull` at once rather than block the caller or grow without bound.

Only the standard library and `requests`: no Dagster, psycopg, pandas or FastAPI is imported.
"""

from __future__ import annotations

import atexit
import collections
import email.utils
import json
import logging
import math
import numbers
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import requests

__all__ = ["Client", "ClientClosed", "DeliveryError", "QueueFull"]

log = logging.getLogger(__name__)

KEY_HEADER = "X-PMETRICS-API-KEY"
PATHS = {"measure": "/api/v1/measure", "event": "/api/v1/event"}
#: the longest `Retry-After` honoured: a misconfigured server cannot park the sender for hours
MAX_RETRY_AFTER = 300.0
#: how many reported errors `Client.errors` keeps (the oldest go first)
MAX_ERRORS = 100
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class QueueFull(RuntimeError):
    """`max_queue` items are waiting already; the item was not queued."""


class ClientClosed(RuntimeError):
    """The client was closed; it takes no more items."""


class DeliveryError(Exception):
    """A batch (or part of one) that was dropped: refused for good, retries exhausted, or closed before sending.

    Attributes:
        kind: "measure" or "event".
        items: the dropped items, as they would have been sent.
        status: the HTTP status of the last answer, None when there was none (connection error, close).
        detail: the server's `detail`, or what went wrong.
        errors: the server's list of invalid items (`{"index", "field", "reason"}`) for a 422, else None.
        attempts: how many requests were made for these items.
    """

    def __init__(self, kind: str, items: list[dict], status: int | None, detail: str,
                 errors: list | None = None, attempts: int = 0):
        self.kind, self.items, self.status, self.detail = kind, items, status, detail
        self.errors, self.attempts = errors, attempts
        what = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{len(items)} {kind}(s) dropped after {attempts} attempt(s), {what}: {detail}")


class Client:
    """Pushes measures and events to the API in batches from a background thread; thread-safe.

    Args:
        url: the API's base URL, e.g. `http://127.0.0.1:8000`.
        api_key: a key with the `write` scope (`metrics-pipeline keys create`).
        batch_size: items per request (the server takes at most 10,000 by default).
        flush_interval: seconds an item may wait for its batch to fill.
        timeout: seconds for each HTTP request (connect and read).
        max_retries: retries of a batch after its first attempt before it is dropped.
        max_queue: items that may wait; beyond, `.measure()` / `.event()` raise `QueueFull`.
        backoff_base, backoff_max: the exponential backoff's first step and its cap, in seconds.
        on_error: called with each `DeliveryError`, from the sender thread (keep it short).
    """

    def __init__(self, url: str, api_key: str, *, batch_size: int = 1000, flush_interval: float = 1.0,
                 timeout: float = 10.0, max_retries: int = 8, max_queue: int = 100_000,
                 backoff_base: float = 0.2, backoff_max: float = 30.0,
                 on_error: Callable[[DeliveryError], Any] | None = None):
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("api_key must be a non-empty string")
        if batch_size < 1 or max_queue < 1 or max_retries < 0:
            raise ValueError("batch_size and max_queue must be >= 1, max_retries >= 0")
        if flush_interval < 0 or timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ValueError("flush_interval, backoff_base and backoff_max must be >= 0, timeout > 0")
        self.url = url.rstrip("/")
        self.batch_size, self.flush_interval, self.timeout = batch_size, flush_interval, timeout
        self.max_retries, self.max_queue = max_retries, max_queue
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.on_error = on_error
        #: the most recent DeliveryErrors (at most MAX_ERRORS)
        self.errors: list[DeliveryError] = []
        self._secret = api_key.strip()  # for scrubbing only; sent from the session's headers
        self._session = requests.Session()
        self._session.headers.update({KEY_HEADER: self._secret, "Content-Type": "application/json"})
        self._cond = threading.Condition()
        self._queues: dict[str, collections.deque] = {k: collections.deque() for k in PATHS}
        self._queued = 0
        self._enqueued = dict.fromkeys(PATHS, 0)  # items ever queued, per kind
        self._settled = dict.fromkeys(PATHS, 0)  # items acknowledged or dropped, per kind (in order)
        self._flushing = 0  # callers waiting in flush(): send everything now
        self._last_stamp_us = 0
        self._closing = self._stopping = False
        self._abort = threading.Event()
        self._stats = collections.Counter()
        self._thread = threading.Thread(target=self._run, name="metrics-pipeline-client", daemon=True)
        self._thread.start()
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Client url={self.url!r} queued={self._queued} closed={self._closing}>"

    # -- recording

    def measure(self, name: str, value: float, *, ts: Any = None, unit: str | None = None, **metadata: str) -> Any:
        """Queue a measure; return the `ts` it is sent with (the call's time, RFC 3339, when none is given).

        Args:
            name: the metric, e.g. "orders_processed".
            value: a finite number.
            ts: an aware datetime, an RFC 3339 string, or epoch seconds / milliseconds; default: now.
            unit: optional, e.g. "ms".
            **metadata: labels, string values (`**{"k8s.pod": "x"}` for keys that are not identifiers).

        Raises:
            TypeError, ValueError: an item the server would refuse for sure. QueueFull, ClientClosed.
        """
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"value must be a number, not {type(value).__name__}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"value must be finite, not {value}")
        item: dict[str, Any] = {"name": _name(name), "value": value, "metadata": _metadata(metadata)}
        if unit is not None:
            item["unit"] = _string("unit", unit)
        return self._enqueue("measure", item, ts)

    def event(self, name: str, *, text: str | None = None, ts: Any = None, **metadata: str) -> Any:
        """Queue an event (a deploy, a config change, a note); return its `ts` (see `measure`)."""
        item: dict[str, Any] = {"name": _name(name), "metadata": _metadata(metadata)}
        if text is not None:
            item["text"] = _string("text", text)
        return self._enqueue("event", item, ts)

    def _enqueue(self, kind: str, item: dict, ts: Any) -> Any:
        given = _ts(ts)
        with self._cond:
            if self._closing:
                raise ClientClosed("this client is closed")
            if self._queued >= self.max_queue:
                raise QueueFull(f"{self._queued:,} items are waiting to be sent (max_queue); this one was not queued")
            if given is None:  # strictly increasing: two calls never share an identity
                self._last_stamp_us = max(time.time_ns() // 1000, self._last_stamp_us + 1)
                given = _rfc3339(_EPOCH + timedelta(microseconds=self._last_stamp_us))
            item["ts"] = given
            queue = self._queues[kind]
            queue.append((time.monotonic(), item))
            self._queued += 1
            self._enqueued[kind] += 1
            if len(queue) == 1 or len(queue) >= self.batch_size:
                self._cond.notify_all()
        return given

    # -- flushing and closing

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything queued so far now; block until it is acknowledged or dropped (reported).

        Returns:
            True when everything queued before the call is settled, False when `timeout` ran out first.
        """
        if threading.current_thread() is self._thread:
            raise RuntimeError("flush() cannot be called from the sender thread (on_error)")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = dict(self._enqueued)
            self._flushing += 1
            self._cond.notify_all()
            try:
                while any(self._settled[k] < target[k] for k in target):
                    left = None if deadline is None else deadline - time.monotonic()
                    if (left is not None and left <= 0) or not self._thread.is_alive():
                        return False
                    self._cond.wait(left)
                return True
            finally:
                self._flushing -= 1

    def close(self, timeout: float | None = None) -> bool:
        """Flush (for at most `timeout` seconds), then stop the sender; items still unsent are dropped
        and reported. Takes no items afterwards. Returns whether everything was settled by the flush."""
        with self._cond:
            if self._closing:
                return not any(self._queues.values())
            self._closing = True
        done = self.flush(timeout) if self._thread is not threading.current_thread() else False
        with self._cond:
            self._stopping = True
            if not done:
                self._abort.set()  # the sender stops retrying and drops what is left, reporting it
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(self.timeout + 5)
            self._session.close()
        _live.discard(self)
        return done

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def stats(self) -> dict[str, int]:
        """Counters: `queued` now, `requests` made, `retries`, items `acknowledged` and `dropped`."""
        with self._cond:
            return {"queued": self._queued, **{k: self._stats[k] for k in ("requests", "retries", "acknowledged", "dropped")}}

    # -- the sender thread

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    kind, batch, wait = self._take()
                    if batch or (wait is None and self._stopping):
                        break
                    self._cond.wait(wait)
            if not batch:
                return
            try:
                self._deliver(kind, batch, 0)
            except Exception as exc:  # noqa: BLE001 - the sender must outlive any surprise
                self._report(DeliveryError(kind, batch, None, f"unexpected {type(exc).__name__} in the client"))
            with self._cond:
                self._settled[kind] += len(batch)
                self._cond.notify_all()

    def _take(self) -> tuple[str, list[dict], float | None]:
        """The next batch due (the kind whose oldest item waited longest first), or how long to wait."""
        now, wait = time.monotonic(), None
        urgent = self._flushing > 0 or self._stopping
        for kind in sorted((k for k in PATHS if self._queues[k]), key=lambda k: self._queues[k][0][0]):
            queue = self._queues[kind]
            due = queue[0][0] + self.flush_interval - now
            if urgent or len(queue) >= self.batch_size or due <= 0:
                batch = [queue.popleft()[1] for _ in range(min(self.batch_size, len(queue)))]
                self._queued -= len(batch)
                return kind, batch, None
            wait = due if wait is None else min(wait, due)
        return "", [], wait

    def _deliver(self, kind: str, items: list[dict], attempts: int) -> None:
        """Send `items` until acknowledged, split on 413, or dropped and reported."""
        body = json.dumps(items, separators=(",", ":"), ensure_ascii=False).encode()
        # One key per body, the same on every retry: a batch whose 202 was lost is not stored twice.
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        retries = 0
        while True:
            if self._abort.is_set():
                self._report(DeliveryError(kind, items, None, "the client was closed before the batch was sent",
                                           attempts=attempts))
                return
            status, detail, errors, retry_after = None, "", None, None
            attempts += 1
            with self._cond:
                self._stats["requests"] += 1
            try:
                response = self._session.post(self.url + PATHS[kind], data=body, headers=headers, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                detail, retryable = f"{type(exc).__name__}: {exc}", True
            except requests.RequestException as exc:
                detail, retryable = f"{type(exc).__name__}: {exc}", False
            else:
                status = response.status_code
                if 200 <= status < 300:
                    with self._cond:
                        self._stats["acknowledged"] += len(items)
                    return
                if status == 413 and len(items) > 1:
                    half = len(items) // 2
                    log.info("%d %ss were too large for one request (413): sending them in two halves", len(items), kind)
                    self._deliver(kind, items[:half], attempts)
                    self._deliver(kind, items[half:], attempts)
                    return
                detail, errors = _detail(response)
                retryable = status in (409, 429) or status >= 500  # 409: our own earlier attempt still in progress
                retry_after = _retry_after(response.headers.get("Retry-After")) if retryable else None
            detail = self._scrub(detail)
            if not retryable or retries >= self.max_retries:
                if retryable:
                    detail = f"gave up after {retries} retries: {detail}"
                self._report(DeliveryError(kind, items, status, detail, errors, attempts))
                return
            delay = random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** retries))
            if retry_after is not None:
                delay = max(delay, retry_after)
            retries += 1
            with self._cond:
                self._stats["retries"] += 1
            log.warning("POST %s: %s; retry %d/%d of %d %s(s) in %.2f s", PATHS[kind],
                        f"HTTP {status} {detail}" if status else detail, retries, self.max_retries,
                        len(items), kind, delay)
            self._abort.wait(delay)

    def _report(self, error: DeliveryError) -> None:
        with self._cond:
            self._stats["dropped"] += len(error.items)
            self.errors.append(error)
            del self.errors[:-MAX_ERRORS]
        log.error("POST %s: %s", PATHS[error.kind], error)
        if self.on_error is not None:
            try:
                self.on_error(error)
            except Exception:  # a failing callback must not stop the sender
                log.exception("on_error raised")

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret in text else text


# -- helpers -----------------------------------------------------------------------------------

def _name(name: Any) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, not {type(name).__name__}")
    if not name:
        raise ValueError("name must not be empty")
    return name


def _string(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a string, not {type(value).__name__}")
    return value


def _metadata(metadata: dict[str, Any]) -> dict[str, str]:
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"metadata {key!r} must be a string, not {type(value).__name__}")
    return metadata


def _ts(ts: Any) -> Any:
    """None (stamp at enqueue), or `ts` as sent: datetimes in RFC 3339 UTC, strings and epochs as given."""
    if ts is None or isinstance(ts, str):
        return ts
    if isinstance(ts, datetime):
        if ts.tzinfo is None or ts.utcoffset() is None:
            raise ValueError("ts must be timezone-aware (a naive datetime's zone is unknown)")
        return _rfc3339(ts)
    if isinstance(ts, (int, float)) and not isinstance(ts, bool) and math.isfinite(ts):
        return ts
    raise TypeError(f"ts must be an aware datetime, an RFC 3339 string or epoch seconds, not {type(ts).__name__}")


def _rfc3339(ts: datetime) -> str:
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (email.utils.parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def _detail(response: requests.Response) -> tuple[str, list | None]:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason or "", None
    if isinstance(body, dict):
        errors = body.get("errors")
        return str(body.get("detail", ""))[:1000], errors if isinstance(errors, list) else None
    return str(body)[:300], None


# -- the atexit safety net: flush what live clients hold (a few seconds at most) -------------------

_live: weakref.WeakSet[Client] = weakref.WeakSet()


@atexit.register
def _close_live_clients() -> None:
    for client in list(_live):
        try:
            client.close(timeout=5.0)
        except Exception:  # exiting anyway
            log.debug("closing a client at exit failed", exc_info=True)
