"""Grafana's interpolation of PostgreSQL panel queries, reproduced so tests can run a dashboard's SQL.

A Grafana query goes through three substitutions before it reaches PostgreSQL, in this order:
1. the frontend replaces template variables (`$host`, `${host}`, `${host:sqlstring}`, `[[host]]`) with
   the SQL data source's `interpolateVariable`: a multi-value or include-All variable becomes a list of
   quoted literals (`'a','b'`), a single-value variable its value with `'` doubled and *no* quotes;
2. the backend replaces `$__interval`, `$__interval_ms`, `$__unixEpochFrom()`, `$__unixEpochTo()`
   (pkg/tsdb/.../sqleng/sql_engine.go `Interpolate`);
3. the PostgreSQL macro engine replaces `$__name(args)` (pkg/tsdb/grafana-postgresql-datasource/macros.go):
   `$__timeFilter(c)` -> `c BETWEEN '<from>' AND '<to>'` with RFC 3339 UTC times, `$__timeGroup(c, '5m')`
   -> `floor(extract(epoch from c)/300)*300`, and so on.

Only what Grafana does is reproduced; anything this module does not know (an unknown macro or
variable format, a leftover `$name`) raises, so a dashboard using it fails its test instead of being
silently half-checked.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta, timezone

# public/app/features/templating/template_srv.ts: variableRegex
_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}")
# macros.go: sExpr
_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNITS = {"ms": timedelta(milliseconds=1), "s": timedelta(seconds=1), "m": timedelta(minutes=1),
          "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1), "y": timedelta(days=365)}


@dataclasses.dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @classmethod
    def relative(cls, now: datetime, span: str) -> TimeRange:
        """`now-<span>` to `now`, as Grafana's time picker (and a panel's relative time) gives it."""
        return cls(now - parse_duration(span), now)


@dataclasses.dataclass(frozen=True)
class Variable:
    """A resolved template variable: its selected values, and whether it may hold several."""

    name: str
    values: tuple[str, ...]
    multi: bool = False
    include_all: bool = False

    @property
    def listy(self) -> bool:
        return self.multi or self.include_all


def parse_duration(text: str) -> timedelta:
    """Grafana's interval syntax (`5m`, `14d`, `1y`)."""
    match = _DURATION.match(text.strip().strip("'"))
    if not match:
        raise ValueError(f"not a Grafana interval: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def format_interval(interval: timedelta) -> str:
    """gtime.FormatInterval: the largest whole unit, `1h`, `30s`, `100ms`."""
    for suffix, unit in (("y", _UNITS["y"]), ("d", _UNITS["d"]), ("h", _UNITS["h"]), ("m", _UNITS["m"]),
                         ("s", _UNITS["s"]), ("ms", _UNITS["ms"])):
        if interval >= unit:
            return f"{interval // unit}{suffix}"
    return "1ms"


def rfc3339(ts: datetime) -> str:
    """Go's time.RFC3339Nano of a UTC time: fractional seconds without trailing zeros, `Z`."""
    ts = ts.astimezone(timezone.utc)
    text = ts.strftime("%Y-%m-%dT%H:%M:%S")
    if ts.microsecond:
        text += f".{ts.microsecond:06d}".rstrip("0")
    return text + "Z"


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _format(variable: Variable, fmt: str | None) -> str:
    values = variable.values
    if fmt is None:
        # SqlDatasource.interpolateVariable
        if variable.listy:
            return ",".join(_quote(v) for v in values)
        return values[0].replace("'", "''") if values else ""
    if fmt == "sqlstring":
        return ",".join(_quote(v) for v in values)
    if fmt in ("raw", "csv"):
        return ",".join(values)
    raise ValueError(f"variable format {fmt!r} of ${variable.name} is not reproduced by this test helper")


def replace_variables(sql: str, variables: dict[str, Variable]) -> str:
    """Step 1, the frontend's templateSrv.replace; names that are not variables stay as they are."""

    def sub(match: re.Match) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name not in variables:
            return match.group(0)  # a macro, or a panel-level name like ${__field.labels.host}
        if match.group(5):
            raise ValueError(f"field path in {match.group(0)!r} is not reproduced by this test helper")
        return _format(variables[name], fmt)

    return _VARIABLE.sub(sub, sql)


def _macro(name: str, args: list[str], time_range: TimeRange) -> str:
    start, end = rfc3339(time_range.start), rfc3339(time_range.end)
    if name in ("__time", "__timeEpoch", "__timeFilter", "__timeGroup", "__timeGroupAlias") and not args[0]:
        raise ValueError(f"missing time column argument for macro {name}")
    if name == "__time":
        return f'{args[0]} AS "time"'
    if name == "__timeEpoch":
        return f'extract(epoch from {args[0]}) as "time"'
    if name == "__timeFilter":
        return f"{args[0]} BETWEEN '{start}' AND '{end}'"
    if name == "__timeFrom":
        return f"'{start}'"
    if name == "__timeTo":
        return f"'{end}'"
    if name in ("__timeGroup", "__timeGroupAlias"):
        if len(args) < 2:
            raise ValueError(f"macro {name} needs time column and interval and optional fill value")
        seconds = parse_duration(args[1]).total_seconds()
        # Go's %v of a float64: shortest form, no exponent below 1e21
        text = str(int(seconds)) if seconds.is_integer() else repr(seconds)
        group = f"floor(extract(epoch from {args[0]})/{text})*{text}"
        return group + (' AS "time"' if name == "__timeGroupAlias" else "")
    if name == "__unixEpochFilter":
        return (f"{args[0]} >= {int(time_range.start.timestamp())} AND "
                f"{args[0]} <= {int(time_range.end.timestamp())}")
    raise ValueError(f"unknown macro {name!r}")


def replace_macros(sql: str, time_range: TimeRange, interval: timedelta) -> str:
    """Steps 2 and 3: the backend's global substitutions, then the PostgreSQL macro engine."""
    sql = sql.replace("$__interval_ms", str(int(interval / timedelta(milliseconds=1))))
    sql = sql.replace("$__interval", format_interval(interval))
    sql = sql.replace("$__unixEpochFrom()", str(int(time_range.start.timestamp())))
    sql = sql.replace("$__unixEpochTo()", str(int(time_range.end.timestamp())))

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name == "__timeGroup":
            # pre-5.3 compatibility: `$__timeGroup(...)` directly followed by a comma gets `AS "time"`
            index = sql.find(match.group(0)) + len(match.group(0))
            if index < len(sql) and sql[index] == ",":
                name = "__timeGroupAlias"
        return _macro(name, [a.strip(" ") for a in match.group(2).split(",")], time_range)

    return _MACRO.sub(sub, sql)


def interpolate(sql: str, time_range: TimeRange, variables: dict[str, Variable],
                interval: timedelta = timedelta(minutes=1)) -> str:
    """The SQL Grafana sends to PostgreSQL for a panel target or a variable query."""
    text = replace_macros(replace_variables(sql, variables), time_range, interval)
    leftover = re.search(r"\$\{|\$[A-Za-z_]|\[\[\w", text)
    if leftover:
        raise ValueError(f"uninterpolated {text[leftover.start():leftover.start() + 30]!r} in:\n{text}")
    return text
