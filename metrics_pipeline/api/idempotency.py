"""`Idempotency-Key`: a POST that repeats a key of the last 24 h is answered 202 again and stores
nothing new (SPEC §12). It matters most for items sent without `ts`: the API stamps those with the
time of receipt, so a blind retry would be new items, not the same ones again.

One file per (tenant, key) under `idempotency_dir`, shared by the worker processes of a host:
* `begin` creates it exclusively (O_EXCL) as "pending" before the batch is written, so two copies
  of a request racing each other cannot both store it: the second gets 409 and retries later;
* `complete` replaces it atomically with the answer once the batch is durable;
* `abandon` removes it when the request was refused, so a corrected request may use the key;
* a key repeated with another body is refused (422): the key names one request, not a slot.
Files older than the TTL are swept; a pending file older than a minute is a crashed request's and
is taken over. The key itself is never stored: its SHA-256 names the file. Several hosts behind a
load balancer each remember their own keys (docs/api.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from metrics_pipeline.lib.custom.files import tenant_dir
from metrics_pipeline.lib.landing import fsync_dir

MAX_KEY_CHARS = 255
STALE_PENDING_S = 60.0
SWEEP_EVERY_S = 600.0


@dataclass(frozen=True)
class Seen:
    """What a repeated key finds: a finished request's answer, or one still in progress."""

    pending: bool
    same_body: bool
    status: int = 0
    body: dict | None = None


def key_problem(key: str) -> str | None:
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
        return f"Idempotency-Key must be 1-{MAX_KEY_CHARS} printable ASCII characters"
    return None


class IdempotencyStore:
    def __init__(self, directory: str | Path, ttl: timedelta = timedelta(hours=24), clock=time.time):
        self.root = Path(directory)
        self.ttl_s = ttl.total_seconds()
        self._clock = clock
        self._last_sweep = 0.0
        self._lock = threading.Lock()

    def _path(self, tenant: str, key: str) -> Path:
        return self.root / tenant_dir(tenant) / hashlib.sha256(key.encode()).hexdigest()

    def begin(self, tenant: str, key: str, digest: str) -> Seen | None:
        """Claim `key` for a request whose body hashes to `digest`; None when claimed (go ahead),
        else what an earlier request with the key left."""
        self._maybe_sweep()
        path = self._path(tenant, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                seen = self._read(path, digest)
                if seen is not None:
                    return seen
                continue  # expired or stale: removed by _read, claim it again
            with os.fdopen(fd, "w") as handle:
                json.dump({"state": "pending", "digest": digest}, handle)
            fsync_dir(path.parent)
            return None
        return Seen(pending=True, same_body=True)

    def _read(self, path: Path, digest: str) -> Seen | None:
        try:
            age = self._clock() - path.stat().st_mtime
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            record, age = {"state": "pending"}, 0.0  # being written this instant
        pending = record.get("state") != "done"
        if age > self.ttl_s or (pending and age > STALE_PENDING_S):
            path.unlink(missing_ok=True)
            return None
        return Seen(pending=pending, same_body=record.get("digest") == digest,
                    status=int(record.get("status", 0)), body=record.get("body"))

    def complete(self, tenant: str, key: str, digest: str, status: int, body: dict) -> None:
        """Remember the answer (atomically: a reader sees the pending record or this one)."""
        path = self._path(tenant, key)
        tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}-{threading.get_ident()}")
        tmp.write_text(json.dumps({"state": "done", "digest": digest, "status": status, "body": body}))
        os.replace(tmp, path)

    def abandon(self, tenant: str, key: str) -> None:
        self._path(tenant, key).unlink(missing_ok=True)

    def _maybe_sweep(self) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last_sweep < SWEEP_EVERY_S:
                return
            self._last_sweep = now
        for path in self.root.glob("*/*"):
            try:
                if now - path.stat().st_mtime > self.ttl_s:
                    path.unlink(missing_ok=True)
            except OSError:
                continue
