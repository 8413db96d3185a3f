"""Every run executes its steps in one process.

A step of ours is a few SQL statements or one API pass; started in its own process (the default
multiprocess executor) it pays 2-4 s of interpreter and import time for well under a second of work,
which made Dagster overhead most of a backfill (docs/benchmarks.md, backfill). Parallelism comes
from runs instead: the queued run coordinator runs several at once (dagster.yaml) and backfill
policies give each run a range of partitions.
"""

import dagster as dg


@dg.definitions
def executor() -> dg.Definitions:
    return dg.Definitions(executor=dg.in_process_executor)
