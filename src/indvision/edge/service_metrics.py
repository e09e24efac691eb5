"""What ``GET /metrics`` says, in the Prometheus text exposition format (version 0.0.4).

Requests and errors per endpoint and status, a latency histogram per endpoint, decisions per
class, and the model being served with its swaps and refusals. Counting is thread-safe (the
service answers from a thread pool) and costs a lock and a few additions per request.
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter, defaultdict
from typing import Any

#: Latency bucket upper bounds in seconds (Prometheus' ``le``).
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


def _labels(**labels: Any) -> str:
    def escape(value: Any) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"


class ServiceMetrics:
    """Counters and histograms of one service process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, int]] = Counter()
        self.decisions: Counter[str] = Counter()
        self.buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(BUCKETS) + 1))
        self.seconds: Counter[str] = Counter()

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(endpoint, status)] += 1
            self.buckets[endpoint][bisect.bisect_left(BUCKETS, seconds)] += 1
            self.seconds[endpoint] += seconds

    def decided(self, labels: list[str]) -> None:
        with self._lock:
            self.decisions.update(labels)

    def render(self, model: dict[str, Any], state: dict[str, Any]) -> str:
        """The exposition text; ``model`` labels the served bundle, ``state`` is the slot's
        swaps and refusals or the follower's :meth:`~indvision.edge.hotswap.Follower.state`."""
        swaps, refusals = state["swaps"], state["refusals"]
        with self._lock:
            lines = ["# HELP indvision_requests_total HTTP requests by endpoint and status.",
                     "# TYPE indvision_requests_total counter"]
            for (endpoint, status), count in sorted(self.requests.items()):
                labels = _labels(endpoint=endpoint, status=status)
                lines.append(f"indvision_requests_total{labels} {count}")
            lines += ["# HELP indvision_request_errors_total Requests answered 4xx or 5xx.",
                      "# TYPE indvision_request_errors_total counter"]
            errors: Counter[str] = Counter()
            for (endpoint, status), count in self.requests.items():
                if status >= 400:
                    errors[endpoint] += count
            for endpoint, count in sorted(errors.items()):
                lines.append(f"indvision_request_errors_total{_labels(endpoint=endpoint)} "
                             f"{count}")
            lines += ["# HELP indvision_request_seconds Request latency.",
                      "# TYPE indvision_request_seconds histogram"]
            for endpoint, counts in sorted(self.buckets.items()):
                running = 0
                for bound, count in zip([*BUCKETS, "+Inf"], counts, strict=True):
                    running += count
                    lines.append(f"indvision_request_seconds_bucket"
                                 f"{_labels(endpoint=endpoint, le=bound)} {running}")
                lines.append(f"indvision_request_seconds_sum{_labels(endpoint=endpoint)} "
                             f"{self.seconds[endpoint]:.6f}")
                lines.append(f"indvision_request_seconds_count{_labels(endpoint=endpoint)} "
                             f"{running}")
            lines += ["# HELP indvision_decisions_total Images (or objects) decided, by label.",
                      "# TYPE indvision_decisions_total counter"]
            for label, count in sorted(self.decisions.items()):
                lines.append(f"indvision_decisions_total{_labels(label=label)} {count}")
        lines += ["# HELP indvision_model_info The bundle being served.",
                  "# TYPE indvision_model_info gauge",
                  f"indvision_model_info{_labels(**model)} 1",
                  "# HELP indvision_model_swaps_total Bundles swapped in while serving.",
                  "# TYPE indvision_model_swaps_total counter",
                  f"indvision_model_swaps_total {swaps}",
                  "# HELP indvision_model_refusals_total New bundles refused (failed a check).",
                  "# TYPE indvision_model_refusals_total counter",
                  f"indvision_model_refusals_total {refusals}"]
        if "alive" in state:
            retry = state["retry_in"]
            lines += ["# HELP indvision_follower_alive Whether the latest.json follower runs.",
                      "# TYPE indvision_follower_alive gauge",
                      f"indvision_follower_alive {int(bool(state['alive']))}",
                      "# HELP indvision_follower_retry_seconds Seconds until a refused bundle "
                      "is tried again (-1: none waiting).",
                      "# TYPE indvision_follower_retry_seconds gauge",
                      f"indvision_follower_retry_seconds {-1 if retry is None else retry}"]
        return "\n".join(lines) + "\n"
