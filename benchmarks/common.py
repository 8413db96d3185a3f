"""What every benchmark shares: a scratch database and the results table of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metrics_pipeline.lib import settings  # noqa: E402
from metrics_pipeline.lib.warehouse.embedded_pg import EmbeddedPostgres  # noqa: E402


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A fresh database `name` on METRICS_PIPELINE_DSN's server, or on an embedded PostgreSQL with
    durable settings (fsync on) under .metrics_pipeline/bench-pg; dropped (and stopped) afterwards."""
    server = None
    if os.environ.get(settings.DSN_ENV):
        admin = os.environ[settings.DSN_ENV]
    else:
        server = EmbeddedPostgres(settings.state_dir() / "bench-pg").start()
        admin = server.dsn("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield make_conninfo(admin, dbname=name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        if server is not None:
            server.stop()


def append_result(benchmark: str, data: str, ours: str, reference: str, ratio: str) -> None:
    """One row of the results table: date, benchmark, machine, data, ours, reference, ratio."""
    row = (
        f"| {datetime.now(timezone.utc):%Y-%m-%d} | {benchmark} | {os.cpu_count()} cores, {platform.machine()} | "
        f"{data} | {ours} | {reference} | {ratio} |\n"
    )
    with (ROOT / "docs" / "benchmarks.md").open("a", encoding="utf-8") as fh:
        fh.write(row)
    print("appended to docs/benchmarks.md")


def replace_section(name: str, text: str) -> None:
    """Put `text` between the `<!-- name:begin -->` and `<!-- name:end -->` markers of
    docs/benchmarks.md (a benchmark's latest detail table; the results table stays append-only)."""
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text(encoding="utf-8")
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in doc or end not in doc:
        raise ValueError(f"docs/benchmarks.md has no {begin} ... {end} section")
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{begin}\n{text.strip()}\n{end}{tail}", encoding="utf-8")
    print(f"updated the {name} section of docs/benchmarks.md")
