"""Crash points of the Kafka consumer for exactly-once tests: `arm` makes the n-th passage through a
point of the consumer's cycle (read -> write the file -> commit -> record health) raise `Crash`, and the
consumer is then abandoned without flushing or committing, as `kill -9` would leave it."""

from __future__ import annotations

import itertools
import os

from metrics_pipeline.lib.kafka import health, writer
from metrics_pipeline.lib.kafka.consumer import KafkaIngest

POINTS = ("before-write", "before-commit", "after-commit", "mid-write")


class Crash(BaseException):
    """The process dies here (a BaseException: nothing in the consumer catches it)."""


def arm(monkeypatch, point: str, after: int) -> None:
    """Make the `after`-th passage through `point` (1-based) kill the consumer."""
    calls = itertools.count(1)

    def maybe_crash():
        if next(calls) == after:
            raise Crash(point)

    if point == "before-write":
        original = KafkaIngest._flush

        def flush(self, due, now):
            if any(b.count for b in due):
                maybe_crash()
            return original(self, due, now)
        monkeypatch.setattr(KafkaIngest, "_flush", flush)
    elif point == "mid-write":  # the temporary file is written and fsync'd, not yet linked to its name
        original_write_once = writer.files.write_once

        def write_once(root, path, data):
            maybe_crash_after = next(calls) == after
            if maybe_crash_after:
                import tempfile
                path.parent.mkdir(parents=True, exist_ok=True)
                fd, _ = tempfile.mkstemp(prefix=writer.files.TMP_FILE_PREFIX, dir=path.parent)
                os.write(fd, data[: len(data) // 2])
                os.close(fd)
                raise Crash(point)
            return original_write_once(root, path, data)
        monkeypatch.setattr(writer.files, "write_once", write_once)
    elif point == "before-commit":
        original = KafkaIngest._commit

        def commit(self, force=False, only=None):
            if self._to_commit:
                maybe_crash()
            return original(self, force, only)
        monkeypatch.setattr(KafkaIngest, "_commit", commit)
    elif point == "after-commit":
        original_record = health.record

        def record(warehouse, group_id, consumer, commits, **kwargs):
            if commits:  # a write right after a commit (not the periodic one before the group is joined:
                maybe_crash()  # Tansu never assigns a group whose member left before its first join completed)
            return original_record(warehouse, group_id, consumer, commits, **kwargs)
        monkeypatch.setattr(health, "record", record)
