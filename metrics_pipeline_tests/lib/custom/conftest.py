"""Fixtures of the push API's core: a configuration on a temporary landing zone, a writer on it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from metrics_pipeline.lib.custom.config import ApiConfig
from metrics_pipeline.lib.custom.landing import PushWriter

#: a fixed time of receipt for validation tests
NOW = datetime(2026, 1, 5, 13, 0, 0, 250_000, tzinfo=timezone.utc)


@pytest.fixture
def config(tmp_path) -> ApiConfig:
    return ApiConfig(landing=str(tmp_path / "landing"), spool_dir=str(tmp_path / "spool"))


@pytest.fixture
def writer(config) -> Iterator[PushWriter]:
    with PushWriter(config) as w:
        yield w
