"""Split WhaTap requests so that no answer is silently cut (SPEC §2.2, §12 "Upstream limits").

WhaTap has no paging. A request that asks for too much still gets HTTP 200, but the answer is
incomplete: MXQL stops at a row cap (the `limit` we send, or the server's own cap, which is not
documented and may be lower), and an APM series can come back merged to a coarser interval. The
only safe answer is to ask for less. Every windowed request therefore goes through
`Splitter.collect`:

1. Plan: the window is cut into pieces of at most `span` (one hour: `sm_stat`'s limit, and what an
   hourly run asks for anyway), or the smaller span that last fitted for the same request, so a
   24-hour backfill does not rediscover the cap every hour.
2. An answer is *possibly cut* when its row count reaches the smallest cap seen for the endpoint
   (ours or one the server revealed), never `len == limit` alone, or when the server says it merged
   points. Such a piece is halved (on a step boundary) and both halves fetched, recursively.
3. A cap the server keeps to itself cuts the last rows in time order, so some series of the answer
   stops more than 1.5 steps before the piece ends. Such a piece is checked by fetching its halves
   (an agent that went offline looks the same and usually costs just those two requests): if they
   hold more rows than the piece, the server cut the piece at its row count, which becomes a cap
   seen (every later answer that large is split at once) and the halves are used; if both halves
   answered and hold no more, the piece was whole; if one half is empty, the other is checked. Pieces ending in the last
   `settle_ms` are not checked (their data may still be arriving). What this cannot see: rows cut
   from a series whose first row in the piece is in its very last step.
4. A possibly cut piece one step long cannot be halved: the run fails, naming the request, the
   window, the rows received and the cap, because loading it would hide the rows that were cut.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from metrics_pipeline.lib.whatap.errors import WhatapRowsCut

HOUR_MS = 3_600_000
SETTLE_MS = 120_000  # pieces ending less than this long ago may still be filling up


@dataclasses.dataclass
class Page:
    """One answer, parsed: what the endpoint yields for the piece, and what the split needs."""

    items: list  # the answer's items inside the piece
    rows: int  # rows the server sent: what a server-side cap counts
    last_seen: int | None  # the earliest of the series' latest timestamps (ms); None without items
    merged: str | None = None  # the server says it merged points (how), so the piece must be split


def halves(start_ms: int, end_ms: int, step: int) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """The two halves of a piece, cut on a multiple of `step` from its start; None when the piece
    is a single step (or less) and cannot be split."""
    mid = start_ms + (end_ms - start_ms) // 2 // step * step
    if mid <= start_ms or mid >= end_ms:
        return None
    return (start_ms, mid), (mid, end_ms)


def see_cap(caps: dict[str, int], endpoint: str, rows: int) -> None:
    """Record a row cap for `endpoint`: ours, or one the server revealed; the smallest one stands."""
    if rows > 0:
        caps[endpoint] = min(rows, caps.get(endpoint, rows))


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Splitter:
    """Fetches windows piece by piece, splitting around caps. One per client (one per run).

    Args:
        caps: endpoint -> smallest row cap seen (shared with the client's stats).
        splits: endpoint -> pieces that were split (shared with the client's stats).
        settle_ms: pieces ending less than this long before now are not checked for a silent cap.
        clock: seconds since the epoch (tests may pin it).
    """

    def __init__(self, caps: dict[str, int], splits: Counter, *, settle_ms: int = SETTLE_MS,
                 clock: Callable[[], float] = time.time):
        self.caps, self.splits, self.settle_ms, self.clock = caps, splits, settle_ms, clock
        self._span: dict[str, int] = {}  # request -> the span that last fitted

    def collect(self, endpoint: str, what: str, start_ms: int, end_ms: int, *, span: int, step: int,
                fetch: Callable[[int, int], Page]) -> list:
        """Every item of [start, end) for one request, fetched in as many pieces as it takes.

        Args:
            endpoint: the endpoint whose caps apply ("mxql", "sm_stat", "apm_series").
            what: the request, as errors name it ("mxql server_disk for project 1202").
            span: the longest piece to ask for (the endpoint's range limit).
            step: the data's resolution in ms; pieces are split on its multiples.
            fetch: (piece start, piece end) -> Page.

        Raises:
            WhatapRowsCut: an answer was cut and its piece is a single step.
        """
        items: list = []
        s = start_ms
        while s < end_ms:  # planned piece by piece: a span learned on one piece serves the next
            e = min(end_ms, s + min(span, self._span.get(what, span)))
            items += self._piece(endpoint, what, s, e, step, fetch, fetch(s, e))
            s = e
        return items

    def _piece(self, endpoint, what, s, e, step, fetch, page: Page) -> list:
        cap = self.caps.get(endpoint)
        cut = page.merged or (f"{page.rows} rows, the smallest row cap seen ({cap}), so rows past it were cut"
                              if cap is not None and page.rows >= cap else None)
        if cut is None:
            if not self._ends_early(page, e, step) or (parts := halves(s, e, step)) is None:
                return page.items
            pages = [fetch(*part) for part in parts]
            if sum(len(p.items) for p in pages) <= len(page.items):
                # Nothing more in the halves. A cut keeps the first rows in time order, so if it was
                # cut, the half holding the cut repeats it and the other half would hold the rest:
                # both halves answering proves the piece whole. One empty half proves nothing: the
                # other half is checked the same way.
                if all(p.items for p in pages):
                    return page.items
                return [item for part, sub in zip(parts, pages) if sub.items
                        for item in self._piece(endpoint, what, *part, step, fetch, sub)]
            see_cap(self.caps, endpoint, page.rows)  # the server cut the piece at its row count
        else:
            parts = halves(s, e, step)
            if parts is None:
                raise WhatapRowsCut(
                    f"WhaTap {what}: the answer for {_iso(s)} to {_iso(e)} came back with {cut}, and the "
                    f"window cannot be split below one {step // 1000}-second step. The run fails rather than "
                    "load an incomplete window. If the cap is `mxql_limit`, raise it (at most 100000); "
                    "otherwise one step of this project holds more than WhaTap answers at once: spread its "
                    "agents over more projects")
            pages = [fetch(*part) for part in parts]
        self.splits[endpoint] += 1
        self._span[what] = min(self._span.get(what, e - s), max(b - a for a, b in parts))
        return [item for part, sub in zip(parts, pages) for item in self._piece(endpoint, what, *part, step, fetch, sub)]

    def _ends_early(self, page: Page, end_ms: int, step: int) -> bool:
        """A series stops more than 1.5 steps before the end of a piece that is no longer filling."""
        if page.last_seen is None or end_ms > self.clock() * 1000 - self.settle_ms:
            return False
        return page.last_seen + step + step // 2 < end_ms
