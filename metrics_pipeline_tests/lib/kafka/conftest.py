"""A Tansu broker per test (memory storage, 127.0.0.1, a free port), stopped by the test's end."""

from __future__ import annotations

import pytest

from metrics_pipeline_tests.support.kafka import TansuBroker


@pytest.fixture
def tansu(tmp_path):
    broker = TansuBroker(tmp_path / "tansu.log").start()
    try:
        yield broker
    finally:
        broker.stop()
