"""A landed Kafka message's value, judged the same way for every format (SPEC §12).

Refused as a whole before any schema is looked at: a null value (a tombstone), an empty value, a
value over the size limit, bytes that are not UTF-8, text that is not JSON. What is left is a JSON
value the format's loader reads (`job_logs.py`, `lib/custom/kafka_items.py`). Every judgement depends
on the message alone, so a redelivered copy is judged as the first was.
"""

from __future__ import annotations

import json

from metrics_pipeline.lib.ingestion_logs.validate import _excerpt, _printable
from metrics_pipeline.lib.kafka.files import Message

#: the element a refusal of the whole message is recorded at
WHOLE_MESSAGE = -1


def message_problem(message: Message) -> str | None:
    """Why a message is refused before its JSON is read (None: read it)."""
    if message.value is None:
        return "null value (a tombstone)"
    if message.oversized:
        return f"message larger than the limit ({message.size} bytes)"
    if not message.value or message.value.isspace():  # isspace: no copy of the value
        return "empty message"
    return None


def decode(message: Message) -> tuple[object, str | None, str | None]:
    """(the message's JSON value, its text, why it has none)."""
    problem = message_problem(message)
    if problem:
        return None, None, problem
    try:
        text = message.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, None, f"not UTF-8 ({exc.reason} at byte {exc.start})"
    try:
        return json.loads(text), text, None
    except RecursionError:
        return None, text, "JSON nested too deeply"
    except ValueError as exc:
        return None, text, f"not JSON ({exc})"


def excerpt(message: Message) -> str:
    """The message's value as a quarantine row keeps it: printable, cut, oversized values marked."""
    if message.value is None:
        return ""
    return _excerpt(message.value, 0, len(message.value)) if not message.oversized else (
        _printable(message.value.decode("utf-8", "replace")) + f"... [{message.size - len(message.value)} more bytes]")
