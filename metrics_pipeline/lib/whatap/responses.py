"""Is an HTTP 200 answer data? WhaTap also answers errors with HTTP 200 (SPEC §2.2, docs/whatap.md).

Known: a bad MXQL query answers `[{"error": "<message>"}]` (verified live by WhaTap). Uncertain (the
reference lists it): bodies carrying `message` or `msg` instead of data; WhaTap's own client treats
them as errors. Decision: **an answer is data only if it has the shape the endpoint documents**.
Anything else fails the request with what WhaTap said, never becomes "no data": a run that fails
naming the cause can be re-run, an hour silently loaded empty cannot be told from a quiet hour.

* Object endpoints: the answer must carry one of the endpoint's data fields (`servers`, `data`, ...).
  Without one it is an error, quoting its `error` / `message` / `msg` (or listing its keys). A
  non-empty `error` is an error even beside data; `message` beside data is not (`"message":
  "success"` wrappers are common).
* MXQL (a flat array of rows): a row carrying a non-empty `error`, `err`, `errorMessage`,
  `error_message` or `msg`, at any position, is an error; so is a row carrying `message` without the
  `time` and `oid` every query of ours selects (`message` alone could be a column). `_head_` rows
  are metadata and dropped. An object instead of an array is an error.
* Not retried: the same request gets the same answer (Dagster's run retries still apply).
"""

from __future__ import annotations

ERROR_KEYS = ("error", "err", "errorMessage", "error_message", "msg")
MESSAGE_KEYS = (*ERROR_KEYS, "message")


def _said(obj: dict, keys=MESSAGE_KEYS) -> str | None:
    for key in keys:
        value = obj.get(key)
        if value not in (None, "", False, [], {}):
            return value if isinstance(value, str) else str(value)
    return None


def _keys(obj: dict) -> str:
    names = sorted(str(k) for k in obj)
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "none"


def problem(payload, expect: tuple[str, ...] | type) -> str | None:
    """Why `payload` is not the data an endpoint documents, or None when it is.

    Args:
        payload: the decoded body.
        expect: `list` for MXQL, else the object fields of which at least one holds the data.

    Returns:
        "returned an error: <what WhaTap said>" or "answered without data (<what it was>)".
    """
    if expect is list:
        if isinstance(payload, list):
            for row in payload:
                if not isinstance(row, dict) or "_head_" in row:
                    continue
                said = _said(row, ERROR_KEYS) or (_said(row, ("message",)) if not {"time", "oid"} & row.keys() else None)
                if said is not None:
                    return f"returned an error: {said}"
            return None
        if isinstance(payload, dict):
            said = _said(payload)
            return f"returned an error: {said}" if said else f"answered without data (an object with keys {_keys(payload)})"
        return f"answered without data ({type(payload).__name__} instead of a list of rows)"
    if not isinstance(payload, dict):
        if isinstance(payload, list) and payload and isinstance(payload[0], dict) and (said := _said(payload[0])):
            return f"returned an error: {said}"
        return f"answered without data ({'an empty body' if payload is None else type(payload).__name__})"
    said = _said(payload, ("error",))
    if said is not None:
        return f"returned an error: {said}"
    if not any(key in payload for key in expect):
        said = _said(payload)
        if said is not None:
            return f"returned an error: {said}"
        return f"answered without data (no {' or '.join(expect)}; keys: {_keys(payload)})"
    return None
