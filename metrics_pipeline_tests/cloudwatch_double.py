"""What moto's CloudWatch lacks, added to the moto server this test process runs.

Requests still travel over HTTP from a real boto3 client through botocore's serialisation and
retry logic to moto's server; only the server side is extended:
* extended statistics (p50, p95, p99.9, ...): moto answers them with a 500; here they are computed
  from moto's stored datapoints (nearest-rank percentile, as CloudWatch documents for raw data);
* `MaxDatapoints` and `NextToken`: moto ignores both; here a response holding more datapoints
  than `MaxDatapoints` (or than `page_size`) is cut into pages chained by `NextToken`;
* injected faults: the next N GetMetricData requests answer with a given error code
  (`Throttling`, `InternalServiceFault`, ...), serialised by moto in the protocol the client speaks;
* a log of every GetMetricData request: queries per call, window, and the limits they respect.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import deque

_PERCENTILE = re.compile(r"^p(\d{1,2}(\.\d+)?)$")


class CloudWatchDouble:
    def __init__(self) -> None:
        self.faults: deque[str] = deque()
        self.page_size: int | None = None
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

        monkeypatch.setattr(models.Statistics, "get_statistics_for_type", get_statistics_for_type)
        monkeypatch.setattr(responses.CloudWatchResponse, "get_metric_data", get_metric_data)
        return self

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
        if rest:
            token = uuid.uuid4().hex
            self._pages[token] = rest
            response["NextToken"] = token
        return action_result(response)
