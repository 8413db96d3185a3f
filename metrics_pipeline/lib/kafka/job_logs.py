"""Job-log records from a Kafka landing file, for `ingestion_log_records` (SPEC §2.4, §2.6, §12).

`parse_file` turns a file (`files.py`) into the `ParsedFile` the ingestion loader takes from any
log file, so the records go through the same validation, natural-key upsert and quarantine. What
differs is where a record comes from: not (this file, a position) but (a message, an element of
it). `ParsedFile.origins` maps each record's position in the file to
`("kafka:<topic>/<partition>/<offset>", element)`, which the loader stores as `source_file` and
`source_position`, and by which it keeps one copy of a message delivered twice (SPEC §12: every
(topic, partition, offset) once in the warehouse, quarantine rows keyed by it).

A message is one record (a JSON object, element 0) or a batch (a JSON array, each element validated
on its own; an empty array is counted and skipped). Refused as a whole, at element -1: what
`messages.decode` refuses (a tombstone, an empty or oversized value, bytes that are not UTF-8 JSON),
and JSON that is neither an object nor an array.

Every judgement depends on the message alone, never on the file it was read from, so a second copy
is judged as the first was: records are judged against the minute of the message's own timestamp
(not the file's arrival), and a refused message that names no start belongs to the hour of its
timestamp.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone

from metrics_pipeline.lib.ingestion_logs.parse import ParsedFile
from metrics_pipeline.lib.ingestion_logs.validate import (
    ParseOptions,
    Rejected,
    _clip,
    _excerpt,
    _fast_row,
    _hour,
    _printable,
    validate,
    validate_detailed,
)
from metrics_pipeline.lib.kafka.files import DamagedFile, KafkaFile, Message, read_file
from metrics_pipeline.lib.kafka.messages import WHOLE_MESSAGE, decode
from metrics_pipeline.lib.kafka.messages import excerpt as _raw


@dataclasses.dataclass
class KafkaParsedFile(ParsedFile):
    """A `ParsedFile` whose refused records without a start belong to their message's hour."""

    message_hours: dict[int, datetime] = dataclasses.field(default_factory=dict)  # by position
    empty_batches: int = 0
    messages: int = 0

    def hours(self, fallback: datetime) -> dict[int, datetime]:
        out = {r["source_position"]: _hour(r["started_at"]) for r in self.accepted}
        for r in self.rejected:
            out[r.position] = _hour(r.started_at) if r.started_at is not None else self.message_hours.get(
                r.position, _hour(fallback))
        return out


def parse_file(data: bytes, key: str, options: ParseOptions) -> KafkaParsedFile:
    """Parse a Kafka job-log landing file; never raises on content."""
    try:
        landed = read_file(data)
    except DamagedFile as exc:
        return KafkaParsedFile(key, rejected=[Rejected(-1, _excerpt(data, 0, len(data)), f"damaged Kafka landing file: {exc}")])
    result = KafkaParsedFile(key, origins={})
    # Judged against the minute of the message's timestamp (a record may start up to a day after it):
    # the same for every copy of the message, and one ParseOptions per minute rather than per message.
    by_minute: dict[int, tuple[ParseOptions, datetime | None]] = {}
    for message in landed.messages:
        minute = message.timestamp_ms // 60_000 if message.timestamp_ms >= 0 else -1
        if minute not in by_minute:
            when = datetime.fromtimestamp(minute * 60, timezone.utc) if minute >= 0 else None
            by_minute[minute] = (dataclasses.replace(options, now=when), _hour(when)) if when else (options, None)
        _parse_message(landed, message, key, *by_minute[minute], result)
    return result


def _parse_message(landed: KafkaFile, message: Message, key: str, judged: ParseOptions, home: datetime | None,
                   result: KafkaParsedFile) -> None:
    result.messages += 1
    address = landed.address(message.offset)

    def add(element: int, outcome: dict | Rejected) -> None:
        position = len(result.origins)
        result.origins[position] = (address, element)
        if type(outcome) is dict:
            outcome["source_position"] = position
            result.accepted.append(outcome)
        else:
            outcome.position = position
            result.rejected.append(outcome)
            if home is not None:  # an accepted record's hour is its start's; a refused one may have none
                result.message_hours[position] = home

    value, text, problem = decode(message)
    if problem:
        add(WHOLE_MESSAGE, Rejected(0, _raw(message), problem))
        return
    if isinstance(value, dict):
        # The common case first; the message's own text is the raw of a refused record.
        row = _fast_row(value, 0, key, judged)
        add(0, row if row is not None else validate_detailed(value, 0, key, judged, raw=_clip(_printable(text))))
    elif isinstance(value, list):
        if not value:
            result.empty_batches += 1
        for element, record in enumerate(value):
            add(element, validate(record, element, key, judged))
    else:
        add(WHOLE_MESSAGE, Rejected(0, _raw(message),
                                    f"wrong shape: a JSON {type(value).__name__}, not an object or an array of them"))
