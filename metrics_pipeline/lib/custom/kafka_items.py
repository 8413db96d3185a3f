"""Measures and events from Kafka landing files, as the custom loaders see items (SPEC §2.6, §12).

The consumer lands a measures or events topic's messages as they came (`lib/kafka/files.py`) in the
directory of the topic's tenant, next to the push API's files: `custom_points` / `custom_events` list
both and this module turns a Kafka file into the same `items.ParsedFile`, so identity, last write
wins, the incremental load of the hour in progress and the accounting are the push API's.

Each message is judged on its own, the same way for every copy of it (a redelivered message is
judged as the first was):
* refused whole (element -1): what `lib/kafka/messages.decode` refuses (tombstone, empty, over the
  size limit, not UTF-8, not JSON), and JSON that is neither an object nor an array;
* an object is one item (element 0); an array is a batch whose elements are judged one by one; an
  empty array is counted (`empty_batches`) and skipped;
* an item is validated by the push API's own rules (`validate.ItemJudge`, with `config/api.yaml`'s
  limits), the message's timestamp standing for the time of receipt: it stamps items sent without
  `ts` and centres the `ts` window. The tenant is the topic's (`config/kafka.yaml`); an item may name
  it (`"tenant": "<the topic's>"`), and an item naming another tenant is refused.

A refused item keeps its coordinates: its quarantine row is keyed by the message,
`kafka:<topic>/<partition>/<offset>` and the element (-1: the whole message), as for job-log topics,
so two copies of a message make one row. Loaded items are ordered for last-write-wins by the
message's timestamp, then the file, then their place in it: within a partition a later offset is a
later write. The series cap of the tenant (`max_series_per_tenant`) is the loaders' to apply: it
needs the warehouse (`series_cap.SeriesCap`); each accepted measure carries its series key for it.

Cost: a topic brings an hour's measures one small message at a time, and the loader must keep up
with the push API's files, whose items the API validated on the way in. Most elements repeat what
the file showed valid already (names, metadata maps, units) and differ in `ts` and `value` only:
`ItemJudge.quick` accepts those without the full rules (which judge anything it does not accept), a
message's time is worked out once per distinct timestamp, a series key once per distinct series.
"""

from __future__ import annotations

import functools
import json
import os
from datetime import datetime, timedelta, timezone

from metrics_pipeline.lib.custom import config as api_config
from metrics_pipeline.lib.custom.loaded import prefix_digest
from metrics_pipeline.lib.custom.validate import ItemJudge, Measure, series_key
from metrics_pipeline.lib.kafka.files import DamagedFile, read_file
from metrics_pipeline.lib.kafka.messages import WHOLE_MESSAGE, decode, excerpt

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_HOUR = timedelta(hours=1)
_RAW_CHARS = 10_000


@functools.lru_cache(maxsize=4)
def _limits(path: str, mtime: float) -> api_config.ApiConfig:
    return api_config.load_config(path)


def limits() -> api_config.ApiConfig:
    """The push API's limits (`config/api.yaml`), read again when the file changes."""
    path = api_config.default_path()
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = -1.0
    return _limits(str(path), mtime)


def _hour(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def parse_kafka_file(obj, kind: str, data: bytes, receipt: datetime, item_cls, parsed_cls,
                     config: api_config.ApiConfig | None = None):
    """The items of a Kafka landing file of `kind` (an `items.ParsedFile`; never raises on content).

    Args:
        obj: the landing object; `receipt`: its receipt hour (the hour of a message without a timestamp).
        item_cls, parsed_cls: `items.Item` and `items.ParsedFile` (passed in: `items` imports this module).
        config: the API's limits (default: `config/api.yaml`).
    """
    try:
        landed = read_file(data)
    except DamagedFile as exc:
        return parsed_cls(obj, kind, [], 0, False, f"damaged Kafka landing file: {exc}", receipt, [receipt],
                          len(data), prefix_digest(data, len(data)))
    config = config or limits()
    tenant, topic = landed.tenant, landed.topic
    judge = None
    items = []
    position = 0
    series: dict[tuple, tuple] = {}  # (name, metadata items in their order) -> series key
    stamp = hour = end = None  # the last message's timestamp; the hour [hour, end) of the last item

    def add(element: int, raw: dict | None, ts=None, problem=None, shown=None, empty=False):
        """An item of the message at hand (`address`, `coordinates`, `when`, `home` are the loop's)."""
        nonlocal position
        position += 1
        items.append(item_cls(position, raw or {}, _hour(ts) if ts is not None else home, ts, when, problem,
                              origin=(address, element), excerpt=shown, message=coordinates, empty=empty))

    for message in landed.messages:
        if message.timestamp_ms != stamp:  # a file's messages mostly share their millisecond with the one before
            stamp = message.timestamp_ms
            when = (_EPOCH + timedelta(milliseconds=stamp)) if stamp >= 0 else receipt
            home = _hour(when)
            judged_at = None
        address = landed.address(message.offset)
        coordinates = (topic, landed.partition, message.offset)
        value, _, problem = decode(message)
        if problem is None and not isinstance(value, (dict, list)):
            problem = f"wrong shape: a JSON {type(value).__name__}, not an object or an array of them"
        if problem is not None:
            add(WHOLE_MESSAGE, None, problem=problem, shown=excerpt(message))
            continue
        if judge is None:
            judge = ItemJudge(kind, when, config)
        elif judged_at is not when:
            judge.at(when)
        judged_at = when
        elements = [value] if isinstance(value, dict) else value
        if not elements:
            add(0, None, empty=True)
            continue
        for element, raw in enumerate(elements):
            quick = None
            if type(raw) is dict and raw.get("tenant", tenant) == tenant:
                quick = judge.quick(raw, "tenant")
            if quick is not None:  # the common case, inline: a well-formed measure like those before it
                name, number, ts, metadata, unit = quick
                shape = (name, tuple(metadata.items()))
                key = series.get(shape)
                if key is None:
                    key = series[shape] = series_key(name, metadata)
                if hour is None or not hour <= ts < end:
                    hour = _hour(ts)
                    end = hour + _HOUR
                position += 1
                items.append(item_cls(position, {"tenant": tenant, "name": name, "value": number, "metadata": metadata,
                                                 "unit": unit}, hour, ts, when, None, origin=(address, element),
                                      message=coordinates, series=key))
                continue
            item, problem = _judge(judge, raw, tenant, topic)
            if problem is not None:
                add(element, None, problem=problem, shown=_shown(raw))
                continue
            if isinstance(item, Measure):
                row = {"tenant": tenant, "name": item.name, "value": item.value, "metadata": item.metadata,
                       "unit": item.unit}
                add(element, row, ts=item.ts)
                items[-1].series = series_key(item.name, item.metadata)
            else:
                row = {"tenant": tenant, "name": item.name, "metadata": item.metadata, "text": item.text}
                add(element, row, ts=item.ts)
    hours = sorted({item.hour for item in items} or {receipt})
    return parsed_cls(obj, kind, items, 0, False, None, receipt, hours, len(data), prefix_digest(data, len(data)))


def _judge(judge: ItemJudge, raw, tenant: str | None, topic: str):
    if isinstance(raw, dict) and "tenant" in raw:
        named = raw["tenant"]
        if named != tenant:
            return None, (f"tenant: the item names tenant {_short(named)}; topic {topic} is bound to tenant "
                          f"{tenant!r} (config/kafka.yaml)")
        raw = {k: v for k, v in raw.items() if k != "tenant"}
    return judge.judge(raw)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _shown(raw) -> str:
    text = json.dumps(raw, ensure_ascii=True)  # escapes NUL and lone surrogates
    return text if len(text) <= _RAW_CHARS else text[:_RAW_CHARS] + "..."
