"""Per-key rate limits: token buckets for requests and for items (SPEC §12 defaults: 200 requests/s,
500,000 items/s, bursts of 2 s). A bucket refills continuously at its rate up to rate x burst."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBuckets:
    """One bucket per key; `take` answers None (allowed) or the seconds to wait before retrying."""

    def __init__(self, rate: float, burst_s: float, clock: Callable[[], float] = time.monotonic):
        self.rate = float(rate)
        self.capacity = self.rate * float(burst_s)
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, n: float = 1.0) -> float | None:
        with self._lock:
            now = self._clock()
            tokens, at = self._state.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if n <= tokens:
                self._state[key] = (tokens - n, now)
                return None
            self._state[key] = (tokens, now)
            # more than a full bucket can never pass: wait until it is full again, the caller splits
            return max((min(n, self.capacity) - tokens) / self.rate, 0.001)


def retry_after(seconds: float) -> str:
    """A `Retry-After` header value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
