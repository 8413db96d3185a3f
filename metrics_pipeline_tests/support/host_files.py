"""A reference reader of host landing files for tests: plain `json`, one line at a time, nothing shared
with `lib/host/batch.py`, so tests can check the loader against an independent decoding."""

from __future__ import annotations

import json

from metrics_pipeline.lib.host.compact import MAGIC


def decode_ticks(data: bytes) -> list[dict]:
    """The complete, valid ticks of one file of either format, as format-1 tick objects
    (`{"ts", "host", "samples": [[metric, value, unit, labels], ...]}`, plus `tenant` when named).
    The torn last line (no newline) is left out, as the loader leaves it."""
    lines = data.split(b"\n")[:-1]
    if not data.startswith(MAGIC):
        return [json.loads(line) for line in lines if line.strip()]
    if not lines:
        return []
    head = json.loads(lines[0])
    series, layouts, ticks = {}, {}, []
    for line in lines[1:]:
        record = json.loads(line)
        if record[0] == "s":
            series[record[1]] = record[2:]
        elif record[0] == "l":
            layouts[record[1]] = record[2]
        else:
            ts = (head["t0"] * 1000 + record[1]) / 1000
            samples = [[series[s][0], float(v), series[s][1], series[s][2]] for s, v in zip(layouts[record[0]], record[2:])]
            tick = {"ts": ts, "host": head["host"], **({"tenant": head["tenant"]} if "tenant" in head else {})}
            ticks.append({**tick, "samples": samples})
    return ticks
