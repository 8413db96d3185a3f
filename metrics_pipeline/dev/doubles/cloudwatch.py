"""A local CloudWatch for tests, benchmarks and the demo: moto's server plus what moto lacks.

Requests still travel over HTTP from a real boto3 client through botocore's serialisation and
retry logic to moto's server; only the server side is extended:
* extended statistics (p50, p95, p99.9, ...): moto answers them with a 500; here they are computed
  from moto's stored datapoints (nearest-rank percentile, as CloudWatch documents for raw data);
* `MaxDatapoints` and `NextToken`: moto ignores both; here a response holding more datapoints
  than `MaxDatapoints` (or than `page_size`) is cut into pages chained by `NextToken`;
* injected faults: the next N GetMetricData requests answer with a given error code
  (`Throttling`, `InternalServiceFault`, ...), serialised by moto in the protocol the client speaks;
* a log of every GetMetricData request: queries per call, window, and the limits they respect;
* `indexed=True`: GetMetricData answered from an index of moto's datapoints and ListMetrics
  de-duplicated with a set (moto scans every stored datapoint for every query and period, and
  de-duplicates ListMetrics quadratically: minutes for a few thousand metrics).
* `synthetic=True` (implies indexed): every metric moto knows has a datapoint every minute of any
  window, a deterministic function of the metric and the minute (`synthetic_value`), so a backfill
  of weeks of hundreds of metrics needs one PutMetricData per metric, not millions of datapoints.

`LocalCloudWatch` runs it all on 127.0.0.1 (without werkzeug's line per request: errors still show),
for the benchmark; `demo_sources.start_cloudwatch_double()` seeds one with demo data for `make dev`,
the end-to-end test and the backfill benchmark. Tests use the session's moto server and
`install(monkeypatch)`.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import deque
from datetime import datetime, timezone

_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")


def _statistic(stat: str, values) -> float:
    if stat == "Average":
        return float(values.mean())
    if stat == "Sum":
        return float(values.sum())
    if stat == "Minimum":
        return float(values.min())
    if stat == "Maximum":
        return float(values.max())
    if stat == "SampleCount":
        return float(len(values))
    match = _PERCENTILE.match(stat)
    if match:
        ordered = sorted(values)
        return float(ordered[max(math.ceil(float(match.group(1)) / 100 * len(ordered)), 1) - 1])
    raise ValueError(f"the local CloudWatch does not compute {stat}")


def synthetic_value(key: tuple, ts):
    """The synthetic double's value of metric `key` at epoch seconds `ts` (a numpy array): a daily
    curve with a per-metric phase and level, 0-100 like a percentage."""
    import numpy as np

    seed = sum(map(ord, repr(sorted(map(str, key[2]))) + key[0] + key[1])) % 997
    daily = np.sin((ts / 86400.0 + seed / 997.0) * 2 * np.pi)
    return np.round(40.0 + 25.0 * daily + 10.0 * np.sin(ts / (300.0 + seed)) + seed % 17, 3)


def _statistics(stat: str, values, starts) -> list[float]:
    """`stat` of each run of `values` beginning at the indices `starts` (vectorised where it can be)."""
    import numpy as np

    if len(starts) == 0:
        return []
    if stat in ("Sum", "Average", "SampleCount"):
        counts = np.diff(np.append(starts, len(values)))
        if stat == "SampleCount":
            return counts.astype(float).tolist()
        sums = np.add.reduceat(values, starts)
        return (sums if stat == "Sum" else sums / counts).tolist()
    if stat == "Minimum":
        return np.minimum.reduceat(values, starts).tolist()
    if stat == "Maximum":
        return np.maximum.reduceat(values, starts).tolist()
    return [_statistic(stat, part) for part in np.split(values, starts[1:])]


class _Patcher:
    """monkeypatch.setattr for use outside pytest; `undo()` restores."""

    def __init__(self) -> None:
        self._saved: list = []

    def setattr(self, target, name, value) -> None:
        self._saved.append((target, name, getattr(target, name)))
        setattr(target, name, value)

    def undo(self) -> None:
        while self._saved:
            target, name, value = self._saved.pop()
            setattr(target, name, value)


def _without_access_log(handler_class: type) -> type:
    """`handler_class` (moto's werkzeug request handler) without the access log line per request
    (`127.0.0.1 - - [...] "POST / HTTP/1.1" 200 -`).

    Only the access log goes: a response with a 5xx status is still logged, and so are the
    tracebacks of requests that fail inside the server (werkzeug logs those as errors, apart)."""

    class QuietRequestHandler(handler_class):
        def log_request(self, code="-", size="-") -> None:
            if str(code).startswith("5"):
                super().log_request(code, size)

    return QuietRequestHandler


class LocalCloudWatch:
    """moto's server on 127.0.0.1 with the double installed; `stop()` shuts it down and unpatches.

    `access_log=True` keeps werkzeug's line per request (off by default: dozens at every `make dev` start)."""

    def __init__(self, indexed: bool = True, synthetic: bool = False, *, access_log: bool = False) -> None:
        from moto.server import ThreadedMotoServer

        self._patcher = _Patcher()
        self.double = CloudWatchDouble(indexed=indexed, synthetic=synthetic).install(self._patcher)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        if not access_log:
            # moto's WSGI server exists once start() returns, before anybody knows its port (no
            # request handled yet); socketserver builds each request's handler from this attribute.
            wsgi = self._server._server
            wsgi.RequestHandlerClass = _without_access_log(wsgi.RequestHandlerClass)
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"

    def stop(self) -> None:
        self._server.stop()
        self._patcher.undo()


class CloudWatchDouble:
    def __init__(self, indexed: bool = False, synthetic: bool = False) -> None:
        self.indexed = indexed or synthetic
        self.synthetic = synthetic
        self._index: tuple[int, dict] = (-1, {})
        self.faults: deque[str] = deque()
        self.page_size: int | None = None
        #: Cut results as CloudWatch may: the first page says PartialData and no NextToken follows.
        self.cut_results = False
        self.requests: list[dict] = []
        self._pages: dict[str, list[dict]] = {}

    def fail_next(self, code: str, times: int = 1) -> None:
        self.faults.extend([code] * times)

    def install(self, monkeypatch) -> CloudWatchDouble:
        from moto.cloudwatch import models, responses
        from moto.cloudwatch.exceptions import CloudWatchException
        from moto.core.responses import ActionResult

        double = self
        original_stat = models.Statistics.get_statistics_for_type

        def get_statistics_for_type(stats, stat):
            match = _PERCENTILE.match(stat)
            if not match:
                return original_stat(stats, stat)
            values = sorted(stats.metric_single_values_list)
            if not values:
                return None
            rank = math.ceil(float(match.group(1)) / 100 * len(values))
            return values[max(rank, 1) - 1]

        original_get = responses.CloudWatchResponse.get_metric_data

        def get_metric_data(handler):
            params = handler._get_params()
            double.requests.append({
                "queries": len(params.get("MetricDataQueries", [])),
                "start": params.get("StartTime"),
                "end": params.get("EndTime"),
                "next_token": params.get("NextToken"),
                "scan_by": params.get("ScanBy"),
            })
            if double.faults:
                code = double.faults.popleft()
                raise CloudWatchException(code, f"injected {code}")
            token = params.get("NextToken")
            if token:
                pages = double._pages.pop(token, None)
                if pages is None:
                    raise CloudWatchException("InvalidNextToken", "The NextToken is invalid or expired")
                return double._page(ActionResult, pages)
            result = original_get(handler)
            limit = min(filter(None, [params.get("MaxDatapoints") and int(params["MaxDatapoints"]), double.page_size]), default=None)
            if limit is None:
                return result
            return double._page(ActionResult, double._split(result.result["MetricDataResults"], limit))

        if self.indexed:
            original_backend = models.CloudWatchBackend.get_metric_data

            def backend_get_metric_data(backend, queries, start_time, end_time, scan_by="TimestampAscending"):
                if any("MetricStat" not in q for q in queries):
                    return original_backend(backend, queries, start_time, end_time, scan_by)
                return double._indexed_results(backend, queries, start_time, end_time, scan_by)

            def get_filtered_metrics(backend, metric_name, namespace, dimensions):
                # moto de-duplicates against a list (quadratic); a set of keys gives the same answer.
                seen, found = set(), []
                for md in backend.get_all_metrics():
                    key = (md.namespace, md.name, frozenset((d.name, d.value) for d in md.dimensions))
                    if key not in seen and md.filter(
                        namespace=namespace, name=metric_name, dimensions=dimensions, already_present_metrics=[]
                    ):
                        seen.add(key)
                        found.append(md)
                return found

            monkeypatch.setattr(models.CloudWatchBackend, "get_metric_data", backend_get_metric_data)
            monkeypatch.setattr(models.CloudWatchBackend, "get_filtered_metrics", get_filtered_metrics)
        monkeypatch.setattr(models.Statistics, "get_statistics_for_type", get_statistics_for_type)
        monkeypatch.setattr(responses.CloudWatchResponse, "get_metric_data", get_metric_data)
        return self

    def _indexed_results(self, backend, queries, start_time, end_time, scan_by):
        import numpy as np

        data = backend.metric_data
        if self._index[0] != len(data):
            grouped: dict = {}
            for md in data:
                if hasattr(md, "value"):
                    key = (md.namespace, md.name, frozenset((d.name, d.value) for d in md.dimensions))
                    grouped.setdefault(key, ([], []))
                    grouped[key][0].append(md.timestamp.timestamp())
                    grouped[key][1].append(float(md.value))
            self._index = (len(data), {k: (np.array(t), np.array(v)) for k, (t, v) in grouped.items()})
        index = self._index[1]
        start, end = start_time.timestamp(), end_time.timestamp()
        results = []
        for query in queries:
            stat = query["MetricStat"]
            metric = stat["Metric"]
            key = (metric["Namespace"], metric["MetricName"],
                   frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", [])))
            ts, values = index.get(key, (np.empty(0), np.empty(0)))
            if self.synthetic and key in index:
                ts = np.arange(math.ceil(start / 60) * 60, end, 60, dtype=float)
                values = synthetic_value(key, ts)
            keep = (ts >= start) & (ts < end)
            period = int(stat["Period"])
            buckets = ((ts[keep] - start) // period).astype(int)
            kept = values[keep]
            order = np.argsort(buckets, kind="stable")
            buckets, kept = buckets[order], kept[order]
            unique, first = np.unique(buckets, return_index=True)
            out_ts = [datetime.fromtimestamp(start + int(b) * period, tz=timezone.utc) for b in unique]
            out_values = _statistics(stat["Stat"], kept, first)
            if scan_by == "TimestampDescending":
                out_ts.reverse()
                out_values.reverse()
            if query.get("ReturnData", True):
                results.append({"id": query["Id"], "label": query.get("Label") or metric["MetricName"],
                                "values": out_values, "timestamps": out_ts, "status_code": "Complete"})
        return results

    @staticmethod
    def _split(results: list[dict], limit: int) -> list[list[dict]]:
        """Cut results into pages of at most `limit` datapoints in total, keeping order."""
        pages, current, room = [], [], limit
        for result in results:
            values, stamps = list(result["values"]), list(result["timestamps"])
            while True:
                take = min(room, len(values))
                current.append({**result, "values": values[:take], "timestamps": stamps[:take]})
                values, stamps, room = values[take:], stamps[take:], room - take
                if room == 0:
                    pages.append(current)
                    current, room = [], limit
                if not values:
                    break
        if current:
            pages.append(current)
        return pages or [[]]

    def _page(self, action_result, pages: list[list[dict]]):
        first, rest = pages[0], pages[1:]
        if rest:  # as CloudWatch does: more of these series follow on the next page
            first = [{**r, "status_code": "PartialData"} for r in first]
        response = {"MetricDataResults": first}
        if rest and self.cut_results:
            response["Messages"] = [{"Code": "MaxDatapointsExceeded", "Value": "results were cut"}]
        elif rest:
            token = uuid.uuid4().hex
            self._pages[token] = rest
            response["NextToken"] = token
        return action_result(response)
