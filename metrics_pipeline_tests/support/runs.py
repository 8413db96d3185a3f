"""What a Dagster run left behind, read back for assertions."""

from __future__ import annotations


def _errors(event):
    if event.is_step_failure:
        return event.step_failure_data.error
    if event.event_type_value == "RESOURCE_INIT_FAILURE":  # e.g. the warehouse unreachable at set-up
        return getattr(event.event_specific_data, "error", None)
    return None


def failure_messages(result) -> list[str]:
    """Messages of what failed in a run (steps, and resources that could not be set up), with
    their causes, for asserting what a fault looked like."""
    out = []
    for event in result.all_events:
        error = _errors(event)
        while error is not None:
            out.append(error.message)
            error = error.cause or error.context
    return out
