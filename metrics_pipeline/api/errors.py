"""The API's refusals: a status, a sentence saying what to change, and headers (Retry-After)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Refusal(Exception):
    status: int
    detail: str
    headers: dict[str, str] | None = None
    errors: list[dict] | None = None
