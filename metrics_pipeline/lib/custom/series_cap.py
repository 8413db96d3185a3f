"""The cap on a tenant's distinct series (SPEC §12: default 50,000): metadata with request ids or
timestamps in it is how a metrics store is usually broken, one new series per item.

A series of a pushed measure is its name and metadata (the tenant is the key's; the resource is
derived from the metadata). Each worker keeps, per tenant, the set of series it knows: those in the
warehouse (read once per tenant, again every `refresh_s`) plus those it accepted since. A batch
whose new series would take the tenant past the cap is refused whole (422), naming the limit; a
batch of known series always passes. With the warehouse down the set starts from what this worker
accepted, and is completed once the warehouse answers. Several workers may each admit a few series
past the cap between refreshes: the cap bounds growth, it is not a quota to the series.

The push API refuses such a batch (422); the loaders apply the same cap to measures that came
through a Kafka topic, item by item, where nobody waits for an answer: the item is quarantined with
the same reason (`kafka_series_cap`, used by `load.py`). Those items carry their series key, computed
once per distinct series of a file (`kafka_items.py`): a load asks about every item, and a series it
knows already costs a set lookup.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import psycopg

from metrics_pipeline.lib.custom.validate import Measure, SeriesKey, series_key
from metrics_pipeline.lib.warehouse.db import Warehouse

log = logging.getLogger(__name__)

__all__ = ["SeriesCap", "SeriesKey", "kafka_series_cap", "series_key"]


class SeriesCap:
    def __init__(self, warehouse: Warehouse | None, limit: int, refresh_s: float = 300.0, clock=time.monotonic):
        self.warehouse, self.limit, self.refresh_s = warehouse, limit, refresh_s
        self._clock = clock
        self._known: dict[str, set[SeriesKey]] = {}
        self._loaded_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def _stored(self, tenant: str) -> set[SeriesKey] | None:
        """The tenant's pushed series in the warehouse, or None when it does not answer."""
        if self.warehouse is None:
            return set()
        try:
            with self.warehouse.connect(connect_timeout=2) as conn:
                rows = conn.execute(
                    f"SELECT metric, labels FROM {self.warehouse.schema}.series WHERE source = 'custom' AND tenant = %s",
                    (tenant,)).fetchall()
        except psycopg.Error as exc:
            log.warning("series of tenant %r not read (%s): the series cap counts what this worker accepted",
                        tenant, type(exc).__name__)
            return None
        return {series_key(metric, {k: v for k, v in labels.items() if k != "tenant"}) for metric, labels in rows}

    def admit(self, tenant: str, items: Iterable[Measure]) -> str | None:
        """None when the batch may be stored (its series are then counted), else why not."""
        return self._admit(tenant, {series_key(item.name, item.metadata) for item in items})

    def admit_series(self, tenant: str, key: SeriesKey) -> str | None:
        """`admit` for one measure given by its series key (`series_key`: the Kafka loaders' items)."""
        known = self._known.get(tenant)
        if known is not None and key in known and self._clock() - self._loaded_at.get(tenant, -1e18) <= self.refresh_s:
            return None  # the common case: a series seen already, no lock
        return self._admit(tenant, {key})

    def _admit(self, tenant: str, batch: set[SeriesKey]) -> str | None:
        now = self._clock()
        if now - self._loaded_at.get(tenant, -1e18) > self.refresh_s:
            stored = self._stored(tenant)  # outside the lock: a slow warehouse must not stall other tenants
            with self._lock:
                known = self._known.setdefault(tenant, set())
                if stored is not None:
                    known |= stored
                    self._loaded_at[tenant] = now
        with self._lock:
            known = self._known.setdefault(tenant, set())
            new = batch - known
            if new and len(known) + len(new) > self.limit:
                return (f"tenant {tenant!r} has {len(known):,} series; this batch would add {len(new):,} more, past "
                        f"the limit of {self.limit:,} (max_series_per_tenant): metadata values that change with every "
                        "item (request ids, timestamps) make a new series each time")
            known |= new
        return None


def kafka_series_cap(warehouse: Warehouse | None):
    """The cap the loaders apply to measures from Kafka topics, as a `(tenant, series key) -> reason`
    callable: `config/api.yaml`'s `max_series_per_tenant`, the tenant's series read from `warehouse`
    once per load (a fresh cap per load: what an earlier load admitted is in the warehouse by then)."""
    from metrics_pipeline.lib.custom.kafka_items import limits

    return SeriesCap(warehouse, limits().max_series_per_tenant, refresh_s=float("inf")).admit_series
